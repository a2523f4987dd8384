//! The ensemble on frames: each selected model detects at its own confidence floor on its own
//! long-lived thread (the three run concurrently), calibration tables rescale each model's
//! scores, the per-model detections are fused, and per-class thresholds filter the result.
//!
//! A model whose pass fails (an error or a panic) is taken out, not dropped for good: it is
//! tried again after a backoff delay (1 s doubling to 30 s by default) on a real frame, and
//! re-admitted when that pass works. A CUDA out-of-memory or a transient driver fault costs the
//! ensemble that model for seconds, not for the life of the process.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use trident_core::calibration::{CalibrationTables, TtaTransform, apply_temperature};
use trident_core::postprocess::{Detection, NmsOptions};

use super::fusion::Fusion;
use super::worker::{FrameSlot, Job, SharedFrame, Worker};
use crate::Backoff;
use crate::backend::{self, BackendKind, BackendOptions, OnnxModel};
use crate::detector::{OnnxDetector, PassTimes, View};
use crate::error::{Error, Result};
use crate::models::ModelSet;

/// The delays between retries of a failed model: 1 s doubling to 30 s.
pub fn default_model_retry() -> Backoff {
    Backoff::new(1.0, 30.0)
}

/// One model of the ensemble.
pub struct Member {
    pub name: String,
    /// SHA-256 of the ONNX file (what calibration tables are tied to).
    pub sha256: String,
    /// The backend the model runs on, and the precision of its forward pass.
    pub backend: BackendKind,
    pub precision: String,
    /// Why the backends before `backend` in the requested order did not load (`None` when the
    /// first one did).
    pub fallback: Option<String>,
    /// Model input (width, height).
    pub input: [u32; 2],
    /// Confidence floor applied to this model's detections before fusion.
    pub floor: f32,
    /// Per-class temperatures from the calibration tables (`None`: scores as they are).
    pub temperatures: Option<Vec<f32>>,
    /// Why the model is out, while it is: set when a pass fails, cleared when a retry works.
    pub failed: Option<String>,
    /// Passes that failed (each one took the model out, or kept it out).
    pub faults: u64,
    /// Times the model came back after being out.
    pub readmissions: u64,
    /// When an out model is tried again, and the delays between tries.
    retry: Backoff,
    retry_at: Option<Instant>,
    out_since: Option<Instant>,
    /// Seconds of the last frame's passes (letterbox, model, decode; every TTA view).
    pub last_seconds: f64,
    /// The same time by step.
    pub last_times: PassTimes,
    pub frames: u64,
    worker: Worker,
}

/// A loaded detector about to join an ensemble.
pub struct ModelSlot {
    pub name: String,
    /// SHA-256 of its ONNX file (empty when unknown; calibration tables then refuse it).
    pub sha256: String,
    pub floor: f32,
    pub detector: OnnxDetector,
}

/// What one frame produced.
#[derive(Clone, Debug, Default)]
pub struct EnsembleOutput {
    pub fused: Vec<Detection>,
    /// Per member (in ensemble order): its calibrated detections, `None` when it did not run.
    pub per_model: Vec<Option<Vec<Detection>>>,
    /// Wall seconds from handing the frame to the models until the last one answered.
    pub infer_seconds: f64,
    /// Seconds of calibration, fusion and thresholds.
    pub fuse_seconds: f64,
}

/// The calibration tables as the ensemble applies them.
#[derive(Clone, Debug)]
pub struct AppliedCalibration {
    /// Where the tables came from, for messages.
    pub origin: String,
    /// Threshold per class index on the fused score (0 where the tables set none).
    pub thresholds: Vec<f32>,
    /// The test-time transforms kept by calibration, with their measured gain and cost.
    pub tta: Vec<TtaTransform>,
}

pub struct Ensemble {
    pub members: Vec<Member>,
    pub names: Vec<String>,
    pub fusion: Fusion,
    /// NMS settings of each model's own decoding (the floor replaces `conf`).
    pub nms: NmsOptions,
    pub calibration: Option<AppliedCalibration>,
    frame: FrameSlot,
    /// The extra views of TTA (empty without tables that keep any).
    views: Arc<[View]>,
    no_views: Arc<[View]>,
}

