//! The governor: picks the quality level each control period from the power cap, the energy
//! budget and the measured frame times, with hysteresis.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::Watts;
use super::power::{PowerModel, PowerSource, checked, open_source};
use super::schedule::{CaptureSchedule, CaptureState};
use super::stats::{Fallback, GovernorStats, LevelChange, LevelTime};
use crate::error::Result;
use trident_core::profile::{Level, Prediction, Profile, SourceChoice, predict};

/// Smoothing of measured latencies per frame, and of the power correction per sample.
const LATENCY_ALPHA: f64 = 0.2;
const RATIO_ALPHA: f64 = 0.05;
/// Share of the energy budget held back for prediction error.
const BUDGET_RESERVE: f64 = 0.02;
const EPS: f64 = 1e-9;

/// The energy/FPS governor. All times are seconds on one monotonic clock passed in by the
/// caller (`now`), so a simulation with a virtual clock behaves exactly like the device.
pub struct Governor {
    profile: Profile,
    schedule: CaptureSchedule,
    sensor: Option<Box<dyn PowerSource>>,
    on_fallback: bool,
    retry_at: f64,
    estimate: PowerModel,
    start: f64,
    last_sample: f64,
    next_control: f64,
    level: usize,
    level_since: f64,
    energy_j: f64,
    /// Power-cap integrator: ∫(cap − P) over capture time, clamped to ±cap·horizon.
    credit_j: f64,
    /// Measured seconds per pass, per model.
    latency_s: BTreeMap<String, f64>,
    /// Measured power over the model's estimate for the same interval.
    power_ratio: f64,
    /// Power while paused (W), measured on samples that are at least 90 % paused.
    paused_w: Watts,
    allowed_w: Watts,
    last_w: Watts,
    level_s: Vec<f64>,
    paused_s: f64,
    changes: u64,
    last_change: Option<LevelChange>,
    fallbacks: Vec<Fallback>,
    frames: u64,
    last_frame_at: Option<f64>,
    /// Models out of the ensemble after a failed pass: levels that need one are not chosen.
    models_out: BTreeSet<String>,
}

impl Governor {
    /// A governor starting at `now`; `sensor: None` runs on the model estimate. The profile is
    /// validated (profiles built in code have not been through [`Profile::load`]).
    pub fn new(
        profile: Profile,
        sensor: Option<Box<dyn PowerSource>>,
        now: f64,
    ) -> Result<Governor> {
        if let Err((field, message)) = profile.validate() {
            return Err(trident_core::Error::Located {
                path: format!("<profile {}>", profile.name).into(),
                line: 0,
                column: 0,
                message: format!("{field}: {message}"),
            }
            .into());
        }
        let schedule = match &profile.capture {
            Some(c) => CaptureSchedule::windows(c.window_s, c.period_s, now, c.offset_s),
            None => CaptureSchedule::always(),
        };
        let n = profile.ladder.len();
        let mut governor = Governor {
            estimate: PowerModel::from_profile(&profile, now),
            paused_w: profile.estimates.idle_w,
            allowed_w: profile.power.cap_w,
            last_w: profile.estimates.idle_w,
            schedule,
            sensor,
            on_fallback: false,
            retry_at: 0.0,
            start: now,
            last_sample: now,
            next_control: now,
            level: n - 1,
            level_since: now,
            energy_j: 0.0,
            credit_j: 0.0,
            latency_s: BTreeMap::new(),
            power_ratio: 1.0,
            level_s: vec![0.0; n],
            paused_s: 0.0,
            changes: 0,
            last_change: None,
            fallbacks: Vec::new(),
            frames: 0,
            last_frame_at: None,
            models_out: BTreeSet::new(),
            profile,
        };
        // The first level: the best one that fits with the upward margin.
        governor.allowed_w = governor.allowed_power(now);
        governor.level = governor.choose(usize::MAX);
        Ok(governor)
    }

