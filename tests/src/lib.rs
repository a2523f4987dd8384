//! Helpers for the workspace-level tests: where the repository and its Python venv are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use trident_core::digest::sha256_hex;
use trident_core::model_card::{CardDim, CardSource, FORMAT, ModelCard, TensorInfo};

pub mod fleet;
pub mod invocations;
pub mod mender;
pub mod stats;
pub mod tensorrt_standin;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// The venv interpreter holding the reference packages (`TRIDENT_PYTHON` overrides).
///
/// Reference tests must not pass silently without their reference, so a missing venv panics
/// with the command that creates it.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TRIDENT_PYTHON") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask setup` (it creates the test venv with pycocotools, ensemble-boxes, onnx)",
        p.display()
    );
    p
}

/// Runs a script from `tests/python/` with the venv interpreter and parses its stdout as JSON.
pub fn run_reference(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let path = workspace_root().join("tests/python").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}):\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Writes an executable script (a stand-in tool such as a fake `trtexec`) through a child `sh`,
/// so the multi-threaded test process never holds a writable descriptor to it: another test's
/// fork could inherit such a descriptor and make exec fail with "Text file busy".
pub fn install_script(path: &Path, content: &str) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// The Ultralytics-format fixture model (96 px input, classes lionfish, urchin, abalone).
pub fn fixture_onnx() -> PathBuf {
    workspace_root().join("tests/fixtures/ultralytics-yolov8t-96.onnx")
}

/// A models folder as `trident export` writes it: one copy of the fixture per variant with its
/// card (classes `names`, floor 0.25). Returns the folder and the ONNX digest.
pub fn fixture_models(dir: &Path, variants: &[&str], names: &[&str]) -> (PathBuf, String) {
    let bytes = std::fs::read(fixture_onnx()).expect("read the fixture model");
    let digest = sha256_hex(&bytes);
    let out = dir.join("models");
    std::fs::create_dir_all(&out).unwrap();
    for v in variants {
        let file = format!("{v}.onnx");
        std::fs::write(out.join(&file), &bytes).unwrap();
        let info = |name: &str, shape: &[i64]| TensorInfo {
            name: name.into(),
            shape: shape.iter().map(|&d| CardDim::Fixed(d)).collect(),
            dtype: "float32".into(),
        };
        let card = ModelCard {
            format: FORMAT.into(),
            file: file.clone(),
            sha256: digest.clone(),
            bytes: bytes.len() as u64,
            opset: 13,
            precision: "fp32".into(),
            input: info("images", &[1, 3, 96, 96]),
            output: info("output0", &[1, 7, 189]),
            names: names.iter().map(|n| n.to_string()).collect(),
            imgsz: 96,
            strides: vec![8, 16, 32],
            anchors: 189,
            variant: Some(v.to_string()),
            conf_floor: Some(0.25),
            source: CardSource {
                kind: "onnx".into(),
                file: "ultralytics-yolov8t-96.onnx".into(),
                sha256: digest.clone(),
            },
            metrics: None,
            verification: None,
            lint: vec![],
            trident_version: "test".into(),
        };
        card.save(&ModelCard::path_for(&out.join(file))).unwrap();
    }
    (out, digest)
}

/// Calibration tables for the fixture models (`digest` each): one `temperature` for every
/// variant, plain WBF (iou 0.55, average confidence, equal weights), no thresholds, no TTA view.
/// Tests change the fields they exercise.
pub fn fixture_tables(
    digest: &str,
    variants: &[&str],
    names: &[&str],
    temperature: f32,
) -> trident_core::calibration::CalibrationTables {
    use trident_core::calibration::{
        CalibrationTables, ConfType, FusionMethod, FusionTable, ModelCalibration, SCHEMA,
    };
    CalibrationTables {
        schema: SCHEMA.into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        models: variants
            .iter()
            .map(|v| ModelCalibration {
                variant: v.to_string(),
                sha256: digest.into(),
                temperature,
                class_temperatures: None,
            })
            .collect(),
        fusion: FusionTable {
            method: FusionMethod::Wbf,
            iou_thr: 0.55,
            skip_box_thr: 0.0,
            conf_type: ConfType::Avg,
            weights: Default::default(),
        },
        thresholds: Default::default(),
        tta: vec![],
        fitted_on: Default::default(),
    }
}