impl Ensemble {
    /// Loads every model of `set` with the first backend of `order` that works for it and
    /// starts its thread.
    pub fn load(
        set: &ModelSet,
        order: &[BackendKind],
        options: &BackendOptions,
        fusion: Fusion,
    ) -> Result<Self> {
        let mut detectors = Vec::new();
        let mut fallbacks = Vec::new();
        for m in &set.models {
            let side = m.card.imgsz as usize;
            let model = OnnxModel {
                path: &m.onnx_path,
                bytes: &m.bytes,
            };
            let (b, skipped) =
                backend::load_first_explained(order, &model, [1, 3, side, side], options)?;
            tracing::info!(
                "{}: {} ({}) at {side}×{side}",
                m.name(),
                b.kind(),
                b.precision()
            );
            fallbacks.push((!skipped.is_empty()).then(|| skipped.join("; ")));
            detectors.push(ModelSlot {
                name: m.name().to_string(),
                sha256: m.card.sha256.clone(),
                floor: m.card.conf_floor.unwrap_or(0.25),
                detector: OnnxDetector::new(b, set.names.len())?,
            });
        }
        let mut ensemble = Self::from_detectors(set.names.clone(), detectors, fusion)?;
        for (member, fallback) in ensemble.members.iter_mut().zip(fallbacks) {
            member.fallback = fallback;
        }
        Ok(ensemble)
    }

    /// An ensemble of detectors already loaded (tests, tools with their own models); starts
    /// one thread per model.
    pub fn from_detectors(
        names: Vec<String>,
        detectors: Vec<ModelSlot>,
        fusion: Fusion,
    ) -> Result<Self> {
        let frame: FrameSlot = Arc::new(RwLock::new(SharedFrame::default()));
        let mut members = Vec::new();
        for d in detectors {
            let [_, _, h, w] = d.detector.backend().input_shape();
            members.push(Member {
                backend: d.detector.backend().kind(),
                precision: d.detector.backend().precision(),
                fallback: None,
                input: [w as u32, h as u32],
                worker: Worker::spawn(&d.name, d.detector, frame.clone())?,
                name: d.name,
                sha256: d.sha256,
                floor: d.floor,
                temperatures: None,
                failed: None,
                faults: 0,
                readmissions: 0,
                retry: default_model_retry(),
                retry_at: None,
                out_since: None,
                last_seconds: 0.0,
                last_times: PassTimes::default(),
                frames: 0,
            });
        }
        let no_views: Arc<[View]> = Arc::from(Vec::new());
        Ok(Ensemble {
            members,
            names,
            fusion,
            nms: NmsOptions::inference(0.25),
            calibration: None,
            frame,
            views: no_views.clone(),
            no_views,
        })
    }

    /// Applies calibration tables: per-model temperatures, the fitted fusion (replacing the
    /// configured one), per-class thresholds and the TTA views. Refuses tables fitted for other
    /// models or classes, naming which.
    pub fn calibrate(&mut self, tables: &CalibrationTables, origin: &str) -> Result<()> {
        tables.check_models(
            origin,
            &self.names,
            self.members
                .iter()
                .map(|m| (m.name.as_str(), m.sha256.as_str())),
        )?;
        for m in &mut self.members {
            let entry = tables.model(&m.name).expect("checked above");
            m.temperatures = Some(
                entry
                    .class_temperatures
                    .clone()
                    .unwrap_or_else(|| vec![entry.temperature; self.names.len()]),
            );
        }
        let variants: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        self.fusion = Fusion::from_table(&tables.fusion, &variants);
        let thresholds = self
            .names
            .iter()
            .map(|n| tables.thresholds.get(n).copied().unwrap_or(0.0))
            .collect();
        self.views = tables
            .tta
            .iter()
            .map(|t| View {
                flip: t.flip,
                scale: t.scale,
            })
            .collect::<Vec<_>>()
            .into();
        self.calibration = Some(AppliedCalibration {
            origin: origin.to_string(),
            thresholds,
            tta: tables.tta.clone(),
        });
        Ok(())
    }

    /// Latency multiplier of the tables' TTA views as calibration measured it (the last kept
    /// view's cumulative cost; 1 when the tables keep none); `None` without tables.
    pub fn tta_cost(&self) -> Option<f64> {
        self.calibration
            .as_ref()
            .map(|c| c.tta.last().map_or(1.0, |t| t.cost.max(1.0)))
    }

    /// Whether TTA has anything to run (tables with kept transforms are applied).
    pub fn has_tta(&self) -> bool {
        !self.views.is_empty()
    }

    /// Members running now (not out after a failed pass).
    pub fn healthy(&self) -> usize {
        self.members.iter().filter(|m| m.failed.is_none()).count()
    }

    /// Names of the members that are out now.
    pub fn out(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter(|m| m.failed.is_some())
            .map(|m| m.name.as_str())
    }

    /// The delays between retries of a failed model (default [`default_model_retry`]).
    pub fn set_model_retry(&mut self, backoff: Backoff) {
        for m in &mut self.members {
            m.retry = backoff.clone();
        }
    }

