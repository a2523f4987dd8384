//! The report's pictures: reliability diagrams (before/after temperature scaling, per model and
//! for the fused scores) and precision–recall curves (per model and the ensemble, per class).

use std::path::Path;

use trident_eval::{Curves, recall_thresholds};
use trident_plot::{Chart, Series, chart_grid};

use crate::error::Result;
use crate::metrics::Metrics;
use crate::scoring::ReliabilityBin;

pub const RELIABILITY: &str = "reliability.png";
pub const PR_CURVES: &str = "pr_curves.png";

fn reliability_series(name: String, bins: &[ReliabilityBin], emphasis: bool) -> Series {
    Series {
        name,
        points: bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.confidence, b.precision))
            .collect(),
        emphasis,
    }
}

/// One panel per model: precision against mean confidence per bin, before and after, with the
/// diagonal of perfect calibration.
pub fn reliability(path: &Path, m: &Metrics) -> Result<()> {
    let titles: Vec<String> = m
        .models
        .iter()
        .map(|mm| format!("{} (T = {})", mm.variant, temperature_label(mm)))
        .collect();
    let panels: Vec<(Chart<'_>, Vec<Series>)> = m
        .models
        .iter()
        .zip(&titles)
        .map(|(mm, title)| {
            (
                Chart {
                    title,
                    x_label: "confidence",
                    y_label: "precision (IoU 0.5)",
                    x_range: (0.0, 1.0),
                    y_range: (0.0, 1.05),
                },
                vec![
                    Series {
                        name: "perfect calibration".into(),
                        points: vec![(0.0, 0.0), (1.0, 1.0)],
                        emphasis: false,
                    },
                    reliability_series(
                        format!("before, D-ECE {:.4}", mm.dece_before),
                        &mm.reliability_before,
                        false,
                    ),
                    reliability_series(
                        format!("after, D-ECE {:.4}", mm.dece_after),
                        &mm.reliability_after,
                        true,
                    ),
                ],
            )
        })
        .collect();
    Ok(chart_grid(path, panels.len().min(3), &panels)?)
}

fn temperature_label(mm: &crate::metrics::ModelMetrics) -> String {
    match &mm.class_temperatures {
        Some(ts) => ts
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join("/"),
        None => format!("{:.3}", mm.temperature),
    }
}

/// Mean precision over the classes that have a curve, at each recall threshold.
fn mean_pr(curves: &Curves) -> Option<Vec<f64>> {
    let valid: Vec<&Vec<f64>> = curves.pr50.iter().flatten().collect();
    (!valid.is_empty()).then(|| {
        (0..recall_thresholds().len())
            .map(|i| valid.iter().map(|p| p[i]).sum::<f64>() / valid.len() as f64)
            .collect()
    })
}

/// One panel for all classes (mean precision) and one per class; in each, a curve per model
/// and the ensemble's.
pub fn pr_curves(path: &Path, m: &Metrics) -> Result<()> {
    let recall = recall_thresholds();
    let mut entries: Vec<(String, &Curves, bool)> = m
        .models
        .iter()
        .map(|mm| (mm.variant.clone(), &mm.curves, false))
        .collect();
    entries.push(("ensemble".into(), &m.ensemble.curves, true));
    let curve = |name: &str, p: &[f64], emphasis| Series {
        name: name.to_string(),
        points: recall.iter().copied().zip(p.iter().copied()).collect(),
        emphasis,
    };
    let mut titles = vec!["all classes (IoU 0.5)".to_string()];
    titles.extend(m.names.iter().map(|n| format!("{n} (IoU 0.5)")));
    let mut panels = Vec::new();
    for (k, title) in titles.iter().enumerate() {
        let series: Vec<Series> = entries
            .iter()
            .filter_map(|(name, curves, emphasis)| {
                let p = if k == 0 {
                    mean_pr(curves)
                } else {
                    curves.pr50.get(k - 1).cloned().flatten()
                };
                p.map(|p| curve(name, &p, *emphasis))
            })
            .collect();
        panels.push((
            Chart {
                title,
                x_label: "recall",
                y_label: "precision",
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.05),
            },
            series,
        ));
    }
    Ok(chart_grid(path, panels.len().min(2), &panels)?)
}
