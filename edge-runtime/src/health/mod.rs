//! What `/healthz` and `/metrics` report: state that the run loop updates and the HTTP server
//! ([`crate::http`]) reads.
//!
//! The run loop takes the lock once per processed frame ([`Health::update`]) and writes in
//! place: counters, the FPS window (a ring of frame instants that stops growing once it holds a
//! window's worth), histogram buckets. Governor figures (power, energy, level changes) come from
//! [`GovernorStats`], which the loop refreshes about once a second and on every level change.
//!
//! # `/healthz`
//!
//! `ok` is true unless one of these holds (each adds a line to `problems`):
//! - the run loop has not begun (models and sources still loading), or it has ended;
//! - no model of the ensemble is running (all were dropped after run-time errors);
//! - past the start-up grace (default 30 s after [`Health::new`]), no frame arrived for longer
//!   than the stale threshold (default 10 s). Time spent paused outside capture windows does not
//!   count: the wait restarts when capture resumes.
//!
//! Faults the runtime works through do not turn `ok` false; each adds a line to `warnings`: a
//! detections log that cannot be written (lines wait in memory, `output.log` counts them), lines
//! or snapshots lost to it, and models out of the ensemble while they are retried. Detection goes
//! on through them, and a deploy's health gate must not roll a release back over a full disk.
//!
//! # What a deploy's health gate reads
//!
//! `version` is the package version from the verified manifest the runtime loaded (null when it
//! runs from a models folder, and until the package is verified); `runtime_version` is this
//! binary's own. `started_at_unix_s` and `pid` name the process: a gate compares the start with
//! the time of its switch, so the process that answers is the one started after it.
//! `level_models` are the models of the governor's active ladder level (levels run subsets of
//! the ensemble), `models[].frames` the frames each model processed, and
//! `min_level_model_frames` the fewest among the active level's models: 0 before the first frame,
//! null before the run begins. [`Gate`] checks these (`trident-edge health --expect-version
//! --started-after --min-frames`).

use std::collections::VecDeque;

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::governor::GovernorStats;
use crate::output::log::LogCounters;
use crate::output::snapshot::SnapshotCounters;

/// The runtime's own version (this crate's), reported as `runtime_version` beside the package's.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

static PROCESS_START: OnceLock<SystemTime> = OnceLock::new();

/// When this process started: the wall-clock time of the first call, kept for the process's
/// life. `trident-edge`'s `main` calls it first thing, so it is the process start to within the
/// time the loader and argument parsing take.
pub fn process_start() -> SystemTime {
    *PROCESS_START.get_or_init(SystemTime::now)
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Upper bounds (seconds) of the per-model latency histogram's buckets; `+Inf` follows.
pub const LATENCY_BUCKETS_S: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Frame instants kept for the FPS at most; above 4096 / window frames per second the window
/// shortens to the span of the instants kept.
const MAX_RECENT: usize = 4096;

/// Thresholds of `/healthz` and what it names as the version.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Reported as `version` (and `trident_build_info{version}`): the package version when known
    /// at the start; [`HealthUpdate::version`] sets it once the package is verified.
    pub version: Option<String>,
    /// Not ok when no frame arrived for longer than this (default 10 s)…
    pub stale_after: Duration,
    /// …once this long has passed since the start (default 30 s).
    pub startup_grace: Duration,
    /// The FPS is the frames of this last window (default 5 s) over its length.
    pub fps_window: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            version: None,
            stale_after: Duration::from_secs(10),
            startup_grace: Duration::from_secs(30),
            fps_window: Duration::from_secs(5),
        }
    }
}

/// A source's counters (`SourceStats` of the capture module, which needs GStreamer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    pub frames: u64,
    pub dropped: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub stalls: u64,
    pub skipped: u64,
}

/// A Prometheus histogram with the [`LATENCY_BUCKETS_S`] bounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last one is above every bound.
    counts: [u64; LATENCY_BUCKETS_S.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Adds one observation (NaN and negative values are ignored).
    pub fn observe(&mut self, value: f64) {
        if value.is_nan() || value < 0.0 {
            return;
        }
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|&le| value <= le)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// `(upper bound, observations ≤ bound)` per bucket, `+Inf` last (equal to `count`).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BUCKETS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().scan(0, |total, &c| {
                *total += c;
                Some(*total)
            }))
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// A model out of the ensemble after a failed pass (retried with backoff).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DroppedModel {
    pub model: String,
    pub reason: String,
}

