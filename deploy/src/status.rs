//! `trident deploy status`: what each unit runs and how it is doing, in one SSH round trip per
//! unit: the current release, the deploy journal (a rollback shows here), the nvpmodel power
//! mode, and the runtime's own `/healthz` report (fps, ladder level, power draw) fetched on the
//! unit by `trident-edge health --json`. "Last seen" is kept on this host: the last time a
//! unit answered any trident command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::ssh::Ssh;

/// The runtime's health as the unit's `/healthz` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// `/healthz` answered 200.
    Ok,
    /// It answered, not ok (see `problems`).
    Unhealthy,
    /// Nothing answered on the unit's health address.
    NoAnswer,
    /// The unit could not be reached, or runs no release.
    Unknown,
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Unhealthy => "UNHEALTHY",
            Health::NoAnswer => "no answer",
            Health::Unknown => "?",
        }
    }
}

/// One unit's status.
#[derive(Clone, Debug, Serialize)]
pub struct UnitStatus {
    pub unit: String,
    pub host: String,
    pub reachable: bool,
    /// The release `current` points at.
    pub release: Option<String>,
    /// The deploy journal's state: `committed`, `rolled-back` or `switching` (interrupted).
    pub deploy_state: Option<String>,
    /// The release a rollback left (journal `failed=`).
    pub failed_release: Option<String>,
    /// What the unit's history says of `release`: `good` (it passed its gate), `pending` (a
    /// deploy has not finished with it) or `failed`; `None` on a unit deployed before the
    /// history existed.
    pub release_state: Option<String>,
    /// The unit's release history, oldest first (`good 1.0.0`, `failed 1.1.0`).
    pub history: Vec<String>,
    /// Who holds the unit's deploy lock, while one is held.
    pub locked_by: Option<String>,
    /// The package version the running process reports (`/healthz`).
    pub running_version: Option<String>,
    pub health: Health,
    pub problems: Vec<String>,
    /// Faults the runtime detects through (`/healthz` `warnings`): a log that cannot be written,
    /// models out of the ensemble.
    pub warnings: Vec<String>,
    pub fps: Option<f64>,
    /// Frames processed and detections reported since the service started.
    pub frames: Option<u64>,
    pub detections: Option<u64>,
    /// Each model's backend and precision (`balanced=tensorrt/fp16`), in ensemble order.
    pub backends: Vec<String>,
    /// Models that run on a later backend than the preferred one, with why (a unit whose
    /// profile asks for TensorRT and that ends on the CPU).
    pub fallbacks: Vec<String>,
    /// Ladder level (0 is the best) and its name.
    pub level: Option<usize>,
    pub level_name: Option<String>,
    /// nvpmodel's mode name (`MAXN`, `5W`).
    pub power_mode: Option<String>,
    /// The governor's last power sample, watts.
    pub power_w: Option<f64>,
    pub uptime_s: Option<f64>,
    /// Seconds since the Unix epoch when the unit last answered (now, when reachable).
    pub last_seen: Option<u64>,
    /// Why the unit could not be read.
    pub error: Option<String>,
}

/// `$1` root, `$2` health address. Lines are `key=value`.
const STATUS: &str = r#"set -u
T="$1/opt/trident"
if [ -L "$T/current" ]; then echo "current=$(basename "$(readlink "$T/current")")"; fi
if [ -r "$T/deploy-journal" ]; then sed 's/^/journal./' "$T/deploy-journal"; fi
if [ -r "$T/history" ]; then sed 's/^/history=/' "$T/history"; fi
if [ -e "$T/deploy.lock" ] && command -v flock > /dev/null 2>&1 && ! flock -n "$T/deploy.lock" true 2>/dev/null; then
  echo "locked-by=$(cat "$T/deploy.lock.owner" 2>/dev/null)"
fi
if command -v nvpmodel >/dev/null 2>&1; then
  echo "power=$(nvpmodel -q 2>/dev/null | sed -n 's/^NV Power Mode: *//p' | head -n 1)"
fi
if [ -x "$T/current/bin/trident-edge" ]; then
  h=$("$T/current/bin/trident-edge" health --json --addr "$2" 2>&1)
  echo "health-exit=$?"
  printf 'health=%s\n' "$(printf '%s' "$h" | tr '\n' ' ')"
fi
"#;

/// The fields of `/healthz` status shows.
#[derive(Deserialize)]
struct HealthReport {
    ok: bool,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    problems: Vec<String>,
    #[serde(default)]
    warnings: Vec<String>,
    fps: Option<f64>,
    frames: Option<u64>,
    detections: Option<u64>,
    #[serde(default)]
    models: Vec<ModelBackend>,
    level: Option<usize>,
    level_name: Option<String>,
    power_w: Option<f64>,
    uptime_s: Option<f64>,
}

/// One entry of `/healthz`'s `models`.
#[derive(Deserialize)]
struct ModelBackend {
    model: String,
    backend: String,
    precision: String,
    #[serde(default)]
    fallback: Option<String>,
}

