//! One pass of every model over the split, every candidate view included: the raw material of
//! every later decision, kept in memory so the searches never run a model again.
//!
//! Detections are kept at [`COLLECT_FLOOR`] and each model's own floor is applied afterwards
//! ([`crate::simulate`]). That gives exactly what the device computes at its floor: decoding
//! keeps anchors above the floor, and greedy NMS only ever suppresses a box with a higher-scoring
//! one, so a box above the floor survives the same way with or without the boxes below it (and
//! `max_det` keeps the highest scores either way).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::ProgressBar;
use trident_core::dataset::ImageTruth;
use trident_core::postprocess::{Detection, NmsOptions};
use trident_infer::OnnxDetector;
use trident_infer::detector::View;

use crate::config::ViewSpec;
use crate::error::{Error, Result};

/// Floor of the collection pass (the floor of Ultralytics' validation).
pub const COLLECT_FLOOR: f32 = 0.001;

/// A model to calibrate: what the edge runtime's ensemble would load.
pub struct CalibModel {
    pub name: String,
    /// SHA-256 of its ONNX file: the tables are tied to it.
    pub sha256: String,
    /// The confidence floor the device applies before fusion (the card's `conf_floor`).
    pub floor: f32,
    pub detector: OnnxDetector,
}

/// An image of the split and its ground truth.
#[derive(Clone, Debug)]
pub struct SplitImage {
    pub path: PathBuf,
    pub truth: ImageTruth,
}

#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub sha256: String,
    pub floor: f32,
    /// The backend it ran on.
    pub backend: String,
}

/// Everything the models said about the split.
#[derive(Clone, Debug)]
pub struct Collected {
    pub names: Vec<String>,
    pub truths: Vec<ImageTruth>,
    pub models: Vec<ModelInfo>,
    /// Index 0 is the plain view; the rest are the TTA candidates in config order.
    pub views: Vec<ViewSpec>,
    /// `dets[model][image][view]`: frame-pixel detections at [`COLLECT_FLOOR`] after the
    /// model's NMS, highest score first.
    pub dets: Vec<Vec<Vec<Vec<Detection>>>>,
    /// `seconds[model][view]`: mean seconds of one pass (letterbox, model, decode, NMS).
    pub seconds: Vec<Vec<f64>>,
}

/// The NMS every model of the ensemble decodes with, at `floor` (the runtime's settings).
pub fn member_nms(floor: f32) -> NmsOptions {
    NmsOptions::inference(floor)
}

/// Runs every model (one thread each, as on the device) over every image and view.
pub fn collect(
    names: &[String],
    models: Vec<CalibModel>,
    images: &[SplitImage],
    candidates: &[ViewSpec],
    progress: &ProgressBar,
) -> Result<Collected> {
    let plain = ViewSpec {
        flip: false,
        scale: 1.0,
    };
    let views: Vec<ViewSpec> = std::iter::once(plain)
        .chain(candidates.iter().copied())
        .collect();
    progress.set_length((models.len() * images.len()) as u64);
    let infos: Vec<ModelInfo> = models
        .iter()
        .map(|m| ModelInfo {
            name: m.name.clone(),
            sha256: m.sha256.clone(),
            floor: m.floor,
            backend: m.detector.backend().kind().to_string(),
        })
        .collect();
    let failed = AtomicBool::new(false);
    let results: Vec<Result<Option<ModelPass>>> = std::thread::scope(|s| {
        let handles: Vec<_> = models
            .into_iter()
            .map(|m| {
                let (views, failed) = (&views, &failed);
                s.spawn(move || run_model(m, images, views, progress, failed))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a calibration model thread panicked"))
            })
            .collect()
    });
    // The model that failed reports; the others only stopped early.
    let passes: Vec<Option<ModelPass>> = results.into_iter().collect::<Result<_>>()?;
    let mut dets = Vec::new();
    let mut seconds = Vec::new();
    for (d, s) in passes.into_iter().map(|p| p.expect("no model failed")) {
        dets.push(d);
        seconds.push(s);
    }
    Ok(Collected {
        names: names.to_vec(),
        truths: images.iter().map(|i| i.truth.clone()).collect(),
        models: infos,
        views,
        dets,
        seconds,
    })
}

type ModelPass = (Vec<Vec<Vec<Detection>>>, Vec<f64>);

fn run_model(
    mut m: CalibModel,
    images: &[SplitImage],
    views: &[ViewSpec],
    progress: &ProgressBar,
    failed: &AtomicBool,
) -> Result<Option<ModelPass>> {
    let nms = member_nms(COLLECT_FLOOR);
    let mut total = vec![0.0f64; views.len()];
    let mut per_image = Vec::with_capacity(images.len());
    for img in images {
        if failed.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut run = || -> Result<Vec<Vec<Detection>>> {
            let rgb = image::open(&img.path)
                .map_err(|e| {
                    Error::input(
                        img.path.display().to_string(),
                        format!("cannot decode image: {e}"),
                    )
                })?
                .into_rgb8();
            let (w, h) = rgb.dimensions();
            let mut out = Vec::with_capacity(views.len());
            for (v, spec) in views.iter().enumerate() {
                let view = View {
                    flip: spec.flip,
                    scale: spec.scale,
                };
                let t = Instant::now();
                let d = m.detector.detect_view(rgb.as_raw(), w, h, &nms, view)?;
                total[v] += t.elapsed().as_secs_f64();
                out.push(d);
            }
            Ok(out)
        };
        match run() {
            Ok(d) => per_image.push(d),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(match e {
                    Error::Infer(source) => Error::ModelRun {
                        model: m.name.clone(),
                        image: img.path.display().to_string(),
                        source: Box::new(source),
                    },
                    other => other,
                });
            }
        }
        progress.inc(1);
    }
    let n = images.len().max(1) as f64;
    Ok(Some((
        per_image,
        total.into_iter().map(|s| s / n).collect(),
    )))
}
