//! Benchmark reports (`bench.json`, schema `trident-bench/1`): what `trident-edge bench` measured
//! on one unit or host — device facts, per-model latency split into pre-processing, forward pass
//! and post-processing, the ensemble at every ladder level (FPS, power, energy per frame, memory,
//! dropped frames) — in a form that is stable across versions so that units can be compared and
//! the figures fed back into a deployment profile.
//!
//! Compatibility: readers accept any `trident-bench/1` file; fields are only ever added (with
//! defaults), never renamed or given another meaning, within version 1.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The schema tag written to and required in every report.
pub const SCHEMA: &str = "trident-bench/1";

/// One benchmark run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub schema: String,
    /// When the run started: seconds since the Unix epoch (UTC).
    pub started_unix_s: u64,
    /// The same instant as RFC 3339 (`2026-11-23T10:15:00Z`), for people.
    pub started: String,
    /// `trident-edge <version> (<target triple>)`.
    pub tool: String,
    pub device: DeviceInfo,
    pub setup: BenchSetup,
    /// The device with the pipeline loaded but idle (absent with `--idle 0` or no sensor).
    #[serde(default)]
    pub idle: Option<IdleFigures>,
    /// Each model alone, in ensemble order.
    pub models: Vec<ModelBench>,
    /// The ensemble at each measured ladder level, best first.
    pub levels: Vec<LevelBench>,
    /// Things a reader must know to trust the figures (estimated power, unreset memory peak…).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Facts about the machine the figures belong to; `None` where the machine does not tell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub hostname: String,
    /// `NVIDIA Jetson Nano Developer Kit` (device tree), or the DMI product name on a PC.
    pub board: Option<String>,
    /// `aarch64`, `x86_64`.
    pub arch: String,
    pub kernel: Option<String>,
    /// L4T release (`32.7.1`) and the JetPack it belongs to (`4.6.1`).
    pub l4t: Option<String>,
    pub jetpack: Option<String>,
    pub tensorrt: Option<String>,
    pub gstreamer: Option<String>,
    pub glibc: Option<String>,
    /// nvpmodel's mode name (`MAXN`, `5W`) and number, on Jetson.
    pub power_mode: Option<String>,
    pub power_mode_id: Option<u32>,
    pub cpu: CpuInfo,
    /// GPU clock now and its maximum (MHz), where devfreq exposes them (Jetson).
    pub gpu_mhz: Option<f64>,
    pub gpu_max_mhz: Option<f64>,
    pub memory_total_mib: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// `ARMv8 Processor rev 1 (v8l)`, `Intel(R) Core(TM) i5-…`.
    pub model: Option<String>,
    /// CPUs online.
    pub online: u32,
    /// Current clock of each online CPU (MHz), where cpufreq exposes it.
    #[serde(default)]
    pub mhz: Vec<f64>,
    /// Highest maximum clock of the online CPUs (MHz).
    pub max_mhz: Option<f64>,
    /// cpufreq governor of CPU 0 (`schedutil`, `performance`).
    pub governor: Option<String>,
}

/// What was run and how.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchSetup {
    pub source: String,
    /// Frame size delivered by the source.
    pub frame_width: u32,
    pub frame_height: u32,
    /// Frame rate asked of live sources.
    pub source_fps: u32,
    /// Measured frames per model and per level, after `warmup` unmeasured ones.
    pub frames: u32,
    pub warmup: u32,
    /// Deployment profile whose ladder was measured (absent: the built-in ladder).
    pub profile: Option<String>,
    /// `name version` of the deployment package, when run from one.
    pub package: Option<String>,
    pub models_dir: String,
    /// Where the calibration tables came from (absent: none applied).
    pub calibration: Option<String>,
    /// `ina3221`, `tegrastats`, `rapl`, or `estimate` (from the profile's power model).
    pub power_source: String,
    /// Whether power and energy figures are measured by a sensor (false: estimated).
    pub power_measured: bool,
}

/// The device idle with everything loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleFigures {
    pub seconds: f64,
    pub power_w: f64,
}

/// Distribution of a time in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Millis {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

