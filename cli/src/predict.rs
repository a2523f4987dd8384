//! `trident predict`.

use std::process::ExitCode;

use anyhow::Context;
use trident_core::postprocess::NmsOptions;
use trident_core::prediction::{Prediction, save_predictions};
use trident_trainer::predict::Predictor;
use trident_trainer::train::select_device;

use crate::cli::PredictArgs;
use crate::ui::progress;

pub fn run(a: PredictArgs) -> anyhow::Result<ExitCode> {
    let Some(checkpoint) = &a.checkpoint else {
        return run_ensemble(&a);
    };
    let device = select_device(&a.device)?;
    let predictor = Predictor::load(checkpoint, device)?;
    let conf = a.conf.unwrap_or(predictor.meta.conf_floor);
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

/// `--models` or `--package`: the edge runtime's ensemble over a folder of images, with the
/// calibration tables the device would apply.
fn run_ensemble(a: &PredictArgs) -> anyhow::Result<ExitCode> {
    use crate::cli::FuseMethod;
    use trident_infer::deployment::{Deployment, EnsembleStart, ModelsFrom, TablesChoice};
    use trident_infer::ensemble::fusion::{ConfType, Fusion, NmsFusionOptions, WbfOptions};

    let from = match (&a.models, &a.package) {
        (_, Some(p)) => ModelsFrom::Package(p),
        (Some(d), None) => ModelsFrom::Dir(d),
        (None, None) => unreachable!("clap requires --checkpoint, --models or --package"),
    };
    let tables = match (&a.calibration, a.no_calibration) {
        (Some(p), _) => TablesChoice::File(p),
        (None, true) => TablesChoice::Off,
        (None, false) => TablesChoice::Auto,
    };
    let deployment = Deployment::load(from, tables)?;
    let order = a.backend.clone();
    let fusion = match a.fusion {
        FuseMethod::Wbf => Fusion::Wbf(WbfOptions {
            iou_thr: a.fusion_iou,
            conf_type: ConfType::Avg,
            clip_unit: false,
            ..WbfOptions::default()
        }),
        FuseMethod::Nms => Fusion::Nms(NmsFusionOptions {
            iou_thr: a.fusion_iou,
            clip_unit: false,
            ..NmsFusionOptions::default()
        }),
    };
    let start = EnsembleStart {
        order: &order,
        order_from: "--backend",
        backend: Default::default(),
        fusion,
    };
    let mut ensemble = deployment.ensemble(&start, None)?;
    if a.tta && !ensemble.has_tta() {
        tracing::warn!("--tta: no calibration tables with TTA views are applied; running without");
    }
    ensemble.nms = NmsOptions {
        iou: a.iou,
        max_det: a.max_det,
        ..ensemble.nms
    };
    if let Some(c) = a.conf {
        for m in &mut ensemble.members {
            m.floor = c;
        }
    }
    let images = trident_trainer::predict::list_source(&a.source)?;
    let bar = progress("predict");
    bar.set_length(images.len() as u64);
    let mut preds = Vec::new();
    let mut skipped = 0usize;
    for path in &images {
        bar.inc(1);
        let img = match image::open(path) {
            Ok(i) => i.into_rgb8(),
            Err(e) => {
                tracing::warn!("skipped {}: cannot decode image: {e}", path.display());
                skipped += 1;
                continue;
            }
        };
        let out = ensemble
            .detect(img.as_raw(), img.width(), img.height(), None, a.tta)
            .with_context(|| format!("{}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        preds.extend(out.fused.iter().map(|d| Prediction {
            image: stem.clone(),
            class: d.class,
            score: f64::from(d.score),
            bbox: d.bbox.to_xywh().to_array(),
        }));
    }
    bar.finish_and_clear();
    save_predictions(&a.out, &preds)?;
    let members: Vec<String> = ensemble
        .members
        .iter()
        .map(|m| format!("{} ({})", m.name, m.backend))
        .collect();
    let fusion = match &deployment.tables {
        Some((t, p)) => format!(
            "{} fusion from {}{}",
            match ensemble.fusion {
                Fusion::Wbf(_) => "wbf",
                Fusion::Nms(_) => "nms",
            },
            p.display(),
            if a.tta {
                format!(", {} TTA views", t.tta.len())
            } else {
                String::new()
            }
        ),
        None => format!("{} fusion", a.fusion.name()),
    };
    println!(
        "{} detections on {} images by the ensemble of {} ({fusion}){} → {}",
        preds.len(),
        images.len() - skipped,
        members.join(", "),
        if skipped > 0 {
            format!(", {skipped} unreadable images skipped")
        } else {
            String::new()
        },
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
