//! `trident-edge run`: sources → governor-chosen ladder level → ensemble → JSON Lines, until
//! the duration ends, every source has ended, or a stop is requested (SIGTERM/SIGINT).
//!
//! Faults do not end a run: a source that fails or stalls is reopened with backoff, a frame that
//! cannot be converted is skipped, a model whose pass fails is out until a retry works (the
//! governor meanwhile runs the best level whose models are all up; a frame no model can run is
//! skipped and counted), and a log or snapshot that cannot be written is kept, counted and
//! retried ([`crate::output::log`]). Each is counted in the summary, `/healthz` and `/metrics`.
//!
//! The systemd watchdog is fed only while frames flow or a recovery is under way (a source
//! reconnecting, models out and being retried, capture paused by the schedule): a loop that
//! turns without progress — a source that only times out — stops feeding it, and systemd
//! restarts the process if the source's own stall recovery does not bring frames back first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trident_core::postprocess::Detection;

use crate::error::Result;
use crate::governor::{CaptureState, Governor, GovernorStats, Pacer};
use crate::health::{Health, Reporter};
use crate::output::jsonl::{DetectionRecord, FrameRecord};
use crate::output::log::{DetectionLog, LogCounters, LogOptions};
use crate::output::snapshot::SnapshotCounters;
use crate::source::{Frame, Pull, Source, SourceStats};
use trident_infer::ensemble::runner::Ensemble;

/// How a run ends and where it writes.
pub struct RunOptions {
    /// Stop after this long (None: until stopped or every source ends).
    pub duration: Option<Duration>,
    pub detections: PathBuf,
    pub log: LogOptions,
    /// systemd notifications (`READY`, `WATCHDOG`, `STOPPING`) when run as a `Type=notify` unit.
    pub notifier: Option<crate::systemd::Notifier>,
    /// JPEG snapshots of frames with critical classes.
    pub snapshots: Option<crate::output::snapshot::Snapshots>,
}

/// What a run did, printed at the end and kept for `/healthz`.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub seconds: f64,
    pub frames: u64,
    pub detections_per_class: BTreeMap<String, u64>,
    pub sources: Vec<(String, SourceStats)>,
    /// Per model: frames and mean seconds per pass.
    pub models: Vec<(String, u64, f64)>,
    /// Per model (same order): `backend precision`, e.g. `tensorrt fp16`, and why the preferred
    /// backend did not load when it did not.
    pub backends: Vec<(String, Option<String>)>,
    pub governor: Option<GovernorStats>,
    /// Models out at the end (`name: reason`), and per model: failed passes and re-admissions.
    pub dropped_models: Vec<String>,
    pub model_faults: Vec<(String, u64, u64)>,
    /// Frames pulled that no model could run (every model of the level out): skipped.
    pub frames_unprocessed: u64,
    pub log: LogCounters,
    pub snapshots: Option<SnapshotCounters>,
    /// Seconds spent in each stage of the loop, summed over the run.
    pub stages: StageSeconds,
}

/// Where a run's time went, summed over its frames.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageSeconds {
    /// Waiting for and copying frames out of the sources.
    pub capture: f64,
    /// The models' passes (letterbox, forward, decode), wall time of the slowest.
    pub infer: f64,
    /// Calibration, fusion and thresholds.
    pub fuse: f64,
    /// JSON Lines, snapshots, health and governor bookkeeping.
    pub output: f64,
    /// Sleeping to hold the target FPS or outside capture windows.
    pub pacing: f64,
}

impl StageSeconds {
    pub fn total(&self) -> f64 {
        self.capture + self.infer + self.fuse + self.output + self.pacing
    }

    /// `(stage, seconds)` in loop order.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("capture", self.capture),
            ("infer", self.infer),
            ("fuse", self.fuse),
            ("output", self.output),
            ("pacing", self.pacing),
        ]
    }
}

