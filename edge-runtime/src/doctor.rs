//! `trident-edge doctor`: what a field engineer needs to know about a unit, in one command — which
//! backends load and why not, the L4T/JetPack/TensorRT/CUDA/GStreamer versions, the camera and
//! decoder elements present, the power sensor and its rails, the engine cache, the nvpmodel mode —
//! and one verdict: whether the profile's first backend loads here.
//!
//! Everything is read below a system root (`/` on a unit) so the tests can hand it a fake unit.
//! Nothing is built: a missing engine is reported (run `prepare`), never compiled here.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use trident_infer::backend::{self, BackendKind, BackendOptions, OnnxModel};
use trident_infer::trt_shim::ShimPlan;

/// The GStreamer elements the media paths use: Jetson's first, then the portable ones.
pub const ELEMENTS: &[(&str, &str)] = &[
    ("nvarguscamerasrc", "csi:// cameras (Jetson)"),
    ("nvvidconv", "NVMM → system memory, scaling (Jetson)"),
    ("nvv4l2decoder", "hardware H.264/H.265 decoding (Jetson)"),
    ("nvjpegdec", "hardware JPEG decoding (Jetson)"),
    ("v4l2src", "v4l2:// USB cameras"),
    ("jpegdec", "MJPEG cameras and files"),
    ("decodebin", "file:// and rtsp:// (software)"),
    ("rtspsrc", "rtsp://"),
    ("videoconvert", "colour conversion (software)"),
    ("appsink", "frames into the runtime"),
];

/// What doctor is asked to look at.
#[derive(Clone, Debug)]
pub struct DoctorOptions {
    /// A models folder (of an unpacked package) to try each backend on.
    pub models_dir: Option<PathBuf>,
    /// Backends in the order the unit's profile prefers them.
    pub backends: Vec<BackendKind>,
    /// Where the backends came from (`profile nano-10w`, `--backend`).
    pub backends_from: String,
    pub engine_cache: PathBuf,
    /// The unit's root file system (`/`).
    pub root: PathBuf,
}

/// One backend's check.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BackendCheck {
    pub backend: String,
    pub loads: bool,
    /// What loaded (the shim and its TensorRT, the model tried) or why not.
    pub detail: String,
}

/// One GStreamer element's presence.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ElementCheck {
    pub element: String,
    pub present: bool,
    pub used_for: String,
}

/// The report; `Display` prints it for a person, `serde` for `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct DoctorReport {
    /// `(name, value)`: L4T, JetPack, TensorRT, CUDA, GStreamer, glibc, architecture.
    pub versions: Vec<(String, String)>,
    pub backends_from: String,
    pub backends: Vec<BackendCheck>,
    pub elements: Vec<ElementCheck>,
    /// The power sensor found and its rails, or why none.
    pub power_sensor: String,
    pub power_rails: Vec<String>,
    pub engine_cache: PathBuf,
    /// Engine files in the cache (`name  size`).
    pub engines: Vec<String>,
    pub power_mode: String,
    /// True when the first backend loads.
    pub ok: bool,
    pub verdict: String,
}

/// Looks at the unit.
pub fn examine(opts: &DoctorOptions) -> DoctorReport {
    let backends: Vec<BackendCheck> = opts
        .backends
        .iter()
        .map(|k| check_backend(*k, opts))
        .collect();
    let (ok, verdict) = match (opts.backends.first(), backends.first()) {
        (Some(kind), Some(first)) if first.loads => (
            true,
            format!(
                "ok: {kind}, the first backend of {}, loads",
                opts.backends_from
            ),
        ),
        (Some(kind), Some(first)) => {
            let then = backends
                .iter()
                .find(|b| b.loads)
                .map(|b| format!("; the runtime would fall back to {}", b.backend))
                .unwrap_or_else(|| "; no backend loads".into());
            (
                false,
                format!(
                    "FAIL: {kind}, the first backend of {}, does not load: {}{then}",
                    opts.backends_from, first.detail
                ),
            )
        }
        _ => (false, "FAIL: no backends to check".into()),
    };
    let (power_sensor, power_rails) = power_sensor(&opts.root);
    DoctorReport {
        versions: versions(&opts.root),
        backends_from: opts.backends_from.clone(),
        backends,
        elements: elements(),
        power_sensor,
        power_rails,
        engine_cache: opts.engine_cache.clone(),
        engines: engines(&opts.engine_cache),
        power_mode: power_mode(&opts.root),
        ok,
        verdict,
    }
}

