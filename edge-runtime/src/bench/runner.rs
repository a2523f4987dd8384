//! The measuring loop of `trident-edge bench`: idle power, each model alone (latency by step,
//! power, TTA cost), then the ensemble at every selected ladder level, unpaced, on frames pulled
//! from a real source — what the unit will do in the field, minus the governor's pacing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use trident_core::bench::{BenchSetup, IdleFigures, LevelBench, Millis, ModelBench, TtaBench};

use super::device;
use super::meter::{Meter, Window};
use crate::error::{Error, Result};
use crate::governor::{PowerModel, PowerSource, Profile};
use crate::source::{Frame, Pull, Source};
use trident_infer::ensemble::runner::Ensemble;

/// How long to wait for one frame before the source is declared stuck.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// One level to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelSpec {
    pub name: String,
    pub models: Vec<String>,
    pub tta: bool,
    /// The rate asked of it (the profile's, or the source's without one).
    pub rate_fps: f64,
}

/// Which ladder levels to measure.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LevelChoice {
    #[default]
    All,
    Named(Vec<String>),
}

/// The ladder to measure: the profile's, or without one: the whole ensemble (with TTA first when
/// the calibration tables keep views), then each model alone.
pub fn ladder(
    profile: Option<&Profile>,
    ensemble: &Ensemble,
    choice: &LevelChoice,
    source_fps: f64,
) -> Result<Vec<LevelSpec>> {
    let all: Vec<LevelSpec> = match profile {
        Some(p) => (0..p.ladder.len())
            .map(|i| LevelSpec {
                name: p.ladder[i].name.clone(),
                models: p.ladder[i].models.clone(),
                tta: p.ladder[i].tta,
                rate_fps: p.level_rate(i),
            })
            .collect(),
        None => {
            let names: Vec<String> = ensemble.members.iter().map(|m| m.name.clone()).collect();
            let whole = |name: &str, tta| LevelSpec {
                name: name.into(),
                models: names.clone(),
                tta,
                rate_fps: source_fps,
            };
            let mut levels = Vec::new();
            if ensemble.has_tta() {
                levels.push(whole("ensemble-tta", true));
            }
            if names.len() > 1 {
                levels.push(whole("ensemble", false));
            }
            levels.extend(names.iter().map(|n| LevelSpec {
                name: n.clone(),
                models: vec![n.clone()],
                tta: false,
                rate_fps: source_fps,
            }));
            levels
        }
    };
    // A profile's levels were checked against the loaded models when the ensemble started
    // (`Deployment::ensemble`); the others are made from them.
    match choice {
        LevelChoice::All => Ok(all),
        LevelChoice::Named(names) => names
            .iter()
            .map(|n| {
                all.iter().find(|l| &l.name == n).cloned().ok_or_else(|| {
                    Error::Usage(format!(
                        "--levels {n}: no such ladder level (levels: {})",
                        all.iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect(),
    }
}

/// How to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub frames: u32,
    pub warmup: u32,
    /// Seconds of idle power before the models run (0: skip).
    pub idle_seconds: f64,
    pub levels: Vec<LevelSpec>,
    /// Root of the system whose memory is sampled (`/`).
    pub system_root: PathBuf,
}

/// What the loop measured, before it becomes a report.
pub struct Measured {
    pub idle: Option<IdleFigures>,
    pub models: Vec<ModelBench>,
    pub levels: Vec<LevelBench>,
    pub notes: Vec<String>,
}

/// The parts of a run the loop works with.
pub struct Rig<'a> {
    pub ensemble: &'a mut Ensemble,
    pub source: &'a mut Source,
    pub meter: &'a Meter,
    /// The profile's power model: power and energy are estimated from it without a sensor,
    /// and each level's prediction is checked against the sensor with one.
    pub profile: Option<&'a Profile>,
    pub progress: &'a ProgressBar,
}

/// Frames measured in the loop, counted by the progress bar.
pub fn total_frames(plan: &Plan, models: usize, tta: bool) -> u64 {
    let per = u64::from(plan.frames + plan.warmup);
    per * models as u64 * if tta { 2 } else { 1 } + per * plan.levels.len() as u64
}

/// Runs the plan.
pub fn measure(rig: &mut Rig<'_>, plan: &Plan, setup: &mut BenchSetup) -> Result<Measured> {
    let mut frame = Frame::default();
    let mut notes = Vec::new();
    // The first frame tells the frame size and proves the source works before anything else.
    pull(rig.source, &mut frame)?;
    let idle = idle_power(rig, plan.idle_seconds)?;
    let mut models = Vec::new();
    for k in 0..rig.ensemble.members.len() {
        models.push(one_model(rig, plan, k, &mut frame, idle.as_ref())?);
    }
    let mut levels = Vec::new();
    let mut rss_resets = true;
    for spec in &plan.levels {
        if spec.tta && !rig.ensemble.has_tta() {
            notes.push(format!(
                "level `{}` asks for TTA, but no calibration tables with test-time views are \
                 loaded: it was measured (and runs) without",
                spec.name
            ));
        }
        rig.progress.set_message(format!("level {}", spec.name));
        rss_resets &= device::reset_peak_rss();
        rig.meter.reset_memory_peak();
        levels.push(one_level(rig, plan, spec, &mut frame)?);
    }
    if !rss_resets && !plan.levels.is_empty() {
        notes.push(
            "peak RSS could not be reset between levels (/proc/self/clear_refs): each level's \
             figure is the process peak so far"
                .into(),
        );
    }
    if rig.meter.sensor().is_none() {
        notes.push(match rig.profile {
            Some(p) => format!(
                "no power sensor: power and energy are ESTIMATED from profile `{}` (idle {:.2} W \
                 + each model's active power × its measured busy time)",
                p.name, p.estimates.idle_w
            ),
            None => "no power sensor and no profile: power and energy not measured".into(),
        });
    }
    setup.frame_width = frame.width;
    setup.frame_height = frame.height;
    Ok(Measured {
        idle,
        models,
        levels,
        notes,
    })
}

/// Pulls the next frame, waiting through live sources' gaps and reconnects.
fn pull(source: &mut Source, frame: &mut Frame) -> Result<f64> {
    let t = Instant::now();
    loop {
        match source.next_frame(frame, Duration::from_millis(200))? {
            Pull::Frame => return Ok(t.elapsed().as_secs_f64()),
            Pull::Eos => {
                return Err(Error::Bench(format!(
                    "source {} ended after {} frames; use a longer clip or a live source",
                    source.uri,
                    source.stats().frames
                )));
            }
            Pull::Failed { message, .. } if t.elapsed() > FRAME_TIMEOUT => {
                return Err(Error::Bench(format!("source {}: {message}", source.uri)));
            }
            _ if t.elapsed() > FRAME_TIMEOUT => {
                return Err(Error::Bench(format!(
                    "source {} delivered no frame in {} s",
                    source.uri,
                    FRAME_TIMEOUT.as_secs()
                )));
            }
            _ => {}
        }
    }
}

fn idle_power(rig: &mut Rig<'_>, seconds: f64) -> Result<Option<IdleFigures>> {
    if seconds <= 0.0 || rig.meter.sensor().is_none() {
        return Ok(None);
    }
    rig.progress.set_message("idle power");
    rig.source.pause();
    let mark = rig.meter.mark();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let window = rig.meter.since(mark);
    rig.source.resume();
    Ok(window.average_w().map(|w| IdleFigures {
        seconds: window.seconds,
        power_w: w,
    }))
}

/// Runs `models` (with TTA when `tta`) on one frame and fails if a model dropped out.
fn detect(
    ensemble: &mut Ensemble,
    frame: &Frame,
    models: &[String],
    tta: bool,
) -> Result<trident_infer::ensemble::runner::EnsembleOutput> {
    let out = ensemble.detect(&frame.rgb, frame.width, frame.height, Some(models), tta)?;
    if let Some(m) = ensemble
        .members
        .iter()
        .find(|m| m.failed.is_some() && models.contains(&m.name))
    {
        return Err(Error::Bench(format!(
            "model `{}` failed: {}",
            m.name,
            m.failed.as_deref().unwrap_or_default()
        )));
    }
    Ok(out)
}

/// Per-pass samples of one model (seconds).
#[derive(Default)]
struct PassSamples {
    total: Vec<f64>,
    pre: Vec<f64>,
    forward: Vec<f64>,
    post: Vec<f64>,
}

fn ms(samples: &[f64]) -> Millis {
    let ms: Vec<f64> = samples.iter().map(|s| s * 1e3).collect();
    Millis::of(&ms)
}

fn one_model(
    rig: &mut Rig<'_>,
    plan: &Plan,
    k: usize,
    frame: &mut Frame,
    idle: Option<&IdleFigures>,
) -> Result<ModelBench> {
    let name = rig.ensemble.members[k].name.clone();
    rig.progress.set_message(format!("model {name}"));
    let only = [name.clone()];
    let run = |rig: &mut Rig<'_>, frame: &mut Frame, tta: bool| -> Result<(PassSamples, Window)> {
        for _ in 0..plan.warmup {
            pull(rig.source, frame)?;
            detect(rig.ensemble, frame, &only, tta)?;
            rig.progress.inc(1);
        }
        let mut s = PassSamples::default();
        let mark = rig.meter.mark();
        for _ in 0..plan.frames {
            pull(rig.source, frame)?;
            detect(rig.ensemble, frame, &only, tta)?;
            let m = &rig.ensemble.members[k];
            s.total.push(m.last_times.total());
            s.pre.push(m.last_times.preprocess);
            s.forward.push(m.last_times.forward);
            s.post.push(m.last_times.postprocess);
            rig.progress.inc(1);
        }
        Ok((s, rig.meter.since(mark)))
    };
    let (plain, window) = run(rig, frame, false)?;
    let busy: f64 = plain.total.iter().sum();
    let power = power_of(rig, &window, &[(name.as_str(), busy)]);
    let active_w = match (power, idle, rig.meter.sensor()) {
        (Some(p), Some(i), Some(_)) if busy > 0.0 => {
            Some(((p - i.power_w) * window.seconds / busy).max(0.0))
        }
        _ => None,
    };
    let tta = if rig.ensemble.has_tta() {
        rig.progress
            .set_message(format!("model {name} with test-time views"));
        let (views, _) = run(rig, frame, true)?;
        let latency = ms(&views.total);
        let plain_mean = ms(&plain.total).mean;
        Some(TtaBench {
            views: rig
                .ensemble
                .calibration
                .as_ref()
                .map_or(0, |c| c.tta.len() as u32),
            factor: if plain_mean > 0.0 {
                latency.mean / plain_mean
            } else {
                1.0
            },
            latency_ms: latency,
        })
    } else {
        None
    };
    let member = &rig.ensemble.members[k];
    let frames = plain.total.len() as u32;
    Ok(ModelBench {
        name,
        backend: member.backend.name().into(),
        precision: member.precision.clone(),
        input: member.input,
        sha256: member.sha256.clone(),
        frames,
        latency_ms: ms(&plain.total),
        preprocess_ms: ms(&plain.pre),
        forward_ms: ms(&plain.forward),
        postprocess_ms: ms(&plain.post),
        fps: rate(frames, window.seconds),
        power_w: power,
        energy_j_per_frame: power.map(|p| p * window.seconds / f64::from(frames.max(1))),
        active_w,
        tta,
        latency_samples_ms: plain.total.iter().map(|s| s * 1e3).collect(),
    })
}

fn rate(frames: u32, seconds: f64) -> f64 {
    if seconds > 0.0 {
        f64::from(frames) / seconds
    } else {
        0.0
    }
}

/// Average power over a window: the sensor's, or the profile's estimate from busy seconds.
fn power_of(rig: &Rig<'_>, window: &Window, busy: &[(&str, f64)]) -> Option<f64> {
    if rig.meter.sensor().is_some() {
        window.average_w()
    } else {
        rig.profile.and_then(|p| estimate(p, window.seconds, busy))
    }
}

/// The profile's power model over `seconds` with the given busy seconds per model: the same
/// estimate the governor integrates without a sensor (busy time beyond the interval, from
/// models that ran side by side, does not count twice).
fn estimate(profile: &Profile, seconds: f64, busy: &[(&str, f64)]) -> Option<f64> {
    if seconds <= 0.0 {
        return None;
    }
    let mut model = PowerModel::from_profile(profile, 0.0);
    for (m, b) in busy {
        model.add_busy(m, *b);
    }
    model.read(seconds).ok()
}

fn one_level(
    rig: &mut Rig<'_>,
    plan: &Plan,
    spec: &LevelSpec,
    frame: &mut Frame,
) -> Result<LevelBench> {
    let tta = spec.tta && rig.ensemble.has_tta();
    for _ in 0..plan.warmup {
        pull(rig.source, frame)?;
        detect(rig.ensemble, frame, &spec.models, tta)?;
        rig.progress.inc(1);
    }
    let dropped_before = rig.source.stats().dropped;
    let (mut capture, mut infer, mut fuse, mut whole) = (vec![], vec![], vec![], vec![]);
    let mut per_model: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut detections = 0usize;
    let mark = rig.meter.mark();
    for _ in 0..plan.frames {
        let t = Instant::now();
        capture.push(pull(rig.source, frame)?);
        let out = detect(rig.ensemble, frame, &spec.models, tta)?;
        whole.push(t.elapsed().as_secs_f64());
        infer.push(out.infer_seconds);
        fuse.push(out.fuse_seconds);
        detections += out.fused.len();
        for (m, d) in rig.ensemble.members.iter().zip(&out.per_model) {
            if d.is_some() {
                per_model
                    .entry(m.name.clone())
                    .or_default()
                    .push(m.last_seconds);
            }
        }
        rig.progress.inc(1);
    }
    let window = rig.meter.since(mark);
    let frames = whole.len() as u32;
    let busy: Vec<(&str, f64)> = per_model
        .iter()
        .map(|(m, s)| (m.as_str(), s.iter().sum()))
        .collect();
    let power = power_of(rig, &window, &busy);
    let compute: f64 = infer.iter().zip(&fuse).map(|(i, f)| i + f).sum::<f64>();
    let capacity_fps = if compute > 0.0 {
        f64::from(frames) / compute
    } else {
        0.0
    };
    // The profile's power model at this run's measured busy time: with a sensor, how far the
    // estimate is from the truth; the governor corrects by the same ratio online.
    let predicted_w = rig
        .profile
        .filter(|_| rig.meter.sensor().is_some())
        .and_then(|p| estimate(p, window.seconds, &busy));
    Ok(LevelBench {
        name: spec.name.clone(),
        models: spec.models.clone(),
        tta,
        rate_fps: spec.rate_fps,
        frames,
        fps: rate(frames, window.seconds),
        capacity_fps,
        meets_rate: capacity_fps >= spec.rate_fps * 0.999,
        capture_ms: ms(&capture),
        infer_ms: ms(&infer),
        fuse_ms: ms(&fuse),
        frame_ms: ms(&whole),
        model_ms: per_model.iter().map(|(m, s)| (m.clone(), ms(s))).collect(),
        power_w: power,
        energy_j_per_frame: power.map(|p| p * window.seconds / f64::from(frames.max(1))),
        predicted_w,
        peak_rss_mib: device::peak_rss_mib(),
        peak_system_mib: rig.meter.memory_peak_mib(),
        dropped: rig.source.stats().dropped.saturating_sub(dropped_before),
        detections_per_frame: detections as f64 / f64::from(frames.max(1)),
    })
}