/// What one model runs on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelBackend {
    pub model: String,
    /// `tensorrt`, `onnxruntime` or `tract`.
    pub backend: String,
    /// `fp16` or `fp32`.
    pub precision: String,
    /// Why the preferred backend(s) did not load, when the model runs on a later one (a unit
    /// whose profile asks for TensorRT and that ends on the CPU says why here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Frames this model processed (one pass each, its TTA views included).
    pub frames: u64,
    /// Failed passes, and times it came back after being out.
    pub faults: u64,
    pub readmissions: u64,
}

/// What the runtime wrote, and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OutputReport {
    pub log: LogCounters,
    /// Null without snapshot classes.
    pub snapshots: Option<SnapshotCounters>,
}

/// The body of `/healthz`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthReport {
    pub ok: bool,
    /// Why `ok` is false, one line each; empty when ok.
    pub problems: Vec<String>,
    /// Faults detection goes on through (output not written, models out), one line each.
    pub warnings: Vec<String>,
    /// The package version from the verified manifest the runtime loaded; null when it runs from
    /// a models folder (and until the package is verified).
    pub version: Option<String>,
    /// The runtime binary's own version.
    pub runtime_version: String,
    /// When the process started (Unix seconds, wall clock) and its id: a deploy gate compares
    /// the start with the time of its switch.
    pub started_at_unix_s: f64,
    pub pid: u32,
    /// Seconds since the health state was created (the start of `trident-edge run`).
    pub uptime_s: f64,
    /// Frames the ensemble processed.
    pub frames: u64,
    /// Frames skipped because no model of the level could run.
    pub frames_unprocessed: u64,
    /// Detections the runtime reported (after fusion and the per-class thresholds): a unit that
    /// is healthy but never detects anything is something a field engineer wants to see.
    pub detections: u64,
    /// Over the last `fps_window`.
    pub fps: f64,
    /// Seconds since the last processed frame; null before the first.
    pub last_frame_age_s: Option<f64>,
    /// False while the governor pauses capture outside its capture windows.
    pub capturing: bool,
    /// Ladder level (0 is the best) and its name; null before the run begins.
    pub level: Option<usize>,
    pub level_name: Option<String>,
    /// The models the active ladder level runs (all models until the governor names its level);
    /// null before the run begins.
    pub level_models: Option<Vec<String>>,
    /// The fewest frames any model of `level_models` processed (0 before the first frame); null
    /// before the run begins.
    pub min_level_model_frames: Option<u64>,
    /// Power at the governor's last sample, average power and energy since its start; null
    /// until the first governor report.
    pub power_w: Option<f64>,
    pub average_w: Option<f64>,
    pub energy_j: Option<f64>,
    /// `ina3221`, `tegrastats`, `rapl` or `estimate`.
    pub power_source: Option<String>,
    pub models_running: usize,
    /// The models out now (each is retried, and re-admitted when its pass works).
    pub models_dropped: Vec<DroppedModel>,
    /// Each model's backend, precision and frames, in ensemble order.
    pub models: Vec<ModelBackend>,
    pub output: OutputReport,
}

struct SourceState {
    uri: String,
    counters: SourceCounters,
}

struct ModelState {
    name: String,
    /// Forward passes, counted apart from `latency` (which ignores NaN and negative times).
    frames: u64,
    latency: Histogram,
    dropped: Option<String>,
    faults: u64,
    readmissions: u64,
    backend: String,
    precision: String,
    fallback: Option<String>,
}

/// The governor's figures as of its last report.
struct PowerState {
    last_w: f64,
    average_w: f64,
    energy_j: f64,
    cap_w: f64,
    level_changes: u64,
    source: String,
}

#[derive(Default)]
struct State {
    begun: bool,
    ended: bool,
    frames: u64,
    frames_unprocessed: u64,
    log: LogCounters,
    snapshots: Option<SnapshotCounters>,
    detections: u64,
    last_frame: Option<Instant>,
    /// When capture last resumed after a pause.
    resumed: Option<Instant>,
    paused: bool,
    recent: VecDeque<Instant>,
    level: Option<usize>,
    level_name: String,
    /// The models of the active level; all models from `begin` until the governor names them.
    level_models: Option<Vec<String>>,
    /// The package version (from the config, then [`HealthUpdate::version`]).
    version: Option<String>,
    power: Option<PowerState>,
    sources: Vec<SourceState>,
    models: Vec<ModelState>,
}