fn check_backend(kind: BackendKind, opts: &DoctorOptions) -> BackendCheck {
    let result = match kind {
        // The shim is what decides whether TensorRT can run here; engines are `prepare`'s job.
        BackendKind::TensorRt => {
            let models = opts
                .models_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("."));
            let mut plan = ShimPlan::for_models_dir(&models, &opts.engine_cache);
            plan.root = opts.root.clone();
            plan.open().map(|(shim, origin)| {
                format!(
                    "shim {} ({origin:?}), compiled for TensorRT {}, libnvinfer {}",
                    shim.path().display(),
                    shim.compiled_version(),
                    shim.runtime_version()
                )
            })
        }
        _ if !kind.compiled() => Err(format!("not compiled with {kind}")),
        _ => match first_model(opts.models_dir.as_deref()) {
            None => Ok("compiled in (no --package/--models to try a model on)".into()),
            Some((path, bytes, shape)) => backend::load(
                kind,
                &OnnxModel {
                    path: &path,
                    bytes: &bytes,
                },
                shape,
                &BackendOptions::default(),
            )
            .map(|_| format!("loads {}", path.display()))
            .map_err(|e| e.to_string()),
        },
    };
    match result {
        Ok(detail) => BackendCheck {
            backend: kind.to_string(),
            loads: true,
            detail,
        },
        Err(detail) => BackendCheck {
            backend: kind.to_string(),
            loads: false,
            detail,
        },
    }
}

/// The first model of a models folder: its path, bytes and input shape.
fn first_model(dir: Option<&Path>) -> Option<(PathBuf, Vec<u8>, [usize; 4])> {
    let set = trident_infer::models::ModelSet::load_dir(dir?).ok()?;
    let m = set.models.first()?;
    let bytes = std::fs::read(&m.onnx_path).ok()?;
    let side = m.card.imgsz as usize;
    Some((m.onnx_path.clone(), bytes, [1, 3, side, side]))
}

fn versions(root: &Path) -> Vec<(String, String)> {
    let facts = trident_package::facts::probe(root);
    let unknown = |v: Option<String>, why: &str| v.unwrap_or_else(|| format!("unknown ({why})"));
    let pkg = |names: &[&str]| trident_package::facts::installed_package_version(root, names);
    let cuda = pkg(&["cuda-cudart-10-2", "cuda-runtime-10-2", "cuda-cudart-11-4"]).or_else(|| {
        std::fs::read_to_string(root.join("usr/local/cuda/version.txt"))
            .ok()
            .map(|t| t.trim().trim_start_matches("CUDA Version ").to_string())
    });
    vec![
        ("architecture".into(), facts.arch.clone()),
        (
            "L4T".into(),
            unknown(facts.l4t.clone(), "no etc/nv_tegra_release: not a Jetson"),
        ),
        ("JetPack".into(), unknown(facts.jetpack.clone(), "from L4T")),
        (
            "TensorRT".into(),
            unknown(facts.tensorrt.clone(), "no libnvinfer package installed"),
        ),
        ("CUDA".into(), unknown(cuda, "no cuda-cudart package")),
        ("GStreamer".into(), gstreamer_version()),
        (
            "glibc".into(),
            unknown(facts.glibc.clone(), "no libc6 package"),
        ),
    ]
}

#[cfg(feature = "gstreamer")]
fn gstreamer_version() -> String {
    match gstreamer::init() {
        Ok(()) => {
            let (major, minor, micro, _) = gstreamer::version();
            format!("{major}.{minor}.{micro} (the library this process loaded)")
        }
        Err(e) => format!("cannot initialise: {e}"),
    }
}