    /// Runs the members whose names are in `active` (all when `None`) on one RGB frame, with
    /// the tables' test-time views when `tta`, and fuses their detections. A member that errors
    /// is taken out with an error log and the frame goes on with the others; an out member whose
    /// retry is due runs again and is re-admitted when its pass works. Fails only when no member
    /// could run this frame (the caller skips the frame; the retries go on).
    pub fn detect(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        active: Option<&[String]>,
        tta: bool,
    ) -> Result<EnsembleOutput> {
        let t0 = Instant::now();
        {
            let mut f = self.frame.write().unwrap_or_else(PoisonError::into_inner);
            f.rgb.clear();
            f.rgb.extend_from_slice(rgb);
            (f.width, f.height) = (width, height);
        }
        let views = if tta { &self.views } else { &self.no_views };
        let mut submitted = Vec::with_capacity(self.members.len());
        let now = Instant::now();
        let mut probes = Vec::new();
        for (k, m) in self.members.iter_mut().enumerate() {
            let in_level = active.is_none_or(|a| a.iter().any(|n| n == &m.name));
            // An out model is retried when due even outside the level: the level was chosen
            // because it is out, and only a working pass brings it back. Its detections then
            // stay out of this frame's fusion.
            let retry = m.failed.is_some() && m.retry_at.is_some_and(|t| now >= t);
            if retry && !in_level {
                probes.push(k);
            }
            let run = (m.failed.is_none() && in_level) || retry;
            let job = Job {
                nms: NmsOptions {
                    conf: m.floor,
                    ..self.nms
                },
                views: views.clone(),
            };
            let sent = run.then(|| m.worker.submit(job));
            submitted.push(match sent {
                Some(Err(e)) => {
                    drop_member(m, &e);
                    false
                }
                Some(Ok(())) => true,
                None => false,
            });
        }
        let mut per_model = Vec::with_capacity(self.members.len());
        let mut infer_seconds = 0.0;
        for (m, sent) in self.members.iter_mut().zip(submitted) {
            if !sent {
                per_model.push(None);
                continue;
            }
            let result = m.worker.collect();
            infer_seconds = t0.elapsed().as_secs_f64();
            per_model.push(match result {
                Ok((mut d, seconds, times)) => {
                    m.last_seconds = seconds;
                    m.last_times = times;
                    m.frames += 1;
                    if m.failed.is_some() {
                        readmit(m);
                    }
                    if let Some(t) = &m.temperatures {
                        for x in &mut d {
                            x.score = apply_temperature(x.score, t[x.class]);
                        }
                    }
                    Some(d)
                }
                Err(e) => {
                    drop_member(m, &e);
                    None
                }
            });
        }
        for k in probes {
            per_model[k] = None;
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
        let mut fused = self.fuse(&mut per_model)?;
        if let Some(c) = &self.calibration {
            fused.retain(|d| d.score >= c.thresholds[d.class]);
        }
        Ok(EnsembleOutput {
            fused,
            per_model,
            infer_seconds,
            fuse_seconds: t0.elapsed().as_secs_f64() - infer_seconds,
        })
    }

    /// Fuses the detections of the members that ran; they are moved out and back rather than
    /// copied, this being once per frame.
    fn fuse(&self, per_model: &mut [Option<Vec<Detection>>]) -> Result<Vec<Detection>> {
        let fusion = self.fusion_for(per_model);
        let slots: Vec<usize> = (0..per_model.len())
            .filter(|&k| per_model[k].is_some())
            .collect();
        let ran: Vec<Vec<Detection>> = slots
            .iter()
            .map(|&k| per_model[k].take().unwrap_or_default())
            .collect();
        let fused = if ran.len() == 1 {
            Ok(ran[0].clone())
        } else {
            fusion.fuse(&ran)
        };
        for (k, d) in slots.into_iter().zip(ran) {
            per_model[k] = Some(d);
        }
        fused
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

/// A failed pass: the member is out until its next retry, which the backoff delays.
fn drop_member(m: &mut Member, e: &Error) {
    let now = Instant::now();
    let delay = m.retry.fail();
    m.faults += 1;
    if m.failed.is_none() {
        tracing::error!(
            "{}: {e}; out of the ensemble, retried in {delay:.0} s",
            m.name
        );
        m.out_since = Some(now);
    } else {
        tracing::warn!(
            "{}: retry failed ({e}); retried again in {delay:.0} s",
            m.name
        );
    }
    m.failed = Some(e.to_string());
    m.retry_at = Some(now + std::time::Duration::from_secs_f64(delay));
}

/// A retried member's pass worked: it runs with the others again.
fn readmit(m: &mut Member) {
    let out_s = m.out_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
    tracing::info!(
        "{}: re-admitted to the ensemble after {out_s:.1} s out ({} failed passes)",
        m.name,
        m.retry.failures
    );
    m.failed = None;
    m.retry_at = None;
    m.out_since = None;
    m.retry.reset();
    m.readmissions += 1;
}
