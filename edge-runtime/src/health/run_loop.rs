//! What the run loop reports to [`Health`](super::Health), through [`Reporter`].

use super::{Health, SourceCounters};
use crate::governor::Governor;
use crate::output::log::DetectionLog;
use crate::output::snapshot::Snapshots;
use crate::source::{Source, SourceStats};
use trident_infer::ensemble::runner::{Ensemble, EnsembleOutput};

/// Governor figures (power, energy) are copied at least this often (seconds of the run
/// loop's clock) and on every level change: `Governor::stats` allocates.
const GOVERNOR_REPORT_S: f64 = 1.0;

impl From<&SourceStats> for SourceCounters {
    fn from(s: &SourceStats) -> Self {
        SourceCounters {
            frames: s.frames,
            dropped: s.dropped,
            errors: s.errors,
            reconnects: s.reconnects,
            stalls: s.stalls,
            skipped: s.skipped,
        }
    }
}

/// Writes the run's progress into the health state (nothing without one).
pub(crate) struct Reporter<'h> {
    health: Option<&'h Health>,
    /// When the governor's figures are due again (run-loop seconds).
    governor_due: f64,
    capturing: bool,
}

impl<'h> Reporter<'h> {
    pub(crate) fn begin(
        health: Option<&'h Health>,
        sources: &[Source],
        ensemble: &Ensemble,
        governor: &Governor,
    ) -> Self {
        if let Some(h) = health {
            let mut u = h.update();
            u.begin(
                sources.iter().map(|s| s.uri.to_string()),
                ensemble.members.iter().map(|m| m.name.as_str()),
            );
            for (k, m) in ensemble.members.iter().enumerate() {
                u.model_backend(k, m.backend.name(), &m.precision, m.fallback.as_deref());
            }
            u.governor(&governor.stats());
            u.level_models(&governor.level().models);
        }
        Reporter {
            health,
            governor_due: GOVERNOR_REPORT_S,
            capturing: true,
        }
    }

    /// One processed frame: its count, level (and the level's models) and each model's pass or
    /// drop.
    pub(crate) fn frame(&self, ensemble: &Ensemble, out: &EnsembleOutput, governor: &Governor) {
        let Some(h) = self.health else { return };
        let mut u = h.update();
        u.frame(out.fused.len());
        let level = governor.level();
        u.level(governor.level_index(), &level.name);
        u.level_models(&level.models);
        for (k, (m, ran)) in ensemble.members.iter().zip(&out.per_model).enumerate() {
            if ran.is_some() {
                u.model_pass(k, m.last_seconds);
            }
            u.model_state(k, m.failed.as_deref(), m.faults, m.readmissions);
        }
    }

    /// A frame no model could run: the count, and each model's state.
    pub(crate) fn unprocessed(&self, frames: u64, ensemble: &Ensemble) {
        let Some(h) = self.health else { return };
        let mut u = h.update();
        u.unprocessed(frames);
        for (k, m) in ensemble.members.iter().enumerate() {
            u.model_state(k, m.failed.as_deref(), m.faults, m.readmissions);
        }
    }

    /// What the log and the snapshots wrote.
    pub(crate) fn output(&self, log: &DetectionLog, snapshots: Option<&Snapshots>) {
        if let Some(h) = self.health {
            let snapshots = snapshots.map(Snapshots::counters);
            h.update().output(&log.counters(), snapshots.as_ref());
        }
    }

    /// Source `i`'s counters after a pull.
    pub(crate) fn source(&self, i: usize, source: &Source) {
        if let Some(h) = self.health {
            h.update().source(i, (&source.stats()).into());
        }
    }

    /// The governor's figures, when due or after a level change.
    pub(crate) fn governor(&mut self, t: f64, governor: &Governor, changed: bool) {
        if let Some(h) = self.health
            && (changed || t >= self.governor_due)
        {
            let mut u = h.update();
            u.governor(&governor.stats());
            u.level_models(&governor.level().models);
            self.governor_due = t + GOVERNOR_REPORT_S;
        }
    }

    pub(crate) fn capturing(&mut self, capturing: bool) {
        if let Some(h) = self.health
            && capturing != self.capturing
        {
            h.update().capturing(capturing);
        }
        self.capturing = capturing;
    }

    pub(crate) fn end(&self, sources: &[Source], ensemble: &Ensemble, governor: &Governor) {
        let Some(h) = self.health else { return };
        let mut u = h.update();
        for (i, s) in sources.iter().enumerate() {
            u.source(i, (&s.stats()).into());
        }
        for (k, m) in ensemble.members.iter().enumerate() {
            u.model_state(k, m.failed.as_deref(), m.faults, m.readmissions);
        }
        u.governor(&governor.stats());
        u.level_models(&governor.level().models);
        u.end();
    }
}
