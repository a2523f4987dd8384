//! The deployment profile (schema `trident-profile/1`): what the edge runtime's governor aims for
//! (FPS, power cap, energy budget, capture windows), the quality ladder it may move along, and
//! the per-model estimates behind its predictions. One YAML file per deployment in
//! `configs/profiles/`, shipped in every package and rewritten by `trident-edge bench
//! --write-profile`.
//!
//! Compatibility: files without `schema:` (written before it existed) load as version 1; fields
//! are only ever added with defaults within version 1. Errors name `file:line:column: field`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[cfg(test)]
mod tests;
mod validate;

/// The schema tag written to every profile (and accepted when absent).
pub const SCHEMA: &str = "trident-profile/1";

/// Power in watts.
pub type Watts = f64;

/// Default INA3221 channel on a Jetson Nano running JetPack 4.6 (L4T R32.x): `in_power0_input` is
/// the POM_5V_IN rail (the whole module), in milliwatts.
pub const NANO_INA3221_PATH: &str =
    "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input";
/// Package 0 of Intel RAPL through the powercap framework.
pub const RAPL_DIR: &str = "/sys/class/powercap/intel-rapl:0";
/// Where JetPack installs tegrastats.
pub const TEGRASTATS_BINARY: &str = "/usr/bin/tegrastats";

/// A deployment profile (`configs/profiles/<name>.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `trident-profile/1`; absent in files older than the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Frames per second the pipeline aims for; each level's `fps` caps it further.
    pub target_fps: f64,
    /// Inference backends in order of preference (`tensorrt`, `onnxruntime`, `tract`);
    /// `--backend` overrides it; empty: onnxruntime, then tract.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    pub power: PowerConfig,
    /// Energy for the whole mission; absent: only the power cap applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<EnergyBudget>,
    /// Duty cycle of the pipeline; absent: it runs all the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureWindows>,
    #[serde(default)]
    pub control: ControlConfig,
    pub estimates: Estimates,
    /// Quality levels, best (most expensive) first.
    pub ladder: Vec<Level>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerConfig {
    /// Average power limit (W) while the pipeline runs, averaged over `control.cap_horizon_s`.
    pub cap_w: Watts,
    /// Which power source to use; `auto` tries INA3221, tegrastats, RAPL, then the estimate.
    #[serde(default)]
    pub source: SourceChoice,
    /// The INA3221 channel file (mW).
    #[serde(default = "default_ina3221")]
    pub ina3221: PathBuf,
    #[serde(default)]
    pub tegrastats: TegrastatsConfig,
    /// The RAPL powercap zone (a directory holding `energy_uj` and `max_energy_range_uj`).
    #[serde(default = "default_rapl")]
    pub rapl: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceChoice {
    #[default]
    Auto,
    Ina3221,
    Tegrastats,
    Rapl,
    Estimate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TegrastatsConfig {
    pub binary: PathBuf,
    /// The rail to read: `POM_5V_IN` on a Nano (JetPack 4), `VDD_IN` on later modules.
    pub rail: String,
    pub interval_ms: u32,
    /// The log file tegrastats writes (`--logfile`); absent: one in the temporary directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logfile: Option<PathBuf>,
}

impl Default for TegrastatsConfig {
    fn default() -> Self {
        TegrastatsConfig {
            binary: TEGRASTATS_BINARY.into(),
            rail: "POM_5V_IN".into(),
            interval_ms: 1000,
            logfile: None,
        }
    }
}

impl PowerConfig {
    /// Sensor detection with the default paths (`source: auto`) and no meaningful cap: for
    /// tools that only read power, such as `trident-edge bench` without a profile.
    pub fn auto() -> PowerConfig {
        PowerConfig {
            cap_w: f64::INFINITY,
            source: SourceChoice::Auto,
            ina3221: default_ina3221(),
            tegrastats: TegrastatsConfig::default(),
            rapl: default_rapl(),
        }
    }
}

fn default_ina3221() -> PathBuf {
    NANO_INA3221_PATH.into()
}

fn default_rapl() -> PathBuf {
    RAPL_DIR.into()
}

/// `energy_wh` to spend over `duration_h` from the governor's start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyBudget {
    pub energy_wh: f64,
    pub duration_h: f64,
}

/// Capture for `window_s` every `period_s` (from `offset_s` after the start); paused in between.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureWindows {
    pub window_s: f64,
    pub period_s: f64,
    #[serde(default)]
    pub offset_s: f64,
}