impl RunSummary {
    pub fn fps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.frames as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs until the duration, a stop, or the end of every source.
pub fn run(
    sources: &mut [Source],
    ensemble: &mut Ensemble,
    governor: &mut Governor,
    opts: &mut RunOptions,
    stop: &Arc<AtomicBool>,
) -> Result<RunSummary> {
    run_observed(sources, ensemble, governor, opts, stop, None)
}

/// As [`run`], keeping `health` (what `/healthz` and `/metrics` serve) up to date: once per
/// processed frame, and once more when the run ends, whether it ends well or not.
pub fn run_observed(
    sources: &mut [Source],
    ensemble: &mut Ensemble,
    governor: &mut Governor,
    opts: &mut RunOptions,
    stop: &Arc<AtomicBool>,
    health: Option<&Health>,
) -> Result<RunSummary> {
    let mut reporter = Reporter::begin(health, sources, ensemble, governor);
    if let Some(n) = &opts.notifier {
        n.notify("READY=1");
    }
    let result = run_loop(sources, ensemble, governor, opts, stop, &mut reporter);
    if let Some(n) = &opts.notifier {
        n.notify("STOPPING=1");
    }
    reporter.end(sources, ensemble, governor);
    result
}

fn run_loop(
    sources: &mut [Source],
    ensemble: &mut Ensemble,
    governor: &mut Governor,
    opts: &mut RunOptions,
    stop: &Arc<AtomicBool>,
    reporter: &mut Reporter<'_>,
) -> Result<RunSummary> {
    let mut log = DetectionLog::open(&opts.detections, opts.log.clone());
    let t0 = Instant::now();
    let now = || t0.elapsed().as_secs_f64();
    let mut pacer = Pacer::new(governor.fps());
    let mut frame = Frame::default();
    let mut ended = vec![false; sources.len()];
    let mut summary = RunSummary::default();
    let mut busy_total: Vec<f64> = vec![0.0; ensemble.members.len()];
    let mut stages = StageSeconds::default();
    let mut warned_tta = false;
    let mut next = 0usize;
    while !stop.load(Ordering::SeqCst) && !ended.iter().all(|&e| e) {
        if opts.duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        log.tick(Instant::now());
        let t = now();
        if let CaptureState::PausedUntil(until) = governor.capture_state(t) {
            feed_watchdog(opts);
            for s in sources.iter_mut() {
                s.pause();
            }
            reporter.capturing(false);
            let changed = governor.tick(t).is_some();
            reporter.governor(t, governor, changed);
            let slept = (until - t).clamp(0.0, 0.5);
            std::thread::sleep(Duration::from_secs_f64(slept));
            stages.pacing += slept;
            pacer.reset();
            continue;
        }
        reporter.capturing(true);
        pacer.set_fps(governor.fps());
        let delay = pacer.delay(t);
        if delay > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(delay));
            stages.pacing += delay;
        }
        // Round-robin over the sources that have not ended.
        let i = next % sources.len();
        next += 1;
        if ended[i] {
            continue;
        }
        let source = &mut sources[i];
        source.resume();
        let capture = Instant::now();
        let pull = source.next_frame(&mut frame, Duration::from_millis(200));
        stages.capture += capture.elapsed().as_secs_f64();
        reporter.source(i, source);
        match pull {
            Ok(Pull::Frame) => {}
            Ok(Pull::Eos) => {
                tracing::info!("source {}: ended", source.uri);
                ended[i] = true;
                continue;
            }
            // Recovery under way: the source reopens after its backoff.
            Ok(Pull::Reconnecting | Pull::Failed { .. }) => {
                feed_watchdog(opts);
                continue;
            }
            // No progress: the watchdog is not fed (see the module docs).
            Ok(Pull::Timeout | Pull::Skipped { .. }) => continue,
            Err(e) => {
                tracing::warn!("source {}: {e}", source.uri);
                continue;
            }
        }
        feed_watchdog(opts);
        let out: Vec<&str> = ensemble.out().collect();
        if let Some(change) = governor.set_models_out(now(), &out) {
            reporter.governor(now(), governor, true);
            tracing::warn!(
                "models out ({}): running level `{}` until they are back",
                out.join(", "),
                change.to_name
            );
        }
        let level = governor.level().clone();
        if level.tta && !ensemble.has_tta() && !warned_tta {
            tracing::info!(
                "level `{}` asks for TTA; no calibration tables with TTA transforms are loaded, so it runs without",
                level.name
            );
            warned_tta = true;
        }
        let out = match ensemble.detect(
            &frame.rgb,
            frame.width,
            frame.height,
            Some(&level.models),
            level.tta,
        ) {
            Ok(out) => out,
            Err(e) => {
                // Every model of the level is out: the frame is skipped (not logged as a frame
                // without detections) and the retries go on.
                summary.frames_unprocessed += 1;
                if summary.frames_unprocessed % 100 == 1 {
                    tracing::warn!(
                        "frame skipped: {e} ({} skipped so far)",
                        summary.frames_unprocessed
                    );
                }
                reporter.unprocessed(summary.frames_unprocessed, ensemble);
                continue;
            }
        };
        stages.infer += out.infer_seconds;
        stages.fuse += out.fuse_seconds;
        let output = Instant::now();
        let busy: Vec<(&str, f64)> = ensemble
            .members
            .iter()
            .zip(&out.per_model)
            .filter(|(_, d)| d.is_some())
            .map(|(m, _)| (m.name.as_str(), m.last_seconds))
            .collect();
        for (k, m) in ensemble.members.iter().enumerate() {
            if out.per_model[k].is_some() {
                busy_total[k] += m.last_seconds;
            }
        }
        let t = now();
        governor.record_frame(t, &busy);
        let changed = governor.tick(t).is_some();
        reporter.frame(ensemble, &out, governor);
        reporter.governor(t, governor, changed);
        summary.frames += 1;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some(snaps) = &mut opts.snapshots {
            let tag = format!("{:.0}-{}-{}", wall, source.uri, frame.index);
            // A full disk must not stop detection: the snapshot is skipped, counted and logged.
            if let Err(e) =
                snaps.consider(t, &frame.rgb, frame.width, frame.height, &out.fused, &tag)
            {
                tracing::warn!("snapshot skipped: {e}");
            }
        }
        let detections = records(&out.fused, &ensemble.names, &mut summary);
        log.append(&FrameRecord {
            time: wall,
            source: source.uri.to_string(),
            frame: frame.index,
            pts: frame.pts_ns.map(|ns| ns as f64 / 1e9),
            level: governor.level_index(),
            detections,
        });
        reporter.output(&log, opts.snapshots.as_ref());
        stages.output += output.elapsed().as_secs_f64();
    }
    log.close();
    reporter.output(&log, opts.snapshots.as_ref());
    summary.seconds = now();
    summary.stages = stages;
    summary.log = log.counters();
    summary.snapshots = opts.snapshots.as_ref().map(|s| s.counters());
    finish(&mut summary, sources, ensemble, &busy_total, governor);
    Ok(summary)
}

