//! `trident predict`.

use std::process::ExitCode;

use anyhow::Context;
use trident_core::postprocess::NmsOptions;
use trident_core::prediction::save_predictions;
use trident_trainer::predict::Predictor;
use trident_trainer::train::select_device;

use crate::cli::PredictArgs;
use crate::ui::progress;

pub fn run(a: PredictArgs) -> anyhow::Result<ExitCode> {
    let device = select_device(&a.device)?;
    let predictor = Predictor::load(&a.checkpoint, device)?;
    let conf = a.conf.unwrap_or(predictor.meta.conf_floor);
    if !(0.0..=1.0).contains(&conf) {
        anyhow::bail!("--conf {conf}: expected a value in [0, 1]");
    }
    let opts = NmsOptions {
        conf,
        iou: a.iou,
        max_det: a.max_det,
        ..NmsOptions::inference(conf)
    };
    let bar = progress("predict");
    let (preds, summary) = predictor
        .predict_source(&a.source, &opts, a.batch, &bar)
        .with_context(|| format!("predicting {}", a.source.display()))?;
    bar.finish_and_clear();
    save_predictions(&a.out, &preds)?;
    println!(
        "{} detections on {} images (conf ≥ {conf}{}) → {}",
        summary.detections,
        summary.images,
        if summary.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable images skipped", summary.skipped.len())
        },
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
