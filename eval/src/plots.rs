//! PR and F1–confidence curves as PNG.

use std::path::{Path, PathBuf};

use trident_plot::{Chart, Series, line_chart};

use crate::error::Result;
use crate::metrics::Evaluation;
use crate::recall_thresholds;

/// Writes `pr_curve.png` and `f1_curve.png` into `dir`; returns their paths.
pub fn write_plots(ev: &Evaluation, dir: &Path) -> Result<Vec<PathBuf>> {
    let c = &ev.curves;
    let recall = recall_thresholds();
    let mut pr: Vec<Series> = Vec::new();
    for (m, curve) in ev.per_class.iter().zip(&c.pr50) {
        if let Some(p) = curve {
            pr.push(Series {
                name: format!("{} {:.3}", m.name, m.ap50.unwrap_or(0.0)),
                points: recall.iter().copied().zip(p.iter().copied()).collect(),
                emphasis: false,
            });
        }
    }
    let valid: Vec<&Vec<f64>> = c.pr50.iter().flatten().collect();
    pr.push(Series {
        name: format!("all classes {:.3} mAP@0.5", ev.map50),
        points: (0..recall.len())
            .map(|i| {
                (
                    recall[i],
                    valid.iter().map(|p| p[i]).sum::<f64>() / valid.len() as f64,
                )
            })
            .collect(),
        emphasis: true,
    });
    let pr_path = dir.join("pr_curve.png");
    let unit = (0.0, 1.0);
    line_chart(
        &pr_path,
        &Chart {
            title: "Precision–recall (IoU 0.5)",
            x_label: "recall",
            y_label: "precision",
            x_range: unit,
            y_range: (0.0, 1.05),
        },
        &pr,
    )?;

    let mut f1: Vec<Series> = Vec::new();
    let with_gt: Vec<usize> = ev
        .per_class
        .iter()
        .filter(|m| m.instances > 0)
        .map(|m| m.class)
        .collect();
    for &k in &with_gt {
        f1.push(Series {
            name: ev.per_class[k].name.clone(),
            points: c
                .conf
                .iter()
                .copied()
                .zip(c.f1[k].iter().copied())
                .collect(),
            emphasis: false,
        });
    }
    f1.push(Series {
        name: format!("all classes {:.2} at {:.3}", ev.f1, ev.best_f1_conf),
        points: (0..c.conf.len())
            .map(|i| {
                (
                    c.conf[i],
                    with_gt.iter().map(|&k| c.f1[k][i]).sum::<f64>() / with_gt.len() as f64,
                )
            })
            .collect(),
        emphasis: true,
    });
    let f1_path = dir.join("f1_curve.png");
    line_chart(
        &f1_path,
        &Chart {
            title: "F1–confidence (IoU 0.5)",
            x_label: "confidence",
            y_label: "F1",
            x_range: unit,
            y_range: (0.0, 1.05),
        },
        &f1,
    )?;
    Ok(vec![pr_path, f1_path])
}
