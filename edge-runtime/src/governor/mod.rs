//! The energy/FPS governor of the edge runtime.
//!
//! A deployment [`Profile`] (`configs/profiles/*.yaml`) sets a target FPS, an average power cap,
//! an optional energy budget over a mission, optional capture windows and a quality ladder (e.g.
//! three models + TTA → three models → two → `balanced` → `balanced` at a lower FPS). The
//! [`Governor`] picks the best level that meets the level's frame rate and the power it may
//! draw, with a minimum dwell time and separate up/down margins; a [`Pacer`] spaces frames.
//!
//! The runtime loop, per frame:
//!
//! ```text
//! if let PausedUntil(t) = governor.capture_state(now) {
//!     governor.tick(now); sleep until t; governor.tick(t); pacer.reset(); continue;
//! }
//! pacer.set_fps(governor.fps()); sleep(pacer.delay(now));
//! let level = governor.level();                  // models, TTA, FPS cap
//! … run the models …
//! governor.record_frame(now, &[("balanced", 0.031), …]);   // busy seconds per model
//! governor.tick(now);                            // reads power; may change level each period
//! ```
//!
//! Time is `f64` seconds on one monotonic clock, passed in: nothing here reads the system clock,
//! so simulations with a virtual clock are deterministic.
//!
//! `tick` may be called every frame (it samples power each call and decides once per
//! `control.period_s`). RAPL and the estimate average over the interval between calls; INA3221
//! and tegrastats give the power at the moment of the call, so with them `tick` should not always
//! run at the same point of the frame cycle (e.g. call it from a timer, or every frame rather than
//! once per period), or the samples see only the gaps between frames.

mod controller;
mod power;
mod schedule;
mod stats;
mod tegrastats;

#[cfg(test)]
mod tests_power;

pub use controller::Governor;
pub use power::{
    INA3221_DRIVER, Ina3221, OpenedSource, PowerModel, PowerSource, Rapl, counter_delta,
    ina3221_devices, open_source, under,
};
pub use schedule::{CaptureSchedule, CaptureState, Pacer};
pub use stats::{Fallback, GovernorStats, LevelChange, LevelTime};
pub use tegrastats::{Tegrastats, parse_rail};
/// The governor's input: the deployment profile, a shipped format of `trident-core`.
pub use trident_core::profile::{
    CaptureWindows, ControlConfig, EnergyBudget, Estimates, Level, MeasuredBy, ModelEstimate,
    NANO_INA3221_PATH, PowerConfig, Prediction, Profile, RAPL_DIR, SourceChoice, TEGRASTATS_BINARY,
    TegrastatsConfig, Watts, predict,
};
