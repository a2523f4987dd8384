//! `trident eval`.

use std::process::ExitCode;

use anyhow::Context;
use trident_core::dataset::DatasetConfig;
use trident_core::prediction::load_predictions;
use trident_data::truth::load_ground_truth;
use trident_eval::{Evaluation, evaluate, match_predictions, plots::write_plots};

use crate::cli::EvalArgs;
use crate::ui::{progress, table};

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let ds = DatasetConfig::load(&a.data)?;
    let bar = progress("labels");
    let truths = load_ground_truth(&ds, a.split, &bar)
        .with_context(|| format!("loading the {} split of {}", a.split, a.data.display()))?;
    bar.finish_and_clear();
    let preds = load_predictions(&a.predictions)?;
    let index = match_predictions(
        &a.predictions.display().to_string(),
        &truths,
        &preds,
        ds.num_classes(),
    )?;
    let start = std::time::Instant::now();
    let ev = evaluate(&truths, &preds, &index, &ds.names)?;
    tracing::info!(
        "evaluated {} predictions on {} images in {:.3} s",
        preds.len(),
        truths.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(dir) = &a.plots {
        for p in write_plots(&ev, dir)? {
            tracing::info!("wrote {}", p.display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&ev)?);
    } else {
        print!("{}", render(&ev));
        if let Some(dir) = &a.plots {
            println!("plots: {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn render(ev: &Evaluation) -> String {
    let f = |v: f64| format!("{v:.3}");
    let ap = |v: Option<f64>| v.map(f).unwrap_or_else(|| "-".into());
    let mut rows = vec![vec![
        "all".into(),
        ev.images.to_string(),
        ev.instances.to_string(),
        ev.predictions.to_string(),
        f(ev.precision),
        f(ev.recall),
        f(ev.f1),
        f(ev.map50),
        f(ev.map50_95),
    ]];
    for c in &ev.per_class {
        rows.push(vec![
            c.name.clone(),
            String::new(),
            c.instances.to_string(),
            c.predictions.to_string(),
            f(c.precision),
            f(c.recall),
            f(c.f1),
            ap(c.ap50),
            ap(c.ap50_95),
        ]);
    }
    let mut out = table(
        &[
            "class",
            "images",
            "instances",
            "preds",
            "P",
            "R",
            "F1",
            "mAP50",
            "mAP50-95",
        ],
        &rows,
    );
    out.push_str(&format!(
        "P, R and F1 at the best-F1 confidence {:.3} (IoU 0.5); mAP as COCO (IoU .50:.05:.95, 101-point, 100 detections per image and class)\n",
        ev.best_f1_conf
    ));
    out
}