/// The runtime's health, shared between the run loop and the HTTP server.
pub struct Health {
    config: HealthConfig,
    start: Instant,
    /// [`process_start`] in Unix seconds, and the process id.
    started_at_unix_s: f64,
    pid: u32,
    state: Mutex<State>,
}

/// The lock held for one batch of updates ([`Health::update`]).
pub struct HealthUpdate<'a> {
    now: Instant,
    window: Duration,
    state: MutexGuard<'a, State>,
}

impl Health {
    /// Starts the clock: uptime and the start-up grace count from here.
    pub fn new(config: HealthConfig) -> Self {
        Self::new_at(config, Instant::now())
    }

    /// As [`Health::new`], started at `start` (tests).
    pub fn new_at(config: HealthConfig, start: Instant) -> Self {
        Health {
            started_at_unix_s: unix_seconds(process_start()),
            pid: std::process::id(),
            state: Mutex::new(State {
                recent: VecDeque::with_capacity(64),
                version: config.version.clone(),
                ..State::default()
            }),
            config,
            start,
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the state for updates made now.
    pub fn update(&self) -> HealthUpdate<'_> {
        self.update_at(Instant::now())
    }

    /// Locks the state for updates made at `now` (tests).
    pub fn update_at(&self, now: Instant) -> HealthUpdate<'_> {
        HealthUpdate {
            now,
            window: self.config.fps_window,
            state: self.lock(),
        }
    }

    /// The `/healthz` body now.
    pub fn report(&self) -> HealthReport {
        self.report_at(Instant::now())
    }

    pub fn report_at(&self, now: Instant) -> HealthReport {
        let s = self.lock();
        self.report_locked(&s, now)
    }

    fn report_locked(&self, s: &State, now: Instant) -> HealthReport {
        let uptime = now.saturating_duration_since(self.start);
        let models_running = s.models.iter().filter(|m| m.dropped.is_none()).count();
        let mut problems = Vec::new();
        if !s.begun {
            problems.push("starting: the run loop has not begun".to_string());
        } else if s.ended {
            problems.push("the run has ended".to_string());
        } else if models_running == 0 {
            problems.push("no model is running: every model was dropped from the ensemble".into());
        }
        if s.begun && !s.ended && !s.paused && uptime > self.config.startup_grace {
            // Frames, or the resumption of capture, restart the wait; the start begins it.
            let since = [s.last_frame, s.resumed]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(self.start);
            let waited = now.saturating_duration_since(since);
            if waited > self.config.stale_after {
                problems.push(format!(
                    "no frame for {:.1} s (stale after {} s)",
                    waited.as_secs_f64(),
                    self.config.stale_after.as_secs_f64()
                ));
            }
        }
        let power = s.power.as_ref();
        let warnings = warnings(s);
        let min_level_model_frames = s.level_models.as_ref().and_then(|names| {
            names
                .iter()
                .map(|n| {
                    s.models
                        .iter()
                        .find(|m| &m.name == n)
                        .map_or(0, |m| m.frames)
                })
                .min()
        });
        HealthReport {
            ok: problems.is_empty(),
            problems,
            warnings,
            version: s.version.clone(),
            runtime_version: RUNTIME_VERSION.to_string(),
            started_at_unix_s: self.started_at_unix_s,
            pid: self.pid,
            uptime_s: uptime.as_secs_f64(),
            frames: s.frames,
            frames_unprocessed: s.frames_unprocessed,
            detections: s.detections,
            fps: self.fps(s, now),
            last_frame_age_s: s
                .last_frame
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            capturing: !s.paused,
            level: s.level,
            level_name: s.level.map(|_| s.level_name.clone()),
            level_models: s.level_models.clone(),
            min_level_model_frames,
            power_w: power.map(|p| p.last_w),
            average_w: power.map(|p| p.average_w),
            energy_j: power.map(|p| p.energy_j),
            power_source: power.map(|p| p.source.clone()),
            models_running,
            models_dropped: s
                .models
                .iter()
                .filter_map(|m| {
                    m.dropped.as_ref().map(|r| DroppedModel {
                        model: m.name.clone(),
                        reason: r.clone(),
                    })
                })
                .collect(),
            models: s
                .models
                .iter()
                .map(|m| ModelBackend {
                    model: m.name.clone(),
                    backend: m.backend.clone(),
                    precision: m.precision.clone(),
                    fallback: m.fallback.clone(),
                    frames: m.frames,
                    faults: m.faults,
                    readmissions: m.readmissions,
                })
                .collect(),
            output: OutputReport {
                log: s.log.clone(),
                snapshots: s.snapshots.clone(),
            },
        }
    }

