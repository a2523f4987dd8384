//! Which test-time views pay for themselves: every combination of the candidates is scored per
//! model and for the ensemble, then views are added greedily by ensemble mAP50-95 gain while the
//! gain exceeds `tta.min_gain`. Each kept view records its marginal gain and the latency
//! multiplier of the ensemble with it and the views before it (what the governor budgets for).

use rayon::prelude::*;
use trident_core::calibration::TtaTransform;
use trident_infer::ensemble::fusion::Fusion;

use crate::collect::Collected;
use crate::config::CalibrateConfig;
use crate::error::Result;
use crate::metrics::{TtaMetrics, TtaSubset};
use crate::simulate::Temperatures;

/// Latency multiplier of the ensemble running `views` besides the plain one, from the measured
/// seconds of every pass.
pub fn cost(c: &Collected, views: &[usize]) -> f64 {
    let plain: f64 = c.seconds.iter().map(|s| s[0]).sum();
    let with: f64 = c
        .seconds
        .iter()
        .map(|s| s[0] + views.iter().map(|&v| s[v]).sum::<f64>())
        .sum();
    if plain > 0.0 {
        with / plain
    } else {
        1.0 + views.len() as f64
    }
}

fn views_of(mask: usize, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| b + 1)
        .collect()
}

pub fn select_tta(
    c: &Collected,
    config: &CalibrateConfig,
    temps: &[Temperatures],
    fusion: &Fusion,
) -> Result<TtaMetrics> {
    let n = c.views.len() - 1;
    let label = |v: usize| c.views[v].label();
    let subsets: Vec<Result<TtaSubset>> = (0..1usize << n)
        .into_par_iter()
        .map(|mask| {
            let views = views_of(mask, n);
            let models = (0..c.models.len())
                .map(|m| Ok(c.evaluate("tta", &c.model_split(m, &views, None))?.map50_95))
                .collect::<Result<Vec<f64>>>()?;
            let ensemble = c
                .evaluate("tta", &c.ensemble_split(&views, temps, fusion, None)?)?
                .map50_95;
            Ok(TtaSubset {
                views: views.iter().map(|&v| label(v)).collect(),
                cost: cost(c, &views),
                models,
                ensemble,
            })
        })
        .collect();
    let subsets: Vec<TtaSubset> = subsets.into_iter().collect::<Result<_>>()?;
    let plain = subsets[0].ensemble;

    // Greedy forward selection on the ensemble's mAP50-95.
    let (mut mask, mut order, mut kept) = (0usize, Vec::new(), Vec::new());
    let mut current = plain;
    loop {
        let best = (0..n)
            .filter(|b| mask & (1 << b) == 0)
            .map(|b| (b, subsets[mask | (1 << b)].ensemble))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((b, value)) = best else { break };
        let gain = value - current;
        if gain <= config.tta.min_gain {
            break;
        }
        mask |= 1 << b;
        order.push(b + 1);
        current = value;
        let spec = c.views[b + 1];
        kept.push(TtaTransform {
            flip: spec.flip,
            scale: spec.scale,
            gain: (gain * 10_000.0).round() / 10_000.0,
            cost: (cost(c, &order) * 1000.0).round() / 1000.0,
        });
    }
    // The kept views in the order the tables list them (the device merges them in that order).
    let with_kept = if order.is_empty() {
        plain
    } else {
        c.evaluate("tta", &c.ensemble_split(&order, temps, fusion, None)?)?
            .map50_95
    };
    Ok(TtaMetrics {
        candidates: (1..=n).map(label).collect(),
        min_gain: config.tta.min_gain,
        subsets,
        kept,
        ensemble_plain: plain,
        ensemble_with_kept: with_kept,
    })
}