/// How the controller behaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Seconds between control decisions.
    pub period_s: f64,
    /// Minimum seconds between two level changes.
    pub min_dwell_s: f64,
    /// A better level is taken only if it fits with this relative headroom (0.1 = 10 %).
    pub up_margin: f64,
    /// The current level is kept while it overshoots by at most this fraction.
    pub down_margin: f64,
    /// Memory of the power-cap integrator: energy saved below the cap is spent within this long.
    pub cap_horizon_s: f64,
    /// While on the fallback estimate, retry the sensor this often (0: never).
    pub sensor_retry_s: f64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            period_s: 1.0,
            min_dwell_s: 10.0,
            up_margin: 0.10,
            down_margin: 0.02,
            cap_horizon_s: 60.0,
            sensor_retry_s: 30.0,
        }
    }
}

/// The power/latency model: measured by `trident-edge bench --write-profile`, derived from
/// published figures until then (configs/profiles/README.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estimates {
    /// Whole-device power with the pipeline idle or paused (W).
    pub idle_w: Watts,
    /// Cost of test-time augmentation as a multiple of one plain pass.
    pub tta_factor: f64,
    /// Per model (by variant name).
    pub models: BTreeMap<String, ModelEstimate>,
    /// Set when the figures were measured on a unit (`trident-edge bench --write-profile`);
    /// absent: derived from published figures (configs/profiles/README.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<MeasuredBy>,
}

/// Where measured estimates come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredBy {
    /// `trident-edge 0.1.0 bench`.
    pub by: String,
    /// RFC 3339 time of the benchmark.
    pub at: String,
    /// Board and host name of the unit.
    pub device: String,
    /// The power source of the figures (`ina3221`, …; `estimate`: power kept from the profile).
    pub power: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEstimate {
    /// One inference (pre- and post-processing included), in milliseconds.
    pub latency_ms: f64,
    /// Power above idle while this model runs (W).
    pub active_w: Watts,
}

/// One rung of the quality ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub name: String,
    /// Models run on every frame, by variant (`high_recall`, `balanced`, `high_precision`).
    pub models: Vec<String>,
    #[serde(default)]
    pub tta: bool,
    /// Frame-rate cap of this level.
    pub fps: f64,
}

impl Profile {
    /// Reads, parses and validates a profile; errors name `file:line:col` and the field.
    pub fn load(path: &Path) -> Result<Profile> {
        Profile::parse(&crate::error::read_to_string(path)?, path)
    }

