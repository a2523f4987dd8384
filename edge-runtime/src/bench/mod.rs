//! `trident-edge bench`: measured latency, FPS and energy per frame on the unit itself.
//!
//! A run measures, on frames from a real source: idle power; each model alone (latency
//! p50/p95/p99 split into letterbox, forward pass and decoding, power, the cost of test-time
//! views); then the ensemble at every selected ladder level, unpaced (FPS end to end and what
//! the processing alone allows, capture/infer/fusion times, power and joules per frame, peak
//! memory, dropped frames). The result is a [`BenchReport`] (`bench.json`, schema
//! `trident-bench/1`), a Markdown summary and PNG charts ([`render`]), and on request a
//! deployment profile whose estimates are the measured figures ([`measured_profile`]).
//!
//! Power comes from the profile's sensor choice (INA3221 → tegrastats → RAPL with `auto`); with
//! none, figures are estimated from the profile's power model and the report says so.

pub mod device;
pub mod measured_profile;
// Only the GStreamer-driven runner meters a run (and meter's own tests).
#[cfg(any(feature = "gstreamer", test))]
mod meter;
pub mod render;
#[cfg(feature = "gstreamer")]
mod runner;

#[cfg(feature = "gstreamer")]
pub use runner::{LevelChoice, LevelSpec, Plan, ladder, total_frames};

#[cfg(feature = "gstreamer")]
pub use run::{BenchRequest, run};

#[cfg(feature = "gstreamer")]
mod run {
    use std::time::{SystemTime, UNIX_EPOCH};

    use indicatif::ProgressBar;
    use trident_core::bench::{BenchReport, BenchSetup, SCHEMA};

    use super::meter::Meter;
    use super::runner::{Plan, Rig, measure};
    use crate::error::Result;
    use crate::governor::{PowerConfig, Profile, open_source};
    use crate::source::Source;
    use trident_infer::ensemble::runner::Ensemble;

    /// Everything a benchmark run needs.
    pub struct BenchRequest<'a> {
        pub ensemble: &'a mut Ensemble,
        pub source: &'a mut Source,
        /// The deployment profile: ladder, sensor choice, and the power model used without a
        /// sensor. `None`: the built-in ladder and sensor auto-detection.
        pub profile: Option<&'a Profile>,
        pub plan: Plan,
        /// What the caller knows (source, frames, package, models folder, calibration);
        /// the frame size and power source are filled in here.
        pub setup: BenchSetup,
        /// The GStreamer library's version, as the runtime sees it.
        pub gstreamer: Option<String>,
        pub progress: &'a ProgressBar,
    }

    /// Runs the benchmark and returns its report (nothing is written here).
    pub fn run(req: BenchRequest<'_>) -> Result<BenchReport> {
        let BenchRequest {
            ensemble,
            source,
            profile,
            plan,
            mut setup,
            gstreamer,
            progress,
        } = req;
        let started = SystemTime::now();
        let root = plan.system_root.clone();
        let power = profile.map_or_else(PowerConfig::auto, |p| p.power.clone());
        let (sensor, skipped) = open_source(&power, power.source, &root, 0.0)?;
        let meter = Meter::start(sensor, root.clone());
        setup.power_source = match (meter.sensor(), profile) {
            (Some(s), _) => s.to_string(),
            (None, Some(_)) => "estimate".into(),
            (None, None) => "none".into(),
        };
        setup.power_measured = meter.sensor().is_some();
        let device = super::device::probe(&root, gstreamer);
        let mut rig = Rig {
            ensemble,
            source,
            meter: &meter,
            profile,
            progress,
        };
        let measured = measure(&mut rig, &plan, &mut setup)?;
        let mut notes = measured.notes;
        if meter.sensor().is_none() && !skipped.is_empty() {
            notes.push(format!("power sensors tried: {}", skipped.join("; ")));
        }
        if let Some(e) = meter.last_error() {
            notes.push(format!("the power sensor failed some readings: {e}"));
        }
        let unix = started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(BenchReport {
            schema: SCHEMA.into(),
            started_unix_s: unix,
            started: humantime::format_rfc3339_seconds(started).to_string(),
            tool: format!(
                "trident-edge {} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("TRIDENT_EDGE_TARGET")
            ),
            device,
            setup,
            idle: measured.idle,
            models: measured.models,
            levels: measured.levels,
            notes,
        })
    }
}