    /// Frames of the last window over its length (the uptime while shorter).
    fn fps(&self, s: &State, now: Instant) -> f64 {
        let from = now.checked_sub(self.config.fps_window);
        let n = s
            .recent
            .iter()
            .rev()
            .take_while(|&&t| from.is_none_or(|from| t > from))
            .count();
        let mut span = self
            .config
            .fps_window
            .min(now.saturating_duration_since(self.start));
        if s.recent.len() == MAX_RECENT
            && let Some(&oldest) = s.recent.front()
        {
            span = span.min(now.saturating_duration_since(oldest));
        }
        if n == 0 || span.is_zero() {
            0.0
        } else {
            n as f64 / span.as_secs_f64()
        }
    }
}

/// The faults detection goes on through, one line each.
fn warnings(s: &State) -> Vec<String> {
    let mut out = Vec::new();
    let log = &s.log;
    if let Some(error) = &log.failing {
        out.push(format!(
            "detections are not being written: {error} (for {:.0} s; {} lines waiting in memory, \
             retried)",
            log.failing_for_s.unwrap_or(0.0),
            log.lines_pending
        ));
    }
    if log.lines_dropped > 0 {
        out.push(format!(
            "{} detection lines ({} detections) were dropped while the log could not be written",
            log.lines_dropped, log.detections_dropped
        ));
    }
    if let Some(snaps) = s.snapshots.as_ref().filter(|c| c.failed > 0) {
        out.push(format!("{} snapshots could not be written", snaps.failed));
    }
    for m in &s.models {
        if let Some(reason) = &m.dropped {
            out.push(format!("model {} is out (retried): {reason}", m.name));
        }
    }
    out
}