#[cfg(not(feature = "gstreamer"))]
fn gstreamer_version() -> String {
    "not compiled with gstreamer".into()
}

#[cfg(feature = "gstreamer")]
fn elements() -> Vec<ElementCheck> {
    let ready = gstreamer::init().is_ok();
    ELEMENTS
        .iter()
        .map(|(name, used_for)| ElementCheck {
            element: (*name).into(),
            present: ready && gstreamer::ElementFactory::find(name).is_some(),
            used_for: (*used_for).into(),
        })
        .collect()
}

#[cfg(not(feature = "gstreamer"))]
fn elements() -> Vec<ElementCheck> {
    Vec::new()
}

/// The INA3221 the governor would read, with its rail names (`POM_5V_IN`, `POM_5V_GPU`, …).
fn power_sensor(root: &Path) -> (String, Vec<String>) {
    let devices = crate::governor::ina3221_devices(root);
    let Some(dev) = devices.first() else {
        return (
            format!(
                "no INA3221 under {} (not a Nano, or its driver is not loaded): the governor estimates power from the profile",
                root.join(crate::governor::INA3221_DRIVER.trim_start_matches('/'))
                    .display()
            ),
            Vec::new(),
        );
    };
    let rails = (0..3)
        .filter_map(|i| {
            let name = std::fs::read_to_string(dev.join(format!("rail_name_{i}"))).ok()?;
            let mw = std::fs::read_to_string(dev.join(format!("in_power{i}_input")))
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok());
            Some(match mw {
                Some(mw) => format!("{} {:.2} W", name.trim(), mw / 1000.0),
                None => format!("{} (unreadable)", name.trim()),
            })
        })
        .collect();
    (format!("INA3221 at {}", dev.display()), rails)
}

fn engines(cache: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "engine"))
        .map(|e| {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            format!(
                "{} ({:.1} MiB)",
                e.file_name().to_string_lossy(),
                size as f64 / (1 << 20) as f64
            )
        })
        .collect();
    found.sort();
    found
}

/// nvpmodel's current mode, from its status file (what `nvpmodel -q` prints, without running it).
fn power_mode(root: &Path) -> String {
    let status = root.join("var/lib/nvpmodel/status");
    match std::fs::read_to_string(&status) {
        // `pmode:0000` on L4T R32.
        Ok(t) => match t.trim().trim_start_matches("pmode:").parse::<u32>() {
            Ok(0) => "0 (MAXN, 10 W)".into(),
            Ok(1) => "1 (5W, 5 W)".into(),
            Ok(n) => n.to_string(),
            Err(_) => format!("unreadable: {:?} in {}", t.trim(), status.display()),
        },
        Err(_) => format!("unknown (no {}: not a Jetson)", status.display()),
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "unit")?;
        for (name, value) in &self.versions {
            writeln!(f, "  {name:<13} {value}")?;
        }
        writeln!(f, "backends ({})", self.backends_from)?;
        for b in &self.backends {
            let mark = if b.loads { "ok  " } else { "NO  " };
            writeln!(f, "  {mark}{:<12} {}", b.backend, b.detail)?;
        }
        writeln!(f, "GStreamer elements")?;
        for e in &self.elements {
            let mark = if e.present { "ok  " } else { "--  " };
            writeln!(f, "  {mark}{:<17} {}", e.element, e.used_for)?;
        }
        writeln!(f, "power sensor  {}", self.power_sensor)?;
        for r in &self.power_rails {
            writeln!(f, "  {r}")?;
        }
        writeln!(f, "power mode    {}", self.power_mode)?;
        if self.engines.is_empty() {
            writeln!(
                f,
                "engine cache  {}: empty (`trident-edge prepare` builds the engines)",
                self.engine_cache.display()
            )?;
        } else {
            writeln!(f, "engine cache  {}", self.engine_cache.display())?;
            for e in &self.engines {
                writeln!(f, "  {e}")?;
            }
        }
        write!(f, "verdict       {}", self.verdict)
    }
}
