//! The ensemble on frames: each selected model detects at its own confidence floor (the three
//! run concurrently on their own threads), then the per-model detections are fused.

use std::time::Instant;

use trident_core::postprocess::{Detection, NmsOptions};

use super::fusion::Fusion;
use crate::backend::{self, BackendKind, BackendOptions, OnnxModel};
use crate::detector::OnnxDetector;
use crate::error::{Error, Result};
use crate::models::ModelSet;

/// One member's detections and forward-pass seconds for a frame.
type MemberResult = Result<(Vec<Detection>, f64)>;

/// One model of the ensemble.
pub struct Member {
    pub name: String,
    pub detector: OnnxDetector,
    /// Confidence floor applied to this model's detections before fusion.
    pub floor: f32,
    /// Set when the model failed at run time: it is left out from then on.
    pub failed: Option<String>,
    /// Seconds of the last forward pass (letterbox, model, decode).
    pub last_seconds: f64,
    pub frames: u64,
}

/// What one frame produced.
#[derive(Clone, Debug, Default)]
pub struct EnsembleOutput {
    pub fused: Vec<Detection>,
    /// Per member (in ensemble order): its detections, `None` when it did not run.
    pub per_model: Vec<Option<Vec<Detection>>>,
}

pub struct Ensemble {
    pub members: Vec<Member>,
    pub names: Vec<String>,
    pub fusion: Fusion,
    /// NMS settings of each model's own decoding (the floor replaces `conf`).
    pub nms: NmsOptions,
}

impl Ensemble {
    /// Loads every model of `set` with the first backend of `order` that works for it.
    pub fn load(
        set: &ModelSet,
        order: &[BackendKind],
        options: &BackendOptions,
        fusion: Fusion,
    ) -> Result<Self> {
        let mut members = Vec::new();
        for m in &set.models {
            let side = m.card.imgsz as usize;
            let model = OnnxModel {
                path: &m.onnx_path,
                bytes: &m.bytes,
            };
            let b = backend::load_first(order, &model, [1, 3, side, side], options)?;
            tracing::info!("{}: {} at {side}×{side}", m.name(), b.kind());
            members.push(Member {
                name: m.name().to_string(),
                detector: OnnxDetector::new(b, set.names.len())?,
                floor: m.card.conf_floor.unwrap_or(0.25),
                failed: None,
                last_seconds: 0.0,
                frames: 0,
            });
        }
        Ok(Ensemble {
            members,
            names: set.names.clone(),
            fusion,
            nms: NmsOptions::inference(0.25),
        })
    }

    /// Members still running.
    pub fn healthy(&self) -> usize {
        self.members.iter().filter(|m| m.failed.is_none()).count()
    }

    /// Runs the members whose names are in `active` (all when `None`) on one RGB frame and fuses
    /// their detections. A member that errors is dropped from the ensemble with an error log;
    /// the frame goes on with the others. Fails only when no member could run.
    pub fn detect(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        active: Option<&[String]>,
    ) -> Result<EnsembleOutput> {
        let nms = self.nms;
        let selected: Vec<bool> = self
            .members
            .iter()
            .map(|m| m.failed.is_none() && active.is_none_or(|a| a.iter().any(|n| n == &m.name)))
            .collect();
        let results: Vec<Option<MemberResult>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .members
                .iter_mut()
                .zip(&selected)
                .map(|(m, &run)| {
                    run.then(|| {
                        scope.spawn(move || {
                            let t = Instant::now();
                            let opts = NmsOptions {
                                conf: m.floor,
                                ..nms
                            };
                            let d = m.detector.detect(rgb, width, height, &opts)?;
                            Ok((d, t.elapsed().as_secs_f64()))
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::backend("ensemble", "a model thread panicked"))
                        })
                    })
                })
                .collect()
        });
        let mut per_model = Vec::with_capacity(self.members.len());
        for (m, r) in self.members.iter_mut().zip(results) {
            per_model.push(match r {
                Some(Ok((d, seconds))) => {
                    m.last_seconds = seconds;
                    m.frames += 1;
                    Some(d)
                }
                Some(Err(e)) => {
                    tracing::error!("{}: {e}; dropped from the ensemble", m.name);
                    m.failed = Some(e.to_string());
                    None
                }
                None => None,
            });
        }
        if per_model.iter().all(Option::is_none) {
            return Err(Error::Models(format!(
                "no model could run this frame ({})",
                self.members
                    .iter()
                    .filter_map(|m| m.failed.as_ref().map(|f| format!("{}: {f}", m.name)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let fusion = self.fusion_for(&per_model);
        // Fusion reads the detections of the members that ran: they are moved out and back
        // rather than copied, this being once per frame.
        let slots: Vec<usize> = (0..per_model.len())
            .filter(|&k| per_model[k].is_some())
            .collect();
        let ran: Vec<Vec<Detection>> = slots
            .iter()
            .map(|&k| per_model[k].take().unwrap_or_default())
            .collect();
        let fused = if ran.len() == 1 {
            ran[0].clone()
        } else {
            fusion.fuse(&ran)?
        };
        for (k, d) in slots.into_iter().zip(ran) {
            per_model[k] = Some(d);
        }
        Ok(EnsembleOutput { fused, per_model })
    }

    /// The fusion settings restricted to the members that ran (weights follow their models).
    fn fusion_for(&self, per_model: &[Option<Vec<Detection>>]) -> Fusion {
        let keep = |w: &Option<Vec<f64>>| {
            w.as_ref().map(|w| {
                w.iter()
                    .zip(per_model)
                    .filter(|(_, d)| d.is_some())
                    .map(|(w, _)| *w)
                    .collect()
            })
        };
        match &self.fusion {
            Fusion::Wbf(o) => Fusion::Wbf(super::fusion::WbfOptions {
                weights: keep(&o.weights),
                ..o.clone()
            }),
            Fusion::Nms(o) => Fusion::Nms(super::fusion::NmsFusionOptions {
                weights: keep(&o.weights),
                ..o.clone()
            }),
        }
    }
}