/// One model run alone on every frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelBench {
    /// Variant name (`high_recall`, `balanced`, `high_precision`).
    pub name: String,
    /// Backend the model ran on (`tensorrt`, `onnxruntime`, `tract`).
    pub backend: String,
    /// `fp16`, `fp32`.
    pub precision: String,
    /// Model input (width, height).
    pub input: [u32; 2],
    /// SHA-256 of the ONNX file.
    pub sha256: String,
    pub frames: u32,
    /// One pass: letterbox + forward + decode/NMS.
    pub latency_ms: Millis,
    pub preprocess_ms: Millis,
    pub forward_ms: Millis,
    pub postprocess_ms: Millis,
    /// Frames per second with this model alone (capture included).
    pub fps: f64,
    /// Average device power while it ran, and energy per frame (J).
    pub power_w: Option<f64>,
    pub energy_j_per_frame: Option<f64>,
    /// Power above idle while the model computes (W): `(power − idle) × wall / busy`.
    pub active_w: Option<f64>,
    /// A frame with the calibration tables' test-time views, when they keep any.
    #[serde(default)]
    pub tta: Option<TtaBench>,
    /// Every measured pass (ms), in order: the latency distribution chart, re-plottable.
    #[serde(default)]
    pub latency_samples_ms: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TtaBench {
    pub views: u32,
    pub latency_ms: Millis,
    /// Mean TTA frame / mean plain pass.
    pub factor: f64,
}

/// The ensemble at one ladder level, unpaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelBench {
    pub name: String,
    pub models: Vec<String>,
    /// Whether test-time views ran (the level asks for TTA and the tables keep views).
    pub tta: bool,
    /// The rate the profile asks of this level (min of its fps and the target).
    pub rate_fps: f64,
    pub frames: u32,
    /// Frames per second end to end (waiting for the source included).
    pub fps: f64,
    /// Frames per second the processing alone allows: 1 / mean(infer + fusion).
    pub capacity_fps: f64,
    /// Whether `capacity_fps` reaches `rate_fps`.
    pub meets_rate: bool,
    /// Capture (waiting for and copying the frame), the models' passes (wall time of the
    /// slowest), fusion with calibration and thresholds, and the whole frame.
    pub capture_ms: Millis,
    pub infer_ms: Millis,
    pub fuse_ms: Millis,
    pub frame_ms: Millis,
    /// Per model: its passes within the ensemble (contention with the others included).
    pub model_ms: BTreeMap<String, Millis>,
    pub power_w: Option<f64>,
    pub energy_j_per_frame: Option<f64>,
    /// The profile's prediction for this level at the measured rate (W), for comparison.
    pub predicted_w: Option<f64>,
    /// Peak resident memory of the process during this level (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Peak memory in use on the whole device (total − available; on a Jetson this includes
    /// what the GPU holds) during this level (MiB).
    pub peak_system_mib: Option<f64>,
    /// Frames the source dropped because the pipeline was busy.
    pub dropped: u64,
    pub detections_per_frame: f64,
}

impl BenchReport {
    /// Reads and checks a report.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parses report bytes; `path` names the source in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let report: BenchReport = serde_json::from_slice(bytes).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        if report.schema != SCHEMA {
            return Err(Error::invalid(
                format!("{}: schema", path.display()),
                format!("is {:?}; this build reads {SCHEMA:?}", report.schema),
            ));
        }
        Ok(report)
    }

    /// The report as pretty JSON, written atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        text.push(b'\n');
        crate::fsutil::write_atomic(path, &text)
    }

    pub fn model(&self, name: &str) -> Option<&ModelBench> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn level(&self, name: &str) -> Option<&LevelBench> {
        self.levels.iter().find(|l| l.name == name)
    }
}