    /// A governor with the power source the profile names (or `choice` overrides), detected
    /// under `root` (`/` on a device).
    pub fn detect(
        profile: Profile,
        choice: Option<SourceChoice>,
        root: &Path,
        now: f64,
    ) -> Result<Governor> {
        let choice = choice.unwrap_or(profile.power.source);
        let (sensor, skipped) = open_source(&profile.power, choice, root, now)?;
        for reason in &skipped {
            tracing::debug!("power source skipped: {reason}");
        }
        match &sensor {
            Some(s) => tracing::info!("power source: {}", s.name()),
            None if skipped.is_empty() => tracing::info!("power source: the model estimate"),
            None => tracing::warn!(
                "no power sensor ({}); using the model estimate from profile `{}`",
                skipped.join("; "),
                profile.name
            ),
        }
        Governor::new(profile, sensor, now)
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The level to run now: models, TTA and FPS cap.
    pub fn level(&self) -> &Level {
        &self.profile.ladder[self.level]
    }

    pub fn level_index(&self) -> usize {
        self.level
    }

    /// Frames per second for the pacer at the current level.
    pub fn fps(&self) -> f64 {
        self.profile.level_rate(self.level)
    }

    /// Changes the average power cap (e.g. on a low battery); takes effect at the next period.
    pub fn set_power_cap(&mut self, cap_w: Watts) {
        if cap_w.is_finite() && cap_w > 0.0 {
            self.profile.power.cap_w = cap_w;
        }
    }

    pub fn capture_state(&self, now: f64) -> CaptureState {
        self.schedule.state(now)
    }

    /// Reports a finished frame: seconds each model was busy on it (all TTA passes included).
    pub fn record_frame(&mut self, now: f64, busy: &[(&str, f64)]) {
        self.frames += 1;
        self.last_frame_at = Some(now);
        let passes = self.profile.passes(self.level);
        for &(model, seconds) in busy {
            self.estimate.add_busy(model, seconds);
            if seconds.is_finite() && seconds > 0.0 {
                let x = seconds / passes;
                self.latency_s
                    .entry(model.to_string())
                    .and_modify(|l| *l += LATENCY_ALPHA * (x - *l))
                    .or_insert(x);
            }
        }
    }

    /// The models out of the ensemble now (a failed pass, retried with backoff). While any is
    /// out, only levels whose models are all up are chosen; when the current level needs one, the
    /// level changes at once (no dwell: its frames would run without that model). When they
    /// return, the usual control period, dwell and margins lead back up. Returns the change made.
    pub fn set_models_out<S: AsRef<str>>(&mut self, now: f64, out: &[S]) -> Option<LevelChange> {
        let same = out.len() == self.models_out.len()
            && out.iter().all(|m| self.models_out.contains(m.as_ref()));
        if same {
            return None;
        }
        self.models_out = out.iter().map(|m| m.as_ref().to_string()).collect();
        // With no level whole, the current one runs with what is up.
        let n = self.profile.ladder.len();
        if self.level_up(self.level) || !(0..n).any(|i| self.level_up(i)) {
            return None;
        }
        let target = self.choose(self.level);
        if target == self.level {
            return None;
        }
        Some(self.change_to(now, target, "models out"))
    }

    /// Whether every model of level `i` is up.
    fn level_up(&self, i: usize) -> bool {
        self.profile.ladder[i]
            .models
            .iter()
            .all(|m| !self.models_out.contains(m))
    }

    /// Reads the power source and, once per control period, may change the level.
    pub fn tick(&mut self, now: f64) -> Option<LevelChange> {
        self.sample(now);
        if now + EPS < self.next_control {
            return None;
        }
        self.next_control = now + self.profile.control.period_s;
        self.allowed_w = self.allowed_power(now);
        if self.schedule.state(now) != CaptureState::Capturing {
            return None;
        }
        let target = self.choose(self.level);
        if target == self.level || now - self.level_since + EPS < self.profile.control.min_dwell_s {
            return None;
        }
        Some(self.change_to(now, target, "power"))
    }

    fn change_to(&mut self, now: f64, target: usize, why: &str) -> LevelChange {
        let change = LevelChange {
            at_s: now - self.start,
            from: self.level,
            to: target,
            from_name: self.profile.ladder[self.level].name.clone(),
            to_name: self.profile.ladder[target].name.clone(),
            allowed_w: self.allowed_w,
            predicted_w: self.predict(target).power,
        };
        tracing::info!(
            "governor: level {} → {} ({why}; allowed {:.2} W, predicted {:.2} W)",
            change.from_name,
            change.to_name,
            change.allowed_w,
            change.predicted_w
        );
        self.level = target;
        self.level_since = now;
        self.changes += 1;
        self.last_change = Some(change.clone());
        change
    }

    fn sample(&mut self, now: f64) {
        let dt = now - self.last_sample;
        if dt <= 0.0 {
            return;
        }
        let estimate = self.estimate.read(now).unwrap_or(self.last_w);
        let measured = match self.sensor.as_mut() {
            Some(sensor) if !self.on_fallback => match checked(sensor.read(now)) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(
                        "power sensor {} failed ({e}); falling back to the model estimate",
                        sensor.name()
                    );
                    self.fallbacks.push(Fallback {
                        at_s: now - self.start,
                        source: sensor.name().to_string(),
                        reason: e.to_string(),
                        recovered_at_s: None,
                    });
                    self.on_fallback = true;
                    self.retry_at = now + self.profile.control.sensor_retry_s;
                    None
                }
            },
            _ => None,
        };
        if self.on_fallback && self.profile.control.sensor_retry_s > 0.0 && now >= self.retry_at {
            self.retry_sensor(now);
        }
        let capturing = self.schedule.capturing_between(self.last_sample, now);
        let watts = match measured {
            Some(w) => {
                if capturing >= dt - EPS && estimate > 0.0 {
                    let r = (w / estimate).clamp(0.5, 2.0);
                    self.power_ratio += RATIO_ALPHA * (r - self.power_ratio);
                }
                w
            }
            // The estimate carries the correction learned while the sensor worked.
            None => estimate * self.power_ratio,
        };
        if capturing <= 0.1 * dt {
            self.paused_w += 0.2 * (watts - self.paused_w);
        }
        let cap = self.profile.power.cap_w;
        let bound = cap * self.profile.control.cap_horizon_s;
        self.credit_j = (self.credit_j + (cap - watts) * capturing).clamp(-bound, bound);
        self.energy_j += watts * dt;
        self.level_s[self.level] += capturing;
        self.paused_s += dt - capturing;
        self.last_w = watts;
        self.last_sample = now;
    }

    fn retry_sensor(&mut self, now: f64) {
        let Some(sensor) = self.sensor.as_mut() else {
            return;
        };
        // A good reading is discarded: it may average over the time the estimate covered.
        match checked(sensor.read(now)) {
            Ok(_) => {
                tracing::info!("power sensor {} is back", sensor.name());
                self.on_fallback = false;
                if let Some(f) = self.fallbacks.last_mut() {
                    f.recovered_at_s = Some(now - self.start);
                }
            }
            Err(_) => self.retry_at = now + self.profile.control.sensor_retry_s,
        }
    }

    /// Power (W) the pipeline may draw while capturing: the cap plus saved credit, and the
    /// budget's pace (remaining energy, less the pauses' share, over the remaining capture time).
    fn allowed_power(&self, now: f64) -> Watts {
        let cap = &self.profile.power;
        let by_cap = cap.cap_w + self.credit_j / self.profile.control.cap_horizon_s;
        let Some(budget) = &self.profile.budget else {
            return by_cap;
        };
        let budget_j = budget.energy_wh * 3600.0;
        let end = self.start + budget.duration_h * 3600.0;
        let capture_left = self.schedule.capturing_between(now, end);
        let pause_left = (end - now).max(0.0) - capture_left;
        if capture_left <= EPS {
            return 0.0;
        }
        let spendable = budget_j * (1.0 - BUDGET_RESERVE) - self.energy_j;
        let by_budget = (spendable - self.paused_w * pause_left) / capture_left;
        by_cap.min(by_budget)
    }

    /// Seconds per pass of `model`: measured, else the profile's estimate scaled by how far the
    /// measured models are off their estimates.
    fn latency(&self, model: &str) -> f64 {
        if let Some(&l) = self.latency_s.get(model) {
            return l;
        }
        let ratios: Vec<f64> = self
            .latency_s
            .iter()
            .filter(|(m, _)| self.profile.model_latency_s(m) > 0.0)
            .map(|(m, l)| l / self.profile.model_latency_s(m))
            .collect();
        let scale = if ratios.is_empty() {
            1.0
        } else {
            ratios.iter().sum::<f64>() / ratios.len() as f64
        };
        self.profile.model_latency_s(model) * scale
    }

    /// What level `i` is expected to cost now.
    pub fn predict(&self, i: usize) -> Prediction {
        predict(&self.profile, i, |m| self.latency(m), self.power_ratio)
    }

    /// The best level that fits the allowed power and its own frame rate, among the levels whose
    /// models are all up (all levels when none is). A better level than `current` needs
    /// `up_margin` headroom; `current` may overshoot by `down_margin`.
    fn choose(&self, current: usize) -> usize {
        let c = &self.profile.control;
        let n = self.profile.ladder.len();
        let mut candidates: Vec<usize> = (0..n).filter(|&i| self.level_up(i)).collect();
        if candidates.is_empty() {
            candidates = (0..n).collect();
        }
        let last = candidates[candidates.len() - 1];
        candidates
            .into_iter()
            .find(|&i| {
                let p = self.predict(i);
                let load = p.frame_s * self.profile.level_rate(i);
                let (need, slack) = match i.cmp(&current) {
                    std::cmp::Ordering::Less => (1.0 + c.up_margin, 1.0),
                    std::cmp::Ordering::Equal => (1.0, 1.0 + c.down_margin),
                    std::cmp::Ordering::Greater => (1.0, 1.0),
                };
                p.power * need <= self.allowed_w * slack && load * need <= slack
            })
            .unwrap_or(last)
    }

    /// Figures for `/healthz` and the run summary, as of the last `tick`.
    pub fn stats(&self) -> GovernorStats {
        let elapsed_s = self.last_sample - self.start;
        let budget_j = self.profile.budget.as_ref().map(|b| b.energy_wh * 3600.0);
        GovernorStats {
            elapsed_s,
            energy_j: self.energy_j,
            average_w: if elapsed_s > 0.0 {
                self.energy_j / elapsed_s
            } else {
                0.0
            },
            last_w: self.last_w,
            cap_w: self.profile.power.cap_w,
            allowed_w: self.allowed_w,
            level: self.level,
            level_name: self.level().name.clone(),
            level_seconds: self
                .profile
                .ladder
                .iter()
                .zip(&self.level_s)
                .map(|(l, &seconds)| LevelTime {
                    name: l.name.clone(),
                    seconds,
                })
                .collect(),
            paused_s: self.paused_s,
            level_changes: self.changes,
            last_change: self.last_change.clone(),
            frames: self.frames,
            last_frame_at_s: self.last_frame_at.map(|t| t - self.start),
            power_source: match (&self.sensor, self.on_fallback) {
                (Some(s), false) => s.name().to_string(),
                _ => "estimate".to_string(),
            },
            power_ratio: self.power_ratio,
            fallbacks: self.fallbacks.clone(),
            budget_j,
            budget_remaining_j: budget_j.map(|b| b - self.energy_j),
        }
    }
}