fn f(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

impl HealthUpdate<'_> {
    /// The run begins with these sources and models (in the order later updates index them).
    pub fn begin<S: Into<String>, M: Into<String>>(
        &mut self,
        sources: impl IntoIterator<Item = S>,
        models: impl IntoIterator<Item = M>,
    ) {
        let s = &mut *self.state;
        s.begun = true;
        s.ended = false;
        s.sources = sources
            .into_iter()
            .map(|uri| SourceState {
                uri: uri.into(),
                counters: SourceCounters::default(),
            })
            .collect();
        s.models = models
            .into_iter()
            .map(|name| ModelState {
                name: name.into(),
                frames: 0,
                latency: Histogram::default(),
                dropped: None,
                faults: 0,
                readmissions: 0,
                backend: String::new(),
                precision: String::new(),
                fallback: None,
            })
            .collect();
        // Until the governor names its level, every model runs.
        s.level_models = Some(s.models.iter().map(|m| m.name.clone()).collect());
    }

    /// The package version (from its verified manifest; `None`: not run from a package).
    pub fn version(&mut self, version: Option<&str>) {
        self.state.version = version.map(str::to_string);
    }

    /// Model `index` runs on `backend` at `precision`; `fallback` says why a preferred backend
    /// did not load.
    pub fn model_backend(
        &mut self,
        index: usize,
        backend: &str,
        precision: &str,
        fallback: Option<&str>,
    ) {
        if let Some(m) = self.state.models.get_mut(index) {
            m.backend = backend.to_string();
            m.precision = precision.to_string();
            m.fallback = fallback.map(str::to_string);
        }
    }

    /// The run has ended (normally or not).
    pub fn end(&mut self) {
        self.state.ended = true;
    }

    /// One frame went through the ensemble and gave `detections` detections.
    pub fn frame(&mut self, detections: usize) {
        let now = self.now;
        let s = &mut *self.state;
        s.frames += 1;
        s.detections += detections as u64;
        s.last_frame = Some(now);
        s.paused = false;
        if let Some(from) = now.checked_sub(self.window) {
            while s.recent.front().is_some_and(|&t| t <= from) {
                s.recent.pop_front();
            }
        }
        if s.recent.len() == MAX_RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(now);
    }

    /// Capture paused (outside a capture window) or resumed; the stale wait restarts on resume.
    pub fn capturing(&mut self, capturing: bool) {
        if self.state.paused && capturing {
            self.state.resumed = Some(self.now);
        }
        self.state.paused = !capturing;
    }

    /// The ladder level in use (copies the name only when it changed).
    pub fn level(&mut self, index: usize, name: &str) {
        let s = &mut *self.state;
        s.level = Some(index);
        if s.level_name != name {
            name.clone_into(&mut s.level_name);
        }
    }

    /// The models the active ladder level runs (copied only when they changed).
    pub fn level_models<S: AsRef<str>>(&mut self, models: &[S]) {
        let s = &mut *self.state;
        let same = s.level_models.as_ref().is_some_and(|old| {
            old.len() == models.len() && old.iter().zip(models).all(|(a, b)| a == b.as_ref())
        });
        if !same {
            s.level_models = Some(models.iter().map(|m| m.as_ref().to_string()).collect());
        }
    }

    /// The counters of source `index` (as passed to `begin`).
    pub fn source(&mut self, index: usize, counters: SourceCounters) {
        if let Some(s) = self.state.sources.get_mut(index) {
            s.counters = counters;
        }
    }

    /// Model `index` ran one forward pass in `seconds`.
    pub fn model_pass(&mut self, index: usize, seconds: f64) {
        if let Some(m) = self.state.models.get_mut(index) {
            m.frames += 1;
            m.latency.observe(seconds);
        }
    }

    /// Model `index` is out of the ensemble after a failed pass (the reason is copied only when
    /// it changed).
    pub fn model_dropped(&mut self, index: usize, reason: &str) {
        if let Some(m) = self.state.models.get_mut(index)
            && m.dropped.as_deref() != Some(reason)
        {
            m.dropped = Some(reason.to_string());
        }
    }

    /// Model `index` as the ensemble has it now: out (with the reason) or running, its failed
    /// passes and re-admissions.
    pub fn model_state(&mut self, index: usize, out: Option<&str>, faults: u64, readmissions: u64) {
        match out {
            Some(reason) => self.model_dropped(index, reason),
            None => {
                if let Some(m) = self.state.models.get_mut(index) {
                    m.dropped = None;
                }
            }
        }
        if let Some(m) = self.state.models.get_mut(index) {
            m.faults = faults;
            m.readmissions = readmissions;
        }
    }

    /// Frames skipped so far because no model could run.
    pub fn unprocessed(&mut self, frames: u64) {
        self.state.frames_unprocessed = frames;
    }

    /// The log's and the snapshots' counters.
    pub fn output(&mut self, log: &LogCounters, snapshots: Option<&SnapshotCounters>) {
        let s = &mut *self.state;
        s.log.clone_from(log);
        match (snapshots, &mut s.snapshots) {
            (Some(new), Some(old)) => old.clone_from(new),
            (new, old) => *old = new.cloned(),
        }
    }

    /// The governor's figures: power, energy, level changes (and the level).
    pub fn governor(&mut self, g: &GovernorStats) {
        self.level(g.level, &g.level_name);
        let s = &mut *self.state;
        match &mut s.power {
            Some(p) => {
                p.last_w = g.last_w;
                p.average_w = g.average_w;
                p.energy_j = g.energy_j;
                p.cap_w = g.cap_w;
                p.level_changes = g.level_changes;
                if p.source != g.power_source {
                    g.power_source.clone_into(&mut p.source);
                }
            }
            None => {
                s.power = Some(PowerState {
                    last_w: g.last_w,
                    average_w: g.average_w,
                    energy_j: g.energy_j,
                    cap_w: g.cap_w,
                    level_changes: g.level_changes,
                    source: g.power_source.clone(),
                });
            }
        }
    }
}

#[cfg(feature = "gstreamer")]
mod run_loop;
#[cfg(feature = "gstreamer")]
pub(crate) use run_loop::Reporter;

mod exposition;
mod metrics;

mod gate;
pub use gate::Gate;

#[cfg(test)]
mod tests;