impl Millis {
    /// The distribution of `samples` (seconds or milliseconds: the unit is the caller's);
    /// all zero when there are none.
    pub fn of(samples: &[f64]) -> Millis {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if sorted.is_empty() {
            return Millis::default();
        }
        sorted.sort_by(f64::total_cmp);
        Millis {
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: percentile_sorted(&sorted, 50.0),
            p95: percentile_sorted(&sorted, 95.0),
            p99: percentile_sorted(&sorted, 99.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

/// The `q`-th percentile (0–100) of ascending `sorted`, interpolating linearly between the two
/// closest ranks: numpy's default (`method="linear"`), so figures agree with a notebook's.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * (q / 100.0).clamp(0.0, 1.0);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_numpy_linear_interpolation() {
        // numpy.percentile(np.arange(1, 11), [50, 95, 99]) = [5.5, 9.55, 9.91]
        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!((percentile_sorted(&x, 50.0) - 5.5).abs() < 1e-12);
        assert!((percentile_sorted(&x, 95.0) - 9.55).abs() < 1e-12);
        assert!((percentile_sorted(&x, 99.0) - 9.91).abs() < 1e-12);
        assert_eq!(percentile_sorted(&x, 0.0), 1.0);
        assert_eq!(percentile_sorted(&x, 100.0), 10.0);
        assert_eq!(percentile_sorted(&[4.0], 99.0), 4.0);
        assert!(percentile_sorted(&[], 50.0).is_nan());
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // An exponential distribution with mean 20 ms, sampled at its quantiles (shuffled by a
        // fixed stride so the input is not sorted): the p-th percentile is −20·ln(1 − p).
        let n = 20_000usize;
        let samples: Vec<f64> = (0..n)
            .map(|i| (i * 7919) % n)
            .map(|k| -20.0 * (1.0 - (k as f64 + 0.5) / n as f64).ln())
            .collect();
        let m = Millis::of(&samples);
        for (got, p) in [(m.p50, 0.50_f64), (m.p95, 0.95), (m.p99, 0.99)] {
            let want = -20.0 * (1.0 - p).ln();
            assert!(
                (got - want).abs() / want < 2e-3,
                "p{}: {got} vs {want}",
                p * 100.0
            );
        }
        assert!((m.mean - 20.0).abs() < 0.05, "mean {}", m.mean);
        assert!(m.min < 0.01 && m.max > 180.0);
        // Non-finite samples (a clock hiccup) are left out rather than poisoning the figures.
        let with_nan = Millis::of(&[1.0, f64::NAN, 3.0]);
        assert_eq!((with_nan.p50, with_nan.mean), (2.0, 2.0));
        assert_eq!(Millis::of(&[]), Millis::default());
    }

    fn report() -> BenchReport {
        let ms = Millis::of(&[10.0, 11.0, 12.5]);
        BenchReport {
            schema: SCHEMA.into(),
            started_unix_s: 1_795_000_000,
            started: "2026-11-19T07:06:40Z".into(),
            tool: "trident-edge 0.1.0 (aarch64-unknown-linux-gnu)".into(),
            device: DeviceInfo {
                hostname: "nano-07".into(),
                board: Some("NVIDIA Jetson Nano Developer Kit".into()),
                arch: "aarch64".into(),
                l4t: Some("32.7.1".into()),
                jetpack: Some("4.6.1".into()),
                power_mode: Some("MAXN".into()),
                power_mode_id: Some(0),
                cpu: CpuInfo {
                    online: 4,
                    mhz: vec![1479.0; 4],
                    max_mhz: Some(1479.0),
                    ..CpuInfo::default()
                },
                gpu_mhz: Some(921.6),
                ..DeviceInfo::default()
            },
            setup: BenchSetup {
                source: "csi://0".into(),
                frames: 3,
                power_source: "ina3221".into(),
                power_measured: true,
                ..BenchSetup::default()
            },
            idle: Some(IdleFigures {
                seconds: 5.0,
                power_w: 1.7,
            }),
            models: vec![ModelBench {
                name: "balanced".into(),
                backend: "tensorrt".into(),
                precision: "fp16".into(),
                input: [320, 320],
                sha256: "ab".repeat(32),
                frames: 3,
                latency_ms: ms,
                preprocess_ms: ms,
                forward_ms: ms,
                postprocess_ms: ms,
                fps: 28.0,
                power_w: Some(6.1),
                energy_j_per_frame: Some(0.218),
                active_w: Some(5.0),
                tta: Some(TtaBench {
                    views: 2,
                    latency_ms: ms,
                    factor: 2.7,
                }),
                latency_samples_ms: vec![10.0, 11.0, 12.5],
            }],
            levels: vec![LevelBench {
                name: "balanced".into(),
                models: vec!["balanced".into()],
                tta: false,
                rate_fps: 5.0,
                frames: 3,
                fps: 27.0,
                capacity_fps: 30.0,
                meets_rate: true,
                capture_ms: ms,
                infer_ms: ms,
                fuse_ms: ms,
                frame_ms: ms,
                model_ms: [("balanced".to_string(), ms)].into(),
                power_w: Some(6.0),
                energy_j_per_frame: Some(0.22),
                predicted_w: Some(5.9),
                peak_rss_mib: Some(310.0),
                peak_system_mib: Some(2100.0),
                dropped: 4,
                detections_per_frame: 1.5,
            }],
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn reports_round_trip_through_json_and_refuse_other_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.json");
        let r = report();
        r.save(&path).unwrap();
        let back = BenchReport::load(&path).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.model("balanced").unwrap().tta.as_ref().unwrap().views,
            2
        );
        assert_eq!(back.level("balanced").unwrap().dropped, 4);

        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(SCHEMA, "trident-bench/2");
        let e = BenchReport::parse(text.as_bytes(), &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema") && e.contains("trident-bench/1"), "{e}");

        // A field of the wrong type is named with its line.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"frames\": 3,", "\"frames\": \"three\",");
        let e = BenchReport::parse(text.as_bytes(), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bench.json:") && e.contains("invalid type"),
            "{e}"
        );

        // Fields added later within version 1 default when an older file lacks them.
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("notes");
        v["models"][0].as_object_mut().unwrap().remove("tta");
        v["models"][0]
            .as_object_mut()
            .unwrap()
            .remove("latency_samples_ms");
        let older = BenchReport::parse(&serde_json::to_vec(&v).unwrap(), &path).unwrap();
        assert!(older.notes.is_empty() && older.models[0].tta.is_none());
    }
}
