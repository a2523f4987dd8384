//! `trident predict` through tch: a checkpoint's deployable weights over a folder of images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;
use tch::{Device, Tensor, nn};
use trident_core::letterbox::{Letterbox, LetterboxPlan};
use trident_core::postprocess::NmsOptions;
use trident_core::prediction::Prediction;

use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::error::{Error, Result};
use crate::model::Detector;
use crate::validate::decode_batch;

/// An image ready for the model: its stem, letterbox geometry and CHW input.
type Prepared = (String, Letterbox, Vec<f32>);

pub struct Predictor {
    pub meta: CheckpointMeta,
    pub device: Device,
    _vs: nn::VarStore,
    model: Detector,
}

/// What a prediction run saw.
#[derive(Debug, Default)]
pub struct PredictSummary {
    pub images: usize,
    pub detections: usize,
    /// Unreadable images, `path: reason`.
    pub skipped: Vec<String>,
}

impl Predictor {
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let ck = Checkpoint::open(path)?;
        let vs = nn::VarStore::new(device);
        let model = Detector::new(&vs.root(), &ck.meta.spec);
        ck.restore("", &vs.variables())?;
        Ok(Predictor {
            meta: ck.meta,
            device,
            _vs: vs,
            model,
        })
    }

    /// The model's output contract `[B, 4 + nc, N]` for a CHW float batch.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.model.predict(&x.to_device(self.device)))
    }

    /// Raw `[1, 4 + nc, N]` outputs, one per CHW input of side `side`, run in batches: the
    /// reference the exporter compares ONNX runtimes against.
    pub fn raw_outputs(
        &self,
        inputs: &[Vec<f32>],
        side: u32,
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let s = i64::from(side);
        let mut outputs = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(batch.max(1)) {
            let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
            let x = Tensor::from_slice(&flat).view([chunk.len() as i64, 3, s, s]);
            let y = self
                .forward(&x)
                .to_device(Device::Cpu)
                .to_kind(tch::Kind::Float)
                .contiguous();
            let values = Vec::<f32>::try_from(y.view(-1))?;
            let per = values.len() / chunk.len();
            outputs.extend(values.chunks(per).map(<[f32]>::to_vec));
        }
        Ok(outputs)
    }

    /// Predicts every image under `source` (a folder, searched recursively, or one image).
    pub fn predict_source(
        &self,
        source: &Path,
        opts: &NmsOptions,
        batch: usize,
        progress: &ProgressBar,
    ) -> Result<(Vec<Prediction>, PredictSummary)> {
        self.predict_images(&list_source(source)?, opts, batch, progress)
    }

    /// Predicts these images (a dataset split's, say), keyed by file stem.
    pub fn predict_images(
        &self,
        images: &[PathBuf],
        opts: &NmsOptions,
        batch: usize,
        progress: &ProgressBar,
    ) -> Result<(Vec<Prediction>, PredictSummary)> {
        let size = self.meta.spec.input_size;
        let plane = (3 * size * size) as usize;
        progress.set_length(images.len() as u64);
        let mut summary = PredictSummary::default();
        let mut preds = Vec::new();
        for chunk in images.chunks(batch.max(1)) {
            let loaded: Vec<std::result::Result<Prepared, String>> = chunk
                .par_iter()
                .map(|p| {
                    let img = image::open(p)
                        .map_err(|e| format!("{}: cannot decode image: {e}", p.display()))?
                        .into_rgb8();
                    let plan = LetterboxPlan::new(img.width(), img.height(), size, size);
                    let mut chw = vec![0f32; plane];
                    plan.run(img.as_raw(), &mut chw);
                    Ok((stem(p), plan.geometry, chw))
                })
                .collect();
            let mut stems = Vec::new();
            let mut boxes = Vec::new();
            let mut buf = Vec::with_capacity(chunk.len() * plane);
            for r in loaded {
                match r {
                    Ok((s, l, chw)) => {
                        stems.push(s);
                        boxes.push(l);
                        buf.extend_from_slice(&chw);
                    }
                    Err(e) => {
                        tracing::warn!("skipped {e}");
                        summary.skipped.push(e);
                    }
                }
            }
            progress.inc(chunk.len() as u64);
            if stems.is_empty() {
                continue;
            }
            let s = i64::from(size);
            let x = Tensor::from_slice(&buf).view([stems.len() as i64, 3, s, s]);
            let out = self.forward(&x);
            let stem_refs: Vec<&str> = stems.iter().map(String::as_str).collect();
            preds.extend(decode_batch(&out, &stem_refs, &boxes, opts)?);
            summary.images += stems.len();
        }
        summary.detections = preds.len();
        Ok((preds, summary))
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Images under `source`, sorted; stems must be unique (prediction files key images by stem).
pub fn list_source(source: &Path) -> Result<Vec<PathBuf>> {
    let mut images = Vec::new();
    if source.is_dir() {
        trident_core::dataset::collect_images(source, &mut images)?;
    } else if source.is_file() {
        images.push(source.to_path_buf());
    } else {
        return Err(Error::Dataset(format!(
            "--source {}: no such file or folder",
            source.display()
        )));
    }
    images.sort();
    if images.is_empty() {
        return Err(Error::Dataset(format!(
            "--source {}: no images (jpg, jpeg, png, bmp)",
            source.display()
        )));
    }
    let mut seen: HashMap<String, &PathBuf> = HashMap::new();
    for p in &images {
        if let Some(prev) = seen.insert(stem(p), p) {
            return Err(Error::Dataset(format!(
                "{} and {} share the file stem `{}`; prediction files key images by stem",
                prev.display(),
                p.display(),
                stem(p)
            )));
        }
    }
    Ok(images)
}
