//! The fitting itself, in the order each step needs the previous one: temperatures (each model
//! alone), fusion (on calibrated scores), test-time views (with the chosen fusion), thresholds
//! (on the fused, calibrated score without TTA, the runtime's default mode).

use std::collections::BTreeMap;

use rayon::prelude::*;
use trident_core::calibration::{
    CalibrationTables, ConfType, FusionMethod, FusionTable, ModelCalibration, SCHEMA,
};
use trident_infer::ensemble::fusion::Fusion;

use crate::collect::Collected;
use crate::config::CalibrateConfig;
use crate::error::Result;
use crate::metrics::{
    Bar, Coverage, EnsembleMetrics, FusionCandidate, FusionMetrics, Metrics, ModelMetrics,
};
use crate::scoring::{Judged, best_threshold, dece, fit_temperature, judge, match_image, nll};
use crate::simulate::Temperatures;
use crate::tta::select_tta;

/// The bar of the issue: the calibrated WBF ensemble should beat the best single model by this.
pub const REQUIRED_MARGIN: f64 = 0.01;

/// Fits the tables on collected detections; `fitted_on` goes into the tables as is.
pub fn fit(
    c: &Collected,
    config: &CalibrateConfig,
    fitted_on: BTreeMap<String, String>,
) -> Result<(CalibrationTables, Metrics)> {
    let nc = c.names.len();
    let mut models = Vec::new();
    let mut temps: Vec<Temperatures> = Vec::new();
    for m in 0..c.models.len() {
        let (mm, t) = fit_model(c, m, config)?;
        models.push(mm);
        temps.push(Some(t));
    }
    let variants: Vec<String> = c.models.iter().map(|m| m.name.clone()).collect();

    // Fusion: every candidate on the calibrated plain views.
    let grid = fusion_grid(config, &variants);
    let scored: Vec<Result<FusionCandidate>> = grid
        .par_iter()
        .map(|table| {
            let fusion = Fusion::from_table(table, &variants);
            let ev = c.evaluate("fusion", &c.ensemble_split(&[], &temps, &fusion, None)?)?;
            Ok(FusionCandidate::new(
                table,
                &variants,
                ev.map50,
                ev.map50_95,
            ))
        })
        .collect();
    let candidates: Vec<FusionCandidate> = scored.into_iter().collect::<Result<_>>()?;
    let best_of = |method: Option<FusionMethod>| {
        // Highest mAP50-95, then mAP50; the earlier (simpler) candidate on ties.
        (0..candidates.len())
            .filter(|&k| method.is_none_or(|m| candidates[k].table.method == m))
            .fold(None::<usize>, |b, k| match b {
                Some(b)
                    if (candidates[b].map50_95, candidates[b].map50)
                        >= (candidates[k].map50_95, candidates[k].map50) =>
                {
                    Some(b)
                }
                _ => Some(k),
            })
    };
    let chosen = best_of(None).expect("the grid is never empty");
    let table = candidates[chosen].table.clone();
    let fusion = Fusion::from_table(&table, &variants);

    // Before calibration: the same fusion on raw scores.
    let raw: Vec<Temperatures> = vec![None; c.models.len()];
    let raw_split = c.ensemble_split(&[], &raw, &fusion, None)?;
    let calibrated = c.ensemble_split(&[], &temps, &fusion, None)?;
    let raw_ev = c.evaluate("ensemble", &raw_split)?;
    let ens_ev = c.evaluate("ensemble", &calibrated)?;
    let judged_raw = judge(&raw_split, &c.truths, config.match_iou);
    let judged_cal = judge(&calibrated, &c.truths, config.match_iou);
    let (ens_dece_before, _) = dece(&judged_raw, config.dece_bins, |_| 1.0);
    let (ens_dece_after, _) = dece(&judged_cal, config.dece_bins, |_| 1.0);

    // Thresholds on the fused, calibrated scores.
    let instances = class_instances(c);
    let mut thresholds = Vec::new();
    for (k, name) in c.names.iter().enumerate() {
        let beta = config
            .thresholds
            .class_beta
            .get(name)
            .copied()
            .unwrap_or(config.thresholds.beta);
        let samples: Vec<Judged> = judged_cal
            .iter()
            .filter(|j| j.class == k)
            .copied()
            .collect();
        if let Some(t) = best_threshold(name, &samples, instances[k], beta) {
            thresholds.push(t);
        }
    }
    let cut: Vec<f32> = (0..nc)
        .map(|k| {
            thresholds
                .iter()
                .find(|t| t.class == c.names[k])
                .map_or(0.0, |t| t.threshold)
        })
        .collect();
    let kept = c.ensemble_split(&[], &temps, &fusion, Some(&cut))?;
    let judged_kept = judge(&kept, &c.truths, config.match_iou);
    let tp = judged_kept.iter().filter(|j| j.tp).count();
    let total_instances: usize = instances.iter().sum();

    let tta = select_tta(c, config, &temps, &fusion)?;
    let coverage = coverage(c, config.match_iou);

    let best_single = (0..models.len())
        .max_by(|&a, &b| models[a].map50_95.total_cmp(&models[b].map50_95))
        .expect("at least one model");
    let wbf = best_of(Some(FusionMethod::Wbf)).map(|k| &candidates[k]);
    let bar = Bar::judge(
        &models[best_single],
        wbf,
        c.models.len(),
        &coverage,
        REQUIRED_MARGIN,
    );

    let mut tables = CalibrationTables {
        schema: SCHEMA.into(),
        names: c.names.clone(),
        models: models
            .iter()
            .zip(&c.models)
            .map(|(mm, info)| ModelCalibration {
                variant: info.name.clone(),
                sha256: info.sha256.clone(),
                temperature: mm.temperature,
                class_temperatures: mm.class_temperatures.clone(),
            })
            .collect(),
        fusion: table,
        thresholds: thresholds
            .iter()
            .filter(|t| t.threshold > 0.0)
            .map(|t| (t.class.clone(), t.threshold))
            .collect(),
        tta: tta.kept.clone(),
        fitted_on,
    };
    tables
        .fitted_on
        .insert("images".into(), c.images().to_string());
    let (best_wbf, best_nms) = (
        best_of(Some(FusionMethod::Wbf)),
        best_of(Some(FusionMethod::Nms)),
    );
    let metrics = Metrics {
        images: c.images(),
        instances: total_instances,
        names: c.names.clone(),
        models,
        fusion: FusionMetrics {
            candidates,
            chosen,
            best_wbf,
            best_nms,
        },
        ensemble: EnsembleMetrics {
            raw_map50: raw_ev.map50,
            raw_map50_95: raw_ev.map50_95,
            map50: ens_ev.map50,
            map50_95: ens_ev.map50_95,
            dece_before: ens_dece_before,
            dece_after: ens_dece_after,
            precision_at_thresholds: if judged_kept.is_empty() {
                0.0
            } else {
                tp as f64 / judged_kept.len() as f64
            },
            recall_at_thresholds: tp as f64 / total_instances.max(1) as f64,
            curves: ens_ev.curves.clone(),
        },
        thresholds,
        tta,
        coverage,
        bar,
    };
    Ok((tables, metrics))
}