/// The inputs of a release as `trident export --package` reads them, in `dir`: fixture models
/// for the three variants, calibration tables fitted for exactly those models, the repository's
/// Nano profiles and systemd unit, `binary` as the runtime, and `release.yaml` naming them all.
/// Returns the config's path.
pub fn release_inputs(dir: &Path, binary: &Path, arch: &str) -> PathBuf {
    let variants = ["high_recall", "balanced", "high_precision"];
    let names = ["lionfish", "urchin", "abalone"];
    let (models, digest) = fixture_models(dir, &variants, &names);
    let mut tables = fixture_tables(&digest, &variants, &names, 0.8);
    tables.thresholds = [("lionfish".to_string(), 0.3)].into();
    let calibration = dir.join("calibration.yaml");
    tables.save(&calibration).unwrap();
    let root = workspace_root();
    let config = dir.join("release.yaml");
    let text = format!(
        "name: trident\nversion: 1.2.3\ntarget: jetson-nano-jp46\nmodels:\n  dir: {models}\n  variants: [high_recall, balanced, high_precision]\ncalibration: {calibration}\nprofiles:\n  - {p10}\n  - {p5}\nbinary: {binary}\nsystemd_unit: {unit}\ntensorrt_shim: {{source: {shim}}}\ndevice: {{device: jetson-nano, arch: {arch}, jetpack: \"4.6\", tensorrt: \"8\", max_glibc: \"2.27\"}}\n",
        models = models.display(),
        calibration = calibration.display(),
        p10 = root.join("configs/profiles/nano-10w.yaml").display(),
        p5 = root.join("configs/profiles/nano-5w.yaml").display(),
        binary = binary.display(),
        unit = root.join("deploy/systemd/trident-edge.service").display(),
        shim = root.join("edge-runtime/tensorrt/shim").display(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Release inputs for a package this machine can run (the test fleet's units are this
/// machine): the host's `trident-edge`, its architecture and glibc, target `test`.
pub fn host_release_inputs(dir: &Path) -> PathBuf {
    let runtime = host_runtime();
    let config = release_inputs(dir, &runtime, std::env::consts::ARCH);
    let glibc = trident_package::elf::inspect(&runtime)
        .unwrap()
        .max_glibc
        .unwrap_or_else(|| "2.17".into());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_glibc: \"2.27\"", &format!("max_glibc: \"{glibc}\""))
        .replace("target: jetson-nano-jp46", "target: test");
    std::fs::write(&config, text).unwrap();
    config
}

/// A tiny C program compiled for aarch64 with zig against glibc `glibc` (e.g. "2.27"): an ELF
/// that stands in for the runtime where only its architecture and glibc needs matter.
pub fn aarch64_program(dir: &Path, glibc: &str) -> PathBuf {
    let src = dir.join("hello.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void) { puts(\"hello from aarch64\"); return 0; }\n",
    )
    .unwrap();
    let out = dir.join(format!("hello-glibc-{glibc}"));
    let status = Command::new(python())
        .args(["-m", "ziglang", "cc", "-target"])
        .arg(format!("aarch64-linux-gnu.{glibc}"))
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run zig (the venv's ziglang; `cargo xtask setup` installs it)");
    assert!(
        status.success(),
        "zig cc for aarch64-linux-gnu.{glibc} failed"
    );
    out
}

/// The cross-compiled `trident-edge` (aarch64, glibc 2.27) and the sysroot qemu runs it with,
/// from `cargo xtask test` (or `cargo xtask cross` + the two variables by hand).
///
/// Tests of the shipped binary must not pass without it, so a missing build panics with the
/// command that makes it.
pub fn cross_runtime() -> (PathBuf, PathBuf) {
    let root = workspace_root();
    let binary = std::env::var_os("TRIDENT_EDGE_AARCH64")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/aarch64-unknown-linux-gnu/release/trident-edge"));
    let sysroot = std::env::var_os("TRIDENT_AARCH64_SYSROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/aarch64-sysroot"));
    assert!(
        binary.is_file() && sysroot.join("lib/ld-linux-aarch64.so.1").exists(),
        "the aarch64 runtime ({}) or its sysroot ({}) is missing: run `cargo xtask cross` (or the whole suite with `cargo xtask test`)",
        binary.display(),
        sysroot.display()
    );
    (binary, sysroot)
}

/// `qemu-aarch64-static PROGRAM` with the sysroot's loader and libraries, GStreamer plugins
/// from the sysroot scanned in-process (the plugin scanner is an aarch64 program too).
pub fn qemu(program: &Path, sysroot: &Path) -> Command {
    let mut c = Command::new("qemu-aarch64-static");
    c.arg(program)
        .env("QEMU_LD_PREFIX", sysroot)
        .env(
            "GST_PLUGIN_SYSTEM_PATH_1_0",
            sysroot.join("usr/lib/aarch64-linux-gnu/gstreamer-1.0"),
        )
        .env("GST_REGISTRY_FORK", "no")
        .env_remove("GST_PLUGIN_PATH")
        .env_remove("GST_PLUGIN_PATH_1_0");
    c
}

/// This workspace's host build of `trident-edge` (`target/<profile>/trident-edge`), which
/// `cargo test --workspace` builds before any test runs. Tests that play units run it; without
/// it they fail with the command that builds it.
pub fn host_runtime() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/trident-edge
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("trident-edge"))
        .expect("a test binary lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: run the suite with `cargo xtask test` (or `cargo build -p trident-edge` first)",
        bin.display()
    );
    bin
}
