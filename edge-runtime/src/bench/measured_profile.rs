//! `bench --write-profile`: a deployment profile whose estimates are what the benchmark
//! measured on this unit — per-model latency and active power, idle power, the cost of TTA —
//! so that the governor predicts from the unit's own figures instead of the published ones.
//!
//! Only the estimates change; targets, caps, budgets and the ladder stay the operator's. A
//! figure the run could not measure (power without a sensor, TTA without views) keeps the base
//! profile's value, and the file's header says which figures are measured.

use std::path::Path;

use trident_core::bench::BenchReport;

use crate::error::{Error, Result};
use crate::governor::{MeasuredBy, ModelEstimate, Profile, predict};

/// What changed, for the command's summary and the file's header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// `model: old → new ms`.
    pub latency: Vec<String>,
    pub power: Vec<String>,
    pub kept: Vec<String>,
}

/// The base profile with the report's figures in its estimates.
pub fn measured_profile(base: &Profile, report: &BenchReport) -> Result<(Profile, Changes)> {
    let mut p = base.clone();
    let mut changes = Changes::default();
    let measured_power = report.setup.power_measured;
    for m in &report.models {
        let old = p
            .estimates
            .models
            .get(&m.name)
            .cloned()
            .unwrap_or(ModelEstimate {
                latency_ms: 0.0,
                active_w: 0.0,
            });
        if m.frames == 0 || m.latency_ms.mean <= 0.0 {
            return Err(Error::Bench(format!(
                "model `{}` has no measured passes; nothing to write",
                m.name
            )));
        }
        let latency_ms = round(m.latency_ms.mean, 2);
        changes.latency.push(format!(
            "{}: {} → {latency_ms} ms",
            m.name,
            figure(old.latency_ms)
        ));
        let active_w = match (measured_power, m.active_w) {
            (true, Some(w)) => {
                let w = round(w, 2);
                changes
                    .power
                    .push(format!("{}: {} → {w} W", m.name, figure(old.active_w)));
                w
            }
            _ => {
                changes.kept.push(format!(
                    "{}: active power {} W (not measured)",
                    m.name, old.active_w
                ));
                old.active_w
            }
        };
        p.estimates.models.insert(
            m.name.clone(),
            ModelEstimate {
                latency_ms,
                active_w,
            },
        );
    }
    match (&report.idle, measured_power) {
        (Some(idle), true) => {
            let w = round(idle.power_w, 2);
            changes
                .power
                .push(format!("idle: {} → {w} W", p.estimates.idle_w));
            p.estimates.idle_w = w;
        }
        _ => changes.kept.push(format!(
            "idle power {} W (not measured)",
            p.estimates.idle_w
        )),
    }
    let factors: Vec<f64> = report
        .models
        .iter()
        .filter_map(|m| m.tta.as_ref().map(|t| t.factor))
        .collect();
    if factors.is_empty() {
        changes.kept.push(format!(
            "TTA factor {} (no test-time views measured)",
            p.estimates.tta_factor
        ));
    } else {
        let f = round(
            (factors.iter().sum::<f64>() / factors.len() as f64).max(1.0),
            2,
        );
        changes
            .latency
            .push(format!("TTA factor: {} → {f}", p.estimates.tta_factor));
        p.estimates.tta_factor = f;
    }
    let device = match &report.device.board {
        Some(b) => format!("{b} ({})", report.device.hostname),
        None => report.device.hostname.clone(),
    };
    p.estimates.measured = Some(MeasuredBy {
        by: format!("{} bench", report.tool),
        at: report.started.clone(),
        device,
        power: report.setup.power_source.clone(),
    });
    Ok((p, changes))
}