/// Ground-truth objects per class.
fn class_instances(c: &Collected) -> Vec<usize> {
    let mut n = vec![0; c.names.len()];
    for t in &c.truths {
        for (k, _) in &t.boxes {
            n[*k] += 1;
        }
    }
    n
}

/// Temperatures of one model: one for all classes, per class where the data allow and it
/// helps; never worse than none by D-ECE.
fn fit_model(
    c: &Collected,
    m: usize,
    config: &CalibrateConfig,
) -> Result<(ModelMetrics, Vec<f32>)> {
    let nc = c.names.len();
    let split = c.model_split(m, &[], None);
    let samples = judge(&split, &c.truths, config.match_iou);
    let bins = config.dece_bins;
    let (dece_before, reliability_before) = dece(&samples, bins, |_| 1.0);
    let global = fit_temperature(&samples);
    let (dece_global, _) = dece(&samples, bins, |_| global);
    let mut notes = Vec::new();
    let mut per_class: Option<Vec<f32>> = None;
    let mut best = if dece_global <= dece_before {
        (vec![global; nc], dece_global)
    } else {
        notes.push(format!(
            "T = {global} lowered the NLL but raised D-ECE ({dece_before:.4} → {dece_global:.4}); kept T = 1"
        ));
        (vec![1.0; nc], dece_before)
    };
    if config.temperature.per_class && nc > 1 {
        let min = config.temperature.min_per_class;
        let ts: Vec<f32> = (0..nc)
            .map(|k| {
                let s: Vec<Judged> = samples.iter().filter(|j| j.class == k).copied().collect();
                let tp = s.iter().filter(|j| j.tp).count();
                if tp >= min && s.len() - tp >= min {
                    fit_temperature(&s)
                } else {
                    best.0[k]
                }
            })
            .collect();
        if ts != best.0 {
            let (d, _) = dece(&samples, bins, |k| ts[k]);
            if d < best.1 {
                best = (ts.clone(), d);
                per_class = Some(ts);
            } else {
                notes.push(format!(
                    "per-class temperatures gave D-ECE {d:.4}, no better than {:.4}; one temperature kept",
                    best.1
                ));
            }
        }
    }
    let temps = best.0.clone();
    let (dece_after, reliability_after) = dece(&samples, bins, |k| temps[k]);
    let nll_after = {
        let sum: f64 = (0..nc)
            .map(|k| {
                let s: Vec<Judged> = samples.iter().filter(|j| j.class == k).copied().collect();
                nll(&s, temps[k]) * s.len() as f64
            })
            .sum();
        sum / samples.len().max(1) as f64
    };
    let ev = c.evaluate(&c.models[m].name, &split)?;
    let low: Vec<_> = (0..c.images()).map(|i| c.dets[m][i][0].clone()).collect();
    let ev_low = c.evaluate(&c.models[m].name, &low)?;
    let info = &c.models[m];
    let temperature = if per_class.is_some() { 1.0 } else { temps[0] };
    Ok((
        ModelMetrics {
            variant: info.name.clone(),
            sha256: info.sha256.clone(),
            backend: info.backend.clone(),
            floor: info.floor,
            detections: samples.len(),
            matched: samples.iter().filter(|j| j.tp).count(),
            map50: ev.map50,
            map50_95: ev.map50_95,
            map50_95_low_floor: ev_low.map50_95,
            temperature,
            class_temperatures: per_class,
            nll_before: nll(&samples, 1.0),
            nll_after,
            dece_before,
            dece_after,
            reliability_before,
            reliability_after,
            notes,
            seconds_per_view: c.seconds[m].clone(),
            curves: ev.curves,
        },
        temps,
    ))
}

