//! Power sources: the Nano's INA3221 monitor through sysfs, tegrastats, Intel RAPL on x86 hosts,
//! and a model-based estimate from the profile where no sensor exists.
//!
//! Every path is resolved under a root directory (`/` on a device), so tests run against fake
//! sysfs trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Watts;
use super::tegrastats::Tegrastats;
use crate::error::{Error, Result};
use trident_core::profile::{PowerConfig, Profile, SourceChoice};

/// Something that reports the device's power draw.
pub trait PowerSource: Send {
    /// Short name for logs and `/healthz` (`ina3221`, `tegrastats`, `rapl`, `estimate`).
    fn name(&self) -> &str;

    /// Power in watts at `now` (seconds on the governor's clock): the average since the previous
    /// read for sources that integrate (RAPL, the estimate), the latest reading otherwise.
    fn read(&mut self, now: f64) -> Result<Watts>;
}

/// `path` (absolute, as on the device) inside `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn read_trimmed(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::Power(format!("cannot read {}: {e}", path.display())))
}

fn parse_integer(path: &Path, text: &str) -> Result<u64> {
    text.parse::<u64>().map_err(|_| {
        Error::Power(format!(
            "{}: expected an unsigned integer, found `{text}`",
            path.display()
        ))
    })
}

/// The INA3221 power monitor's channel file, in milliwatts (`in_power0_input` = POM_5V_IN on a
/// Nano with JetPack 4.6).
#[derive(Debug)]
pub struct Ina3221 {
    path: PathBuf,
}

impl Ina3221 {
    /// Opens the channel at `path` and checks that it reads.
    pub fn open(path: PathBuf) -> Result<Ina3221> {
        let mut sensor = Ina3221 { path };
        sensor.read(0.0)?;
        Ok(sensor)
    }