/// `WATCHDOG=1` (throttled to half the interval) when run under systemd.
fn feed_watchdog(opts: &mut RunOptions) {
    if let Some(n) = &mut opts.notifier {
        n.alive(Instant::now());
    }
}

/// The fused detections as log records, counted per class into the summary.
fn records(
    fused: &[Detection],
    names: &[String],
    summary: &mut RunSummary,
) -> Vec<DetectionRecord> {
    fused
        .iter()
        .map(|d| {
            let name = names[d.class].clone();
            *summary
                .detections_per_class
                .entry(name.clone())
                .or_default() += 1;
            DetectionRecord {
                class: d.class,
                name,
                score: d.score,
                bbox: [
                    d.bbox.x1 as f32,
                    d.bbox.y1 as f32,
                    d.bbox.x2 as f32,
                    d.bbox.y2 as f32,
                ],
            }
        })
        .collect()
}

/// Sources, models and governor figures into the summary at the end of a run.
fn finish(
    summary: &mut RunSummary,
    sources: &[Source],
    ensemble: &Ensemble,
    busy_total: &[f64],
    governor: &Governor,
) {
    summary.sources = sources
        .iter()
        .map(|s| (s.uri.to_string(), s.stats()))
        .collect();
    summary.backends = ensemble
        .members
        .iter()
        .map(|m| (format!("{} {}", m.backend, m.precision), m.fallback.clone()))
        .collect();
    summary.models = ensemble
        .members
        .iter()
        .zip(busy_total)
        .map(|(m, &busy)| {
            let mean = if m.frames > 0 {
                busy / m.frames as f64
            } else {
                0.0
            };
            (m.name.clone(), m.frames, mean)
        })
        .collect();
    summary.dropped_models = ensemble
        .members
        .iter()
        .filter_map(|m| m.failed.as_ref().map(|f| format!("{}: {f}", m.name)))
        .collect();
    summary.model_faults = ensemble
        .members
        .iter()
        .map(|m| (m.name.clone(), m.faults, m.readmissions))
        .collect();
    summary.governor = Some(governor.stats());
}
