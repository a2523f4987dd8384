//! Validation during training and tch inference for `trident predict`.
//!
//! Both go through the runtime's path: the shared letterbox, the `[batch, 4 + nc, N]` output
//! contract and the shared decoder/NMS, then boxes mapped back to source pixels.

use indicatif::ProgressBar;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};
use trident_core::dataset::{DatasetConfig, ImageTruth, Split};
use trident_core::letterbox::{Letterbox, LetterboxPlan};
use trident_core::postprocess::{NmsOptions, decode};
use trident_core::prediction::Prediction;
use trident_eval::Evaluation;

use crate::data::{keep_loaded, load_sample};
use crate::error::{Error, Result};
use crate::model::Detector;

/// One validation image: ground truth, letterbox geometry and 8-bit CHW input.
type ValImage = (ImageTruth, Letterbox, Vec<u8>);

/// A validation split, letterboxed once to the model input and kept as bytes.
pub struct ValSet {
    pub size: u32,
    pub truths: Vec<ImageTruth>,
    letterboxes: Vec<Letterbox>,
    /// CHW, rounded to 8 bits (≤ 0.5/255 from the float letterbox; keeps memory at 3·size² bytes
    /// per image whatever the source resolution).
    inputs: Vec<Vec<u8>>,
    pub skipped: Vec<String>,
}

impl ValSet {
    pub fn load(
        ds: &DatasetConfig,
        split: Split,
        size: u32,
        strict: bool,
        progress: &ProgressBar,
    ) -> Result<Self> {
        let entries = ds.list_images(split)?;
        trident_data::truth::check_unique_stems(&entries)?;
        progress.set_length(entries.len() as u64);
        let loaded: Vec<std::result::Result<ValImage, Vec<String>>> = entries
            .par_iter()
            .map(|e| {
                let s = load_sample(e, ds.num_classes(), None)?;
                let plan = LetterboxPlan::new(s.image.width, s.image.height, size, size);
                let mut chw = vec![0f32; (3 * size * size) as usize];
                plan.run(&s.image.pixels, &mut chw);
                progress.inc(1);
                let truth = ImageTruth {
                    stem: s.stem,
                    width: s.image.width,
                    height: s.image.height,
                    boxes: s.boxes.iter().map(|(c, b)| (*c, b.to_xywh())).collect(),
                };
                let bytes = chw.iter().map(|v| (v * 255.0).round() as u8).collect();
                Ok((truth, plan.geometry, bytes))
            })
            .collect();
        let (images, skipped) = keep_loaded(loaded, strict, split, "validation")?;
        let mut set = ValSet {
            size,
            truths: Vec::with_capacity(images.len()),
            letterboxes: Vec::with_capacity(images.len()),
            inputs: Vec::with_capacity(images.len()),
            skipped,
        };
        for (t, l, i) in images {
            set.truths.push(t);
            set.letterboxes.push(l);
            set.inputs.push(i);
        }
        if set.truths.iter().all(|t| t.boxes.is_empty()) {
            return Err(Error::Dataset(format!(
                "{}: split `{split}` has no labelled objects to validate against",
                ds.yaml_path.display()
            )));
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.truths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.truths.is_empty()
    }

    /// Runs the model over the split and evaluates (COCO mAP, best-F1 point).
    pub fn evaluate(
        &self,
        model: &Detector,
        device: Device,
        batch: usize,
        names: &[String],
    ) -> Result<(Evaluation, Vec<Prediction>)> {
        let plane = (3 * self.size * self.size) as usize;
        let mut preds = Vec::new();
        let opts = NmsOptions::validation();
        for start in (0..self.len()).step_by(batch.max(1)) {
            let end = (start + batch).min(self.len());
            let mut buf = vec![0f32; (end - start) * plane];
            for (k, input) in self.inputs[start..end].iter().enumerate() {
                for (d, &v) in buf[k * plane..(k + 1) * plane].iter_mut().zip(input) {
                    *d = f32::from(v) / 255.0;
                }
            }
            let s = i64::from(self.size);
            let x = Tensor::from_slice(&buf)
                .view([(end - start) as i64, 3, s, s])
                .to_device(device);
            let out = tch::no_grad(|| model.predict(&x));
            let stems: Vec<&str> = self.truths[start..end]
                .iter()
                .map(|t| t.stem.as_str())
                .collect();
            preds.extend(decode_batch(
                &out,
                &stems,
                &self.letterboxes[start..end],
                &opts,
            )?);
        }
        let index =
            trident_eval::match_predictions("validation", &self.truths, &preds, names.len())?;
        let ev = trident_eval::evaluate(&self.truths, &preds, &index, names)?;
        Ok((ev, preds))
    }
}

/// Decodes a `[B, 4 + nc, N]` output into predictions in source pixels, one image per stem.
pub fn decode_batch(
    out: &Tensor,
    stems: &[&str],
    letterboxes: &[Letterbox],
    opts: &NmsOptions,
) -> Result<Vec<Prediction>> {
    let size = out.size();
    let (b, rows, n) = (size[0] as usize, size[1] as usize, size[2] as usize);
    let values: Vec<f32> = Vec::try_from(
        out.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view(-1),
    )?;
    let per_image = rows * n;
    let preds: Vec<Vec<Prediction>> = (0..b)
        .into_par_iter()
        .map(|i| {
            decode(
                &values[i * per_image..(i + 1) * per_image],
                rows - 4,
                n,
                opts,
            )
            .into_iter()
            .filter_map(|d| {
                let bx = letterboxes[i].to_source(&d.bbox).to_xywh();
                (bx.w > 0.0 && bx.h > 0.0).then(|| Prediction {
                    image: stems[i].to_string(),
                    class: d.class,
                    score: f64::from(d.score),
                    bbox: bx.to_array(),
                })
            })
            .collect()
        })
        .collect();
    Ok(preds.into_iter().flatten().collect())
}