/// The levels that cannot reach their rate with the measured latencies: they keep the device
/// busy all the time, so two of them cost the same and the governor could not tell them apart.
fn saturated(p: &Profile) -> String {
    let slow: Vec<String> = (0..p.ladder.len())
        .filter_map(|i| {
            let pred = predict(p, i, |m| p.model_latency_s(m), 1.0);
            let rate = p.level_rate(i);
            (pred.fps < rate * 0.999).then(|| {
                format!(
                    "`{}` sustains {:.1} of its {:.1} fps",
                    p.ladder[i].name, pred.fps, rate
                )
            })
        })
        .collect();
    if slow.is_empty() {
        String::new()
    } else {
        format!(" (on this unit {})", slow.join(", "))
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

fn figure(x: f64) -> String {
    if x > 0.0 {
        x.to_string()
    } else {
        "(none)".into()
    }
}

/// The profile as YAML with a header saying where its estimates come from.
pub fn profile_text(p: &Profile, report: &BenchReport, changes: &Changes) -> Result<String> {
    let mut head = String::new();
    head.push_str(&format!(
        "# Deployment profile `{}` with estimates MEASURED by `trident-edge bench` on {} at {}.\n",
        p.name,
        p.estimates
            .measured
            .as_ref()
            .map_or("?", |m| m.device.as_str()),
        report.started
    ));
    if let Some(mode) = &report.device.power_mode {
        head.push_str(&format!("# Power mode: {mode}.\n"));
    }
    head.push_str(&format!("# Power source: {}.\n", report.setup.power_source));
    for line in changes.latency.iter().chain(&changes.power) {
        head.push_str(&format!("#   measured {line}\n"));
    }
    for line in &changes.kept {
        head.push_str(&format!("#   kept {line}\n"));
    }
    head.push('\n');
    Ok(head + &p.to_yaml()?)
}

/// Writes the measured profile atomically after checking that it loads as the governor will
/// load it (validation includes the best-first order of the ladder under the new figures).
pub fn write(path: &Path, base: &Profile, report: &BenchReport) -> Result<(Profile, Changes)> {
    let (profile, changes) = measured_profile(base, report)?;
    let text = profile_text(&profile, report, &changes)?;
    let checked = Profile::parse(&text, path).map_err(|e| {
        Error::Bench(format!(
            "the measured figures do not make a valid profile, nothing written: {e}. With this \
             unit's figures the ladder's levels must still cost less from top to bottom{}; \
             lower those levels' fps to what the unit sustains, or remove levels, in the base \
             profile `{}`",
            saturated(&profile),
            base.name
        ))
    })?;
    trident_core::fsutil::write_atomic(path, text.as_bytes())?;
    Ok((checked, changes))
}

#[cfg(test)]
mod tests {
    use trident_core::bench::{
        BenchSetup, DeviceInfo, IdleFigures, Millis, ModelBench, SCHEMA, TtaBench,
    };

    use super::*;
    use crate::governor::Governor;

    fn nano_10w() -> Profile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/nano-10w.yaml");
        Profile::load(&path).unwrap()
    }

    fn model(name: &str, latency_ms: f64, active_w: f64, tta: f64) -> ModelBench {
        let ms = Millis::of(&[latency_ms * 0.9, latency_ms, latency_ms * 1.1]);
        ModelBench {
            name: name.into(),
            backend: "tensorrt".into(),
            precision: "fp16".into(),
            input: [320, 320],
            sha256: String::new(),
            frames: 3,
            latency_ms: ms,
            preprocess_ms: ms,
            forward_ms: ms,
            postprocess_ms: ms,
            fps: 1e3 / latency_ms,
            power_w: Some(1.5 + active_w),
            energy_j_per_frame: None,
            active_w: Some(active_w),
            tta: Some(TtaBench {
                views: 2,
                latency_ms: ms,
                factor: tta,
            }),
            latency_samples_ms: vec![],
        }
    }

    /// What a Nano in 10 W mode might measure: faster than the published figures, less power.
    fn report(power_measured: bool) -> BenchReport {
        BenchReport {
            schema: SCHEMA.into(),
            started_unix_s: 0,
            started: "2026-11-23T08:00:00Z".into(),
            tool: "trident-edge 0.1.0 (aarch64-unknown-linux-gnu)".into(),
            device: DeviceInfo {
                hostname: "nano-07".into(),
                board: Some("NVIDIA Jetson Nano Developer Kit".into()),
                power_mode: Some("MAXN".into()),
                ..DeviceInfo::default()
            },
            setup: BenchSetup {
                power_source: if power_measured {
                    "ina3221"
                } else {
                    "estimate"
                }
                .into(),
                power_measured,
                ..BenchSetup::default()
            },
            idle: power_measured.then_some(IdleFigures {
                seconds: 5.0,
                power_w: 1.46,
            }),
            models: vec![
                model("high_recall", 24.0, 4.2, 2.6),
                model("balanced", 25.0, 4.4, 2.7),
                model("high_precision", 26.0, 4.6, 2.8),
            ],
            levels: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn measured_figures_replace_the_estimates_and_the_governor_predicts_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nano-10w.measured.yaml");
        let base = nano_10w();
        let (written, changes) = write(&path, &base, &report(true)).unwrap();
        let loaded = Profile::load(&path).unwrap();
        assert_eq!(loaded, written);
        let e = &loaded.estimates;
        assert_eq!(e.models["balanced"].latency_ms, 25.0);
        assert_eq!(e.models["high_precision"].active_w, 4.6);
        assert_eq!((e.idle_w, e.tta_factor), (1.46, 2.7));
        let m = e.measured.as_ref().unwrap();
        assert_eq!(m.power, "ina3221");
        assert!(m.device.contains("Jetson Nano") && m.device.contains("nano-07"));
        assert_eq!(changes.latency.len(), 4, "{changes:?}");
        assert!(changes.kept.is_empty(), "{changes:?}");
        // Everything else is the operator's.
        assert_eq!(
            (
                &loaded.ladder,
                loaded.target_fps,
                &loaded.power,
                &loaded.budget
            ),
            (&base.ladder, base.target_fps, &base.power, &base.budget)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Deployment profile `nano-10w` with estimates MEASURED"));
        assert!(text.contains("#   measured balanced: 33 → 25 ms"), "{text}");

        // The governor's predictions follow: the plain ensemble at 5 fps is
        // 1.46 + 5 × (0.024·4.2 + 0.025·4.4 + 0.026·4.6) W.
        let want = 1.46 + 5.0 * (0.024 * 4.2 + 0.025 * 4.4 + 0.026 * 4.6);
        let ensemble = loaded
            .ladder
            .iter()
            .position(|l| l.name == "ensemble")
            .unwrap();
        assert!((loaded.predicted_power(ensemble) - want).abs() < 1e-9);
        assert!((base.predicted_power(ensemble) - want).abs() > 0.3);
        Governor::new(loaded, None, 0.0).unwrap();
    }

    #[test]
    fn unmeasured_power_is_kept_and_a_ladder_the_figures_break_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let base = nano_10w();
        let path = dir.path().join("estimate.yaml");
        let (p, changes) = write(&path, &base, &report(false)).unwrap();
        assert_eq!(p.estimates.models["balanced"].active_w, 5.1);
        assert_eq!(p.estimates.idle_w, base.estimates.idle_w);
        assert_eq!(changes.kept.len(), 4, "{changes:?}");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("#   kept idle power 1.7 W")
        );

        // A unit six times slower than the estimates: the TTA level and the plain ensemble
        // both keep it fully busy, cost the same, and the ladder is no longer best-first.
        let mut slow = report(true);
        for m in &mut slow.models {
            m.latency_ms = Millis::of(&[200.0]);
        }
        let path = dir.path().join("slow.yaml");
        let e = write(&path, &base, &slow).unwrap_err().to_string();
        assert!(
            e.contains("nothing written") && e.contains("best-first"),
            "{e}"
        );
        assert!(
            e.contains("`ensemble-tta` sustains 0.6 of its 3.0 fps"),
            "{e}"
        );
        assert!(!path.exists());
    }
}