    /// The configured channel under `root`; if it is missing, channel 0 of the first device the
    /// `ina3221x` driver has bound (the bus address differs on some carrier boards).
    pub fn detect(root: &Path, configured: &Path) -> Result<Ina3221> {
        let first = Ina3221::open(under(root, configured));
        if first.is_ok() {
            return first;
        }
        let found = ina3221_devices(root)
            .into_iter()
            .map(|dev| dev.join("in_power0_input"))
            .find(|p| p.is_file());
        match found {
            Some(path) => Ina3221::open(path),
            None => first,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where the `ina3221x` driver is bound under `root`.
pub const INA3221_DRIVER: &str = "/sys/bus/i2c/drivers/ina3221x";

/// The IIO devices (`…/6-0040/iio:device0`) of every INA3221 the driver has bound under `root`,
/// sorted: each holds `rail_name_N` and `in_powerN_input` (mW) for its three channels.
pub fn ina3221_devices(root: &Path) -> Vec<PathBuf> {
    let driver = under(root, Path::new(INA3221_DRIVER));
    let mut found: Vec<PathBuf> = std::fs::read_dir(&driver)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|dev| {
            std::fs::read_dir(dev.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| e.file_name().to_string_lossy().starts_with("iio:device"))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

impl PowerSource for Ina3221 {
    fn name(&self) -> &str {
        "ina3221"
    }

    fn read(&mut self, _now: f64) -> Result<Watts> {
        let text = read_trimmed(&self.path)?;
        Ok(parse_integer(&self.path, &text)? as f64 / 1e3)
    }
}

/// Intel RAPL through powercap: an energy counter in µJ that wraps at `max_energy_range_uj`.
/// It measures the CPU package, not the whole machine. Since Linux 5.10 `energy_uj` is readable
/// by root only on most distributions; detection then moves on.
#[derive(Debug)]
pub struct Rapl {
    dir: PathBuf,
    max_range_uj: u64,
    last_uj: u64,
    last_t: f64,
    last_w: Option<Watts>,
}

impl Rapl {
    /// Opens the zone directory (holding `energy_uj` and `max_energy_range_uj`) at time `now`.
    pub fn open(dir: PathBuf, now: f64) -> Result<Rapl> {
        let range_path = dir.join("max_energy_range_uj");
        let max_range_uj = parse_integer(&range_path, &read_trimmed(&range_path)?)?;
        if max_range_uj == 0 {
            return Err(Error::Power(format!("{}: zero", range_path.display())));
        }
        let mut rapl = Rapl {
            dir,
            max_range_uj,
            last_uj: 0,
            last_t: now,
            last_w: None,
        };
        rapl.last_uj = rapl.energy_uj()?;
        Ok(rapl)
    }

    fn energy_uj(&self) -> Result<u64> {
        let path = self.dir.join("energy_uj");
        parse_integer(&path, &read_trimmed(&path)?)
    }
}

/// Energy between two readings of a counter that wraps to 0 after `max_range`.
pub fn counter_delta(previous: u64, current: u64, max_range: u64) -> u64 {
    if current >= previous {
        current - previous
    } else {
        max_range.saturating_sub(previous) + current
    }
}

impl PowerSource for Rapl {
    fn name(&self) -> &str {
        "rapl"
    }

    fn read(&mut self, now: f64) -> Result<Watts> {
        let dt = now - self.last_t;
        if dt <= 0.0 {
            return self
                .last_w
                .ok_or_else(|| Error::Power("rapl: no interval to average over yet".to_string()));
        }
        let uj = self.energy_uj()?;
        let delta = counter_delta(self.last_uj, uj, self.max_range_uj);
        let watts = delta as f64 / 1e6 / dt;
        (self.last_uj, self.last_t, self.last_w) = (uj, now, Some(watts));
        Ok(watts)
    }
}

/// The model-based estimate: idle power plus each model's active power times the share of time
/// it was busy (fed by [`PowerModel::add_busy`]).
#[derive(Clone, Debug)]
pub struct PowerModel {
    idle_w: Watts,
    active_w: BTreeMap<String, Watts>,
    busy_s: BTreeMap<String, f64>,
    last_t: f64,
    last_w: Watts,
}

impl PowerModel {
    pub fn from_profile(profile: &Profile, now: f64) -> PowerModel {
        PowerModel {
            idle_w: profile.estimates.idle_w,
            active_w: profile
                .estimates
                .models
                .iter()
                .map(|(name, m)| (name.clone(), m.active_w))
                .collect(),
            busy_s: BTreeMap::new(),
            last_t: now,
            last_w: profile.estimates.idle_w,
        }
    }

    /// `seconds` of work done by `model` since the last read.
    pub fn add_busy(&mut self, model: &str, seconds: f64) {
        if seconds.is_finite() && seconds > 0.0 {
            *self.busy_s.entry(model.to_string()).or_default() += seconds;
        }
    }
}

impl PowerSource for PowerModel {
    fn name(&self) -> &str {
        "estimate"
    }

    fn read(&mut self, now: f64) -> Result<Watts> {
        let dt = now - self.last_t;
        if dt <= 0.0 {
            return Ok(self.last_w);
        }
        // Work reported for this interval beyond its length (a frame that straddles two reads)
        // is carried into the next one.
        let total: f64 = self.busy_s.values().sum();
        let share = if total > dt { dt / total } else { 1.0 };
        let mut active = 0.0;
        for (model, busy) in self.busy_s.iter_mut() {
            let used = *busy * share;
            active += self.active_w.get(model).copied().unwrap_or(0.0) * used;
            *busy -= used;
        }
        self.busy_s.retain(|_, b| *b > 1e-12);
        self.last_w = self.idle_w + active / dt;
        self.last_t = now;
        Ok(self.last_w)
    }
}

/// The opened sensor (`None`: use the model estimate) and why each skipped one was skipped.
pub type OpenedSource = (Option<Box<dyn PowerSource>>, Vec<String>);

/// Opens the profile's power source under `root`. `auto` tries INA3221, tegrastats, RAPL in
/// that order and returns `None` (the model estimate) when none works; the second value lists
/// why each candidate was passed over. An explicit choice that fails is an error.
pub fn open_source(
    config: &PowerConfig,
    choice: SourceChoice,
    root: &Path,
    now: f64,
) -> Result<OpenedSource> {
    let try_one = |which: SourceChoice| -> Result<Box<dyn PowerSource>> {
        Ok(match which {
            SourceChoice::Ina3221 => Box::new(Ina3221::detect(root, &config.ina3221)?),
            SourceChoice::Tegrastats => Box::new(Tegrastats::spawn(&config.tegrastats, root, now)?),
            SourceChoice::Rapl => Box::new(Rapl::open(under(root, &config.rapl), now)?),
            SourceChoice::Auto | SourceChoice::Estimate => unreachable!("not a sensor"),
        })
    };
    match choice {
        SourceChoice::Estimate => Ok((None, Vec::new())),
        SourceChoice::Auto => {
            let mut skipped = Vec::new();
            for which in [
                SourceChoice::Ina3221,
                SourceChoice::Tegrastats,
                SourceChoice::Rapl,
            ] {
                match try_one(which) {
                    Ok(source) => return Ok((Some(source), skipped)),
                    Err(e) => {
                        let name = format!("{which:?}").to_lowercase();
                        skipped.push(format!("{name}: {e}"));
                    }
                }
            }
            Ok((None, skipped))
        }
        which => Ok((Some(try_one(which)?), Vec::new())),
    }
}

/// A reading that is not a finite, non-negative number is a failed reading.
pub(super) fn checked(reading: Result<Watts>) -> Result<Watts> {
    match reading {
        Ok(w) if w.is_finite() && w >= 0.0 => Ok(w),
        Ok(w) => Err(Error::Power(format!("implausible reading {w} W"))),
        Err(e) => Err(e),
    }
}
