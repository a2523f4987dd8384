//! The deploy stage's health gate: what a `/healthz` answer must show beyond `ok` for a switch to
//! count as done (`trident-edge health --expect-version V --started-after UNIX_S --min-frames
//! N`). The answer is read as JSON, not as [`HealthReport`](super::HealthReport), so that an older
//! runtime's report (without these fields) fails the conditions that need them, saying so, rather
//! than failing to parse.

use serde_json::Value;

/// Conditions on a `/healthz` answer; `None` fields are not checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gate {
    /// `version` (the package's) must equal this.
    pub expect_version: Option<String>,
    /// `started_at_unix_s` must be later than this (the time of the switch).
    pub started_after: Option<f64>,
    /// `min_level_model_frames` must be at least this: every model of the active ladder level
    /// has processed this many frames.
    pub min_frames: Option<u64>,
}

impl Gate {
    /// Why an answer (HTTP `status`, JSON `report`) does not pass, one phrase each: a status
    /// other than 200 (with the report's problems), then each condition that does not hold with
    /// the values seen. Empty when it passes.
    pub fn failures(&self, status: u16, report: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if status != 200 {
            let problems: Vec<&str> = report["problems"]
                .as_array()
                .map(|p| p.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push(if problems.is_empty() {
                format!("/healthz answered {status}")
            } else {
                format!("/healthz answered {status}: {}", problems.join("; "))
            });
        }
        if let Some(want) = &self.expect_version {
            match report["version"].as_str() {
                Some(v) if v == want => {}
                Some(v) => out.push(format!("version {v}, expected {want}")),
                None => out.push(format!(
                    "version none (not run from a package), expected {want}"
                )),
            }
        }
        if let Some(after) = self.started_after {
            match report["started_at_unix_s"].as_f64() {
                Some(t) if t > after => {}
                Some(t) => out.push(format!(
                    "process started {} s before the switch (pid {}, started at {t:.3}, switch at \
                     {after:.3})",
                    seconds(after - t),
                    report["pid"]
                        .as_u64()
                        .map_or_else(|| "?".to_string(), |p| p.to_string())
                )),
                None => out.push(format!(
                    "process start time unknown (the runtime reports no started_at_unix_s), \
                     needed after {after:.3}"
                )),
            }
        }
        if let Some(need) = self.min_frames {
            match report["min_level_model_frames"].as_u64() {
                Some(n) if n >= need => {}
                Some(n) => out.push(format!(
                    "model {} processed {n} {}, {need} needed",
                    fewest_frames_model(report, n).unwrap_or("of the active level"),
                    if n == 1 { "frame" } else { "frames" }
                )),
                None if report.get("min_level_model_frames").is_some() => out.push(format!(
                    "no model frames yet (the run has not begun), {need} needed"
                )),
                None => out.push(format!(
                    "model frames unknown (the runtime reports no min_level_model_frames), \
                     {need} needed"
                )),
            }
        }
        out
    }
}

/// The first model of `level_models` whose `frames` in `models` is `n` (0 for a level model the
/// report lists no frames for).
fn fewest_frames_model(report: &Value, n: u64) -> Option<&str> {
    let models = report["models"].as_array();
    report["level_models"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|name| {
            let frames = models
                .and_then(|ms| ms.iter().find(|m| m["model"].as_str() == Some(name)))
                .and_then(|m| m["frames"].as_u64())
                .unwrap_or(0);
            frames == n
        })
}

/// `12` for 12.3, `0.4` for 0.43: whole seconds from 10 s on.
fn seconds(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}