    /// Parses and validates profile text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Profile> {
        let profile: Profile = crate::yaml::parse_located(text, path)?;
        if let Err((field, message)) = profile.validate() {
            return Err(crate::yaml::invalid_field(text, path, &field, &message));
        }
        Ok(profile)
    }

    /// The profile as YAML with its schema tag (what `trident-edge bench --write-profile`
    /// writes).
    pub fn to_yaml(&self) -> Result<String> {
        let tagged = Profile {
            schema: Some(SCHEMA.into()),
            ..self.clone()
        };
        serde_saphyr::to_string(&tagged).map_err(|e| Error::Located {
            path: PathBuf::from(format!("<profile {}>", self.name)),
            line: 0,
            column: 0,
            message: format!("cannot write YAML: {e}"),
        })
    }

    /// Checks that every ladder level runs only models in `loaded` (the models folder, the
    /// package, the loaded ensemble); the error points at the level's model in `source` (the
    /// profile file, read again to locate it) and lists what is loaded. Every user of a profile
    /// with models (`trident-edge run` and `bench`, the package builder) checks through here.
    pub fn check_models(&self, source: &Path, loaded: &[&str]) -> Result<()> {
        for (i, level) in self.ladder.iter().enumerate() {
            for (j, m) in level.models.iter().enumerate() {
                if loaded.contains(&m.as_str()) {
                    continue;
                }
                let message = format!(
                    "level `{}` runs `{m}`, which is not among the models ({})",
                    level.name,
                    loaded.join(", ")
                );
                let field = format!("ladder[{i}].models[{j}]");
                let text = std::fs::read_to_string(source).unwrap_or_default();
                return Err(crate::yaml::invalid_field(&text, source, &field, &message));
            }
        }
        Ok(())
    }

    /// Checks the profile; the error is (field path, message), e.g. `("ladder[2].fps", …)`.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        validate::validate(self)
    }

    /// Frames per second the level runs at: its cap, bounded by the profile's target.
    pub fn level_rate(&self, level: usize) -> f64 {
        self.ladder[level].fps.min(self.target_fps)
    }

    /// Estimated seconds of one inference of `model` (one plain pass).
    pub fn model_latency_s(&self, model: &str) -> f64 {
        self.estimates
            .models
            .get(model)
            .map_or(0.0, |m| m.latency_ms / 1e3)
    }

    /// Estimated power (W) above idle while `model` runs.
    pub fn model_active_w(&self, model: &str) -> Watts {
        self.estimates.models.get(model).map_or(0.0, |m| m.active_w)
    }

    /// Passes per frame of a level: `tta_factor` with TTA, 1 without.
    pub fn passes(&self, level: usize) -> f64 {
        if self.ladder[level].tta {
            self.estimates.tta_factor
        } else {
            1.0
        }
    }

    /// Fits the ladder to the calibration tables: TTA levels cost what the tables measured
    /// (`cost` passes per frame). When the tables keep no TTA view (`!has_views`), a `tta: true`
    /// level would run exactly its plain twin, usually at a lower frame rate, so it is dropped
    /// (unless every level is one). Returns the names of the dropped levels.
    pub fn fit_tta(&mut self, cost: f64, has_views: bool) -> Vec<String> {
        self.estimates.tta_factor = cost.max(1.0);
        if has_views || self.ladder.iter().all(|l| l.tta) {
            return Vec::new();
        }
        let dropped = self
            .ladder
            .iter()
            .filter(|l| l.tta)
            .map(|l| l.name.clone())
            .collect();
        self.ladder.retain(|l| !l.tta);
        dropped
    }

    /// Predicted power of a level from the profile's estimates alone (the same model the
    /// governor corrects online with measured latencies and power).
    pub fn predicted_power(&self, level: usize) -> Watts {
        predict(self, level, |m| self.model_latency_s(m), 1.0).power
    }
}

/// What a level is expected to cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Seconds of model work per frame.
    pub frame_s: f64,
    /// Frames per second it can actually run at (its rate, or less when frames take too long).
    pub fps: f64,
    /// Average power while capturing (W).
    pub power: Watts,
}

/// Predicts a level with the given per-model latency (seconds per pass) and a multiplicative
/// correction of the power model (1.0 = the profile as written).
pub fn predict(
    profile: &Profile,
    level: usize,
    latency_s: impl Fn(&str) -> f64,
    power_ratio: f64,
) -> Prediction {
    let passes = profile.passes(level);
    let models = &profile.ladder[level].models;
    let frame_s: f64 = models.iter().map(|m| latency_s(m) * passes).sum();
    let rate = profile.level_rate(level);
    let fps = if frame_s > 0.0 {
        rate.min(1.0 / frame_s)
    } else {
        rate
    };
    let active: f64 = models
        .iter()
        .map(|m| profile.model_active_w(m) * fps * latency_s(m) * passes)
        .sum();
    Prediction {
        frame_s,
        fps,
        power: (profile.estimates.idle_w + active) * power_ratio,
    }
}
