//! `trident calibrate`.

use std::process::ExitCode;

use trident_calibration::config::CalibrateConfig;
use trident_calibration::metrics::describe;
use trident_calibration::{CalibrateRequest, calibrate};

use crate::cli::CalibrateArgs;
use crate::ui::{progress, table};

pub fn run(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let (config, config_origin) = match &a.config {
        Some(p) => (CalibrateConfig::load(p)?, p.display().to_string()),
        None => (CalibrateConfig::default(), "the default config".into()),
    };
    let backends = a.backend.clone();
    let req = CalibrateRequest {
        models: a.models,
        data: a.data,
        split: a.split,
        out: a.out,
        config,
        config_origin,
        backends,
        max_images: a.max_images,
        force: a.force,
    };
    let bar = progress("calibrate");
    let outcome = calibrate(&req, &bar)?;
    bar.finish_and_clear();
    let m = &outcome.metrics;
    let f = |v: f64| format!("{v:.4}");
    let mut rows: Vec<Vec<String>> = m
        .models
        .iter()
        .map(|mm| {
            vec![
                mm.variant.clone(),
                f(mm.map50),
                f(mm.map50_95),
                match &mm.class_temperatures {
                    Some(ts) => ts
                        .iter()
                        .map(|t| format!("{t}"))
                        .collect::<Vec<_>>()
                        .join("/"),
                    None => format!("{}", mm.temperature),
                },
                format!("{} → {}", f(mm.dece_before), f(mm.dece_after)),
            ]
        })
        .collect();
    let chosen = &m.fusion.candidates[m.fusion.chosen];
    rows.push(vec![
        format!("ensemble ({})", describe(chosen)),
        f(m.ensemble.map50),
        f(m.ensemble.map50_95),
        String::new(),
        format!(
            "{} → {}",
            f(m.ensemble.dece_before),
            f(m.ensemble.dece_after)
        ),
    ]);
    print!(
        "{}",
        table(
            &["model", "mAP50", "mAP50-95", "T", "D-ECE before → after"],
            &rows
        )
    );
    let bar_line = match (m.bar.ensemble_wbf_map50_95, m.bar.margin) {
        (Some(e), Some(d)) => format!(
            "calibrated WBF ensemble {e:.4} vs best single {} {:.4}: {d:+.4} (bar +{:.2}: {})",
            m.bar.best_single,
            m.bar.best_single_map50_95,
            m.bar.required,
            if m.bar.met {
                "met"
            } else {
                "not met, see the report"
            }
        ),
        _ => format!("bar: {}", m.bar.explanation.clone().unwrap_or_default()),
    };
    println!("{bar_line}");
    let tta = if outcome.tables.tta.is_empty() {
        "none".to_string()
    } else {
        outcome
            .tables
            .tta
            .iter()
            .map(|t| format!("{} ({:+.4}, ×{:.2})", t.label(), t.gain, t.cost))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let thresholds = outcome
        .tables
        .thresholds
        .iter()
        .map(|(c, t)| format!("{c} {t:.3}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("TTA kept: {tta}; thresholds: {thresholds}");
    println!(
        "wrote {} ({}) on {} images",
        outcome.out.display(),
        outcome.files.join(", "),
        m.images
    );
    Ok(ExitCode::SUCCESS)
}
