//! The device's ensemble, replayed on collected detections: each model's floor, its test-time
//! views merged through its NMS, its temperatures, the fusion, the per-class thresholds — the
//! same steps in the same order as `trident_infer::ensemble::runner::Ensemble::detect`, calling
//! the same fusion and NMS code (a test checks the two agree box for box).

use trident_core::calibration::apply_temperature;
use trident_core::postprocess::{Detection, nms};
use trident_core::prediction::Prediction;
use trident_eval::{Evaluation, evaluate, match_predictions};
use trident_infer::ensemble::fusion::Fusion;

use crate::collect::{Collected, member_nms};
use crate::error::Result;

/// Per-model calibration as the runtime applies it: per-class temperatures, or none.
pub type Temperatures = Option<Vec<f32>>;

impl Collected {
    pub fn images(&self) -> usize {
        self.truths.len()
    }

    /// What model `m` hands to fusion for image `i` with the extra `views` (indices into
    /// [`Collected::views`], in the order the tables list them): detections above its floor,
    /// views merged through its NMS, scores through its temperatures.
    pub fn model_output(
        &self,
        m: usize,
        i: usize,
        views: &[usize],
        temps: Option<&[f32]>,
    ) -> Vec<Detection> {
        let floor = self.models[m].floor;
        let above = |v: usize| {
            self.dets[m][i][v]
                .iter()
                .filter(move |d| d.score > floor)
                .copied()
        };
        let mut out: Vec<Detection> = above(0).collect();
        if !views.is_empty() {
            for &v in views {
                out.extend(above(v));
            }
            out = nms(out, &member_nms(floor));
        }
        if let Some(t) = temps {
            for d in &mut out {
                d.score = apply_temperature(d.score, t[d.class]);
            }
        }
        out
    }

    /// The ensemble's fused detections for image `i`, thresholds applied when given.
    pub fn ensemble_output(
        &self,
        i: usize,
        views: &[usize],
        temps: &[Temperatures],
        fusion: &Fusion,
        thresholds: Option<&[f32]>,
    ) -> Result<Vec<Detection>> {
        let per_model: Vec<Vec<Detection>> = (0..self.models.len())
            .map(|m| self.model_output(m, i, views, temps[m].as_deref()))
            .collect();
        let mut fused = if per_model.len() == 1 {
            per_model.into_iter().next().unwrap_or_default()
        } else {
            fusion.fuse(&per_model)?
        };
        if let Some(t) = thresholds {
            fused.retain(|d| d.score >= t[d.class]);
        }
        Ok(fused)
    }

    /// COCO evaluation of per-image detections (one list per image of the split).
    pub fn evaluate(&self, what: &str, per_image: &[Vec<Detection>]) -> Result<Evaluation> {
        let preds: Vec<Prediction> = per_image
            .iter()
            .zip(&self.truths)
            .flat_map(|(dets, t)| {
                dets.iter().map(|d| Prediction {
                    image: t.stem.clone(),
                    class: d.class,
                    score: f64::from(d.score).clamp(0.0, 1.0),
                    bbox: d.bbox.to_xywh().to_array(),
                })
            })
            .collect();
        let index = match_predictions(what, &self.truths, &preds, self.names.len())?;
        Ok(evaluate(&self.truths, &preds, &index, &self.names)?)
    }

    /// One model over the split (views merged, temperatures applied).
    pub fn model_split(
        &self,
        m: usize,
        views: &[usize],
        temps: Option<&[f32]>,
    ) -> Vec<Vec<Detection>> {
        (0..self.images())
            .map(|i| self.model_output(m, i, views, temps))
            .collect()
    }

    /// The ensemble over the split.
    pub fn ensemble_split(
        &self,
        views: &[usize],
        temps: &[Temperatures],
        fusion: &Fusion,
        thresholds: Option<&[f32]>,
    ) -> Result<Vec<Vec<Detection>>> {
        (0..self.images())
            .map(|i| self.ensemble_output(i, views, temps, fusion, thresholds))
            .collect()
    }
}