/// Every fusion the config asks to try, weights bound to `variants` (ensemble order).
fn fusion_grid(config: &CalibrateConfig, variants: &[String]) -> Vec<FusionTable> {
    let f = &config.fusion;
    let mut grid = Vec::new();
    for &method in &f.methods {
        let (conf_types, skips) = match method {
            FusionMethod::Wbf => (f.conf_type.clone(), f.skip_box_thr.clone()),
            // NMS has neither; one candidate per IoU and weights.
            FusionMethod::Nms => (vec![ConfType::Avg], vec![0.0]),
        };
        for &iou_thr in &f.iou_thr {
            for w in f.weight_grid(variants.len()) {
                for &conf_type in &conf_types {
                    for &skip_box_thr in &skips {
                        grid.push(FusionTable {
                            method,
                            iou_thr,
                            skip_box_thr,
                            conf_type,
                            weights: variants.iter().cloned().zip(w.iter().copied()).collect(),
                        });
                    }
                }
            }
        }
    }
    grid
}

/// Which objects each model finds at its floor on the plain view (IoU `iou`).
fn coverage(c: &Collected, iou: f64) -> Coverage {
    let total: usize = c.truths.iter().map(|t| t.boxes.len()).sum();
    let mut found = vec![0usize; c.models.len()];
    let (mut union, mut all) = (0usize, 0usize);
    for (i, truth) in c.truths.iter().enumerate() {
        let per_model: Vec<Vec<bool>> = (0..c.models.len())
            .map(|m| match_image(&c.model_output(m, i, &[], None), truth, iou).1)
            .collect();
        for g in 0..truth.boxes.len() {
            let hits = per_model.iter().filter(|f| f[g]).count();
            union += usize::from(hits > 0);
            all += usize::from(hits == c.models.len());
        }
        for (m, f) in per_model.iter().enumerate() {
            found[m] += f.iter().filter(|&&x| x).count();
        }
    }
    let frac = |n: usize| n as f64 / total.max(1) as f64;
    Coverage {
        per_model: found.into_iter().map(frac).collect(),
        union: frac(union),
        all: frac(all),
    }
}
