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
    let device = select_device(&a.run.device)?;
    let predictor = Predictor::load(checkpoint, device)?;
    let conf = a.conf.unwrap_or(predictor.meta.conf_floor);
    let opts = NmsOptions {
        conf,
        iou: a.run.iou,
        max_det: a.run.max_det,
        ..NmsOptions::inference(conf)
    };
    let bar = progress("predict");
    let (preds, summary) = predictor
        .predict_source(&a.source, &opts, a.run.batch, &bar)
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
    use trident_infer::deployment::{Deployment, ModelsFrom, TablesChoice};

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
    let settings = EnsembleSettings {
        backend: &a.run.backend,
        fusion: a.fusion,
        fusion_iou: a.fusion_iou,
        iou: a.run.iou,
        max_det: a.run.max_det,
        conf: a.conf,
        tta: a.tta,
    };
    let mut ensemble = start_ensemble(&deployment, &settings)?;
    let images = trident_trainer::predict::list_source(&a.source)?;
    let bar = progress("predict");
    let (preds, skipped) = ensemble_predictions(&mut ensemble, &images, a.tta, &bar)?;
    bar.finish_and_clear();
    save_predictions(&a.out, &preds)?;
    println!(
        "{} detections on {} images by {}{} → {}",
        preds.len(),
        images.len() - skipped,
        describe_ensemble(&deployment, &ensemble, &settings),
        if skipped > 0 {
            format!(", {skipped} unreadable images skipped")
        } else {
            String::new()
        },
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// How `predict` and `val` run an ensemble.
pub(crate) struct EnsembleSettings<'a> {
    pub backend: &'a [trident_infer::BackendKind],
    pub fusion: crate::cli::FuseMethod,
    pub fusion_iou: f64,
    pub iou: f32,
    pub max_det: usize,
    /// Every member's confidence floor (default: each model's).
    pub conf: Option<f32>,
    pub tta: bool,
}

/// The ensemble of `deployment`, started as the runtime starts it and calibrated by its tables.
pub(crate) fn start_ensemble(
    deployment: &trident_infer::deployment::Deployment,
    s: &EnsembleSettings<'_>,
) -> anyhow::Result<trident_infer::ensemble::runner::Ensemble> {
    use crate::cli::FuseMethod;
    use trident_infer::deployment::EnsembleStart;
    use trident_infer::ensemble::fusion::{ConfType, Fusion, NmsFusionOptions, WbfOptions};

    let fusion = match s.fusion {
        FuseMethod::Wbf => Fusion::Wbf(WbfOptions {
            iou_thr: s.fusion_iou,
            conf_type: ConfType::Avg,
            clip_unit: false,
            ..WbfOptions::default()
        }),
        FuseMethod::Nms => Fusion::Nms(NmsFusionOptions {
            iou_thr: s.fusion_iou,
            clip_unit: false,
            ..NmsFusionOptions::default()
        }),
    };
    let start = EnsembleStart {
        order: s.backend,
        order_from: "--backend",
        backend: Default::default(),
        fusion,
    };
    let mut ensemble = deployment.ensemble(&start, None)?;
    if s.tta && !ensemble.has_tta() {
        tracing::warn!("--tta: no calibration tables with TTA views are applied; running without");
    }
    ensemble.nms = NmsOptions {
        iou: s.iou,
        max_det: s.max_det,
        ..ensemble.nms
    };
    if let Some(c) = s.conf {
        for m in &mut ensemble.members {
            m.floor = c;
        }
    }
    Ok(ensemble)
}

/// The fused detections of every image, keyed by file stem; unreadable images are skipped
/// (and counted).
pub(crate) fn ensemble_predictions(
    ensemble: &mut trident_infer::ensemble::runner::Ensemble,
    images: &[std::path::PathBuf],
    tta: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<Prediction>, usize)> {
    bar.set_length(images.len() as u64);
    let mut preds = Vec::new();
    let mut skipped = 0usize;
    for path in images {
        bar.inc(1);
        let Some(img) = decode_or_skip(path) else {
            skipped += 1;
            continue;
        };
        let out = ensemble
            .detect(img.as_raw(), img.width(), img.height(), None, tta)
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
    Ok((preds, skipped))
}

/// "the ensemble of a (tract), b (tract) (wbf fusion from …)".
pub(crate) fn describe_ensemble(
    deployment: &trident_infer::deployment::Deployment,
    ensemble: &trident_infer::ensemble::runner::Ensemble,
    s: &EnsembleSettings<'_>,
) -> String {
    use trident_infer::ensemble::fusion::Fusion;
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
            if s.tta {
                format!(", {} TTA views", t.tta.len())
            } else {
                String::new()
            }
        ),
        None => format!("{} fusion", s.fusion.name()),
    };
    format!("the ensemble of {} ({fusion})", members.join(", "))
}

/// The image as RGB, or `None` (with a warning) when it does not decode: one bad frame in a
/// folder is skipped and counted, not fatal.
pub(crate) fn decode_or_skip(path: &std::path::Path) -> Option<image::RgbImage> {
    match image::open(path) {
        Ok(i) => Some(i.into_rgb8()),
        Err(e) => {
            tracing::warn!("skipped {}: cannot decode image: {e}", path.display());
            None
        }
    }
}
