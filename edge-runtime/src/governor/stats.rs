//! What the governor reports: level changes, sensor fallbacks and the running totals for
//! `/healthz` and the run summary.

use serde::Serialize;

use super::Watts;

/// One change of quality level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelChange {
    /// Seconds since the governor started.
    pub at_s: f64,
    pub from: usize,
    pub to: usize,
    pub from_name: String,
    pub to_name: String,
    /// Power the controller allowed when it decided.
    pub allowed_w: Watts,
    /// Predicted power of the new level.
    pub predicted_w: Watts,
}

/// The power sensor failed and the model estimate took over.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fallback {
    pub at_s: f64,
    /// The sensor that failed.
    pub source: String,
    pub reason: String,
    /// When the sensor read again, if it did.
    pub recovered_at_s: Option<f64>,
}

/// Seconds spent capturing at one level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelTime {
    pub name: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GovernorStats {
    pub elapsed_s: f64,
    /// Energy used since the start (J), sensor or estimate.
    pub energy_j: f64,
    pub average_w: Watts,
    /// Power at the last sample.
    pub last_w: Watts,
    pub cap_w: Watts,
    /// Power the controller last allowed while capturing (cap credit and budget pace).
    pub allowed_w: Watts,
    pub level: usize,
    pub level_name: String,
    /// Capture time per level, ladder order.
    pub level_seconds: Vec<LevelTime>,
    /// Time outside capture windows.
    pub paused_s: f64,
    pub level_changes: u64,
    pub last_change: Option<LevelChange>,
    pub frames: u64,
    /// When the last frame was recorded (seconds since the start): a stalled pipeline shows here.
    pub last_frame_at_s: Option<f64>,
    /// The source in use now: `ina3221`, `tegrastats`, `rapl` or `estimate`.
    pub power_source: String,
    /// Measured power over the model estimate (1.0 without a sensor).
    pub power_ratio: f64,
    pub fallbacks: Vec<Fallback>,
    pub budget_j: Option<f64>,
    pub budget_remaining_j: Option<f64>,
}