/// Reads one unit's status; an unreachable unit is a status, not an error.
pub fn read(ssh: &Ssh, unit: &Unit) -> UnitStatus {
    let mut status = UnitStatus {
        unit: unit.name.clone(),
        host: unit.host.clone(),
        reachable: false,
        release: None,
        deploy_state: None,
        failed_release: None,
        release_state: None,
        history: vec![],
        locked_by: None,
        running_version: None,
        health: Health::Unknown,
        problems: vec![],
        warnings: vec![],
        fps: None,
        frames: None,
        detections: None,
        backends: vec![],
        fallbacks: vec![],
        level: None,
        level_name: None,
        power_mode: None,
        power_w: None,
        uptime_s: None,
        last_seen: None,
        error: None,
    };
    let out = match ssh.script(
        unit,
        "status",
        STATUS,
        &[&unit.root, &unit.health_addr.to_string()],
    ) {
        Ok(out) => out,
        Err(e) => {
            status.error = Some(e.to_string());
            return status;
        }
    };
    status.reachable = true;
    status.last_seen = Some(unix_now());
    let fields: BTreeMap<&str, &str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    status.history = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("history="))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    status.release = text("current");
    status.deploy_state = text("journal.state");
    status.failed_release = text("journal.failed");
    status.locked_by = text("locked-by");
    status.release_state = status.release.as_ref().and_then(|r| {
        status
            .history
            .iter()
            .rev()
            .filter_map(|l| l.split_once(' '))
            .find(|(_, v)| v == r)
            .map(|(s, _)| s.to_string())
    });
    status.power_mode = text("power");
    if let Some(body) = text("health") {
        match serde_json::from_str::<HealthReport>(&body) {
            Ok(report) => {
                status.health = if report.ok && text("health-exit").as_deref() == Some("0") {
                    Health::Ok
                } else {
                    Health::Unhealthy
                };
                status.problems = report.problems;
                status.warnings = report.warnings;
                status.running_version = report.version;
                if let (Some(running), Some(release)) = (&status.running_version, &status.release)
                    && running != release
                {
                    // `current` moved but the process did not (or the other way round).
                    status.health = Health::Unhealthy;
                    status.problems.push(format!(
                        "the running process reports {running}, current is {release}"
                    ));
                }
                status.fps = report.fps;
                status.frames = report.frames;
                status.detections = report.detections;
                status.backends = report
                    .models
                    .iter()
                    .map(|m| format!("{}={}/{}", m.model, m.backend, m.precision))
                    .collect();
                status.fallbacks = report
                    .models
                    .iter()
                    .filter_map(|m| {
                        let why = m.fallback.as_ref()?;
                        Some(format!("{} on {}: {why}", m.model, m.backend))
                    })
                    .collect();
                status.level = report.level;
                status.level_name = report.level_name;
                status.power_w = report.power_w;
                status.uptime_s = report.uptime_s;
            }
            Err(_) => {
                status.health = Health::NoAnswer;
                status.problems = vec![body];
            }
        }
    }
    status
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// `2026-11-22T10:04:05Z` for seconds since the epoch.
pub fn rfc3339(unix_s: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_s)).to_string()
}

/// "42 s ago", "3 min ago", "5 h ago", "2 d ago".
pub fn ago(unix_s: u64, now: u64) -> String {
    let s = now.saturating_sub(unix_s);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// When each unit last answered, kept on this host between commands
/// (`$XDG_STATE_HOME/trident/last-seen.json` by default; the CLI picks the file).
#[derive(Debug)]
pub struct LastSeen {
    path: PathBuf,
    seen: BTreeMap<String, u64>,
}

impl LastSeen {
    /// Opens the record at `path`; a missing file is an empty record. A file that cannot be
    /// parsed is an error naming it (it is only ever written whole, by rename).
    pub fn open(path: &Path) -> Result<Self> {
        let seen = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::inventory(
                    format!("{}:{}", path.display(), e.line()),
                    format!("expected a JSON object of unit name → Unix seconds: {e}"),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(Error::Io {
                    action: "cannot read",
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        Ok(LastSeen {
            path: path.to_path_buf(),
            seen,
        })
    }

    pub fn get(&self, unit: &str) -> Option<u64> {
        self.seen.get(unit).copied()
    }

    pub fn record(&mut self, unit: &str, unix_s: u64) {
        let e = self.seen.entry(unit.to_string()).or_insert(unix_s);
        *e = (*e).max(unix_s);
    }

    /// Writes the record (temp file, fsync, rename).
    pub fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.seen).expect("a map of strings serialises");
        trident_core::fsutil::write_atomic(&self.path, &json)?;
        Ok(())
    }
}

/// Reads the status of `units`, `max_parallel` at once, in the given order.
pub fn read_all(ssh: &Ssh, units: &[Unit], max_parallel: usize) -> Result<Vec<UnitStatus>> {
    let ssh = ssh.clone();
    crate::rollout::each_unit(units, max_parallel, move |u| read(&ssh, u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(100, 142), "42 s ago");
        assert_eq!(ago(0, 180), "3 min ago");
        assert_eq!(ago(0, 5 * 3600 + 7), "5 h ago");
        assert_eq!(ago(0, 2 * 86400), "2 d ago");
        assert_eq!(
            ago(200, 100),
            "0 s ago",
            "a clock step back is not negative"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn last_seen_keeps_the_latest_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/last-seen.json");
        let mut seen = LastSeen::open(&path).unwrap();
        assert_eq!(seen.get("reef-01"), None);
        seen.record("reef-01", 1000);
        seen.record("reef-01", 900);
        seen.record("reef-02", 5);
        seen.save().unwrap();
        let again = LastSeen::open(&path).unwrap();
        assert_eq!(again.get("reef-01"), Some(1000));
        assert_eq!(again.get("reef-02"), Some(5));
        // Only the record itself is in the folder: no temp file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        std::fs::write(&path, "{\n\"reef-01\": \"yesterday\"}").unwrap();
        let e = LastSeen::open(&path).unwrap_err().to_string();
        assert!(e.contains("last-seen.json:2"), "{e}");
        assert!(e.contains("Unix seconds"), "{e}");
    }
}
