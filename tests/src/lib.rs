//! Helpers for the workspace-level tests: where the repository and its Python venv are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use trident_core::digest::sha256_hex;
use trident_core::model_card::{CardDim, CardSource, FORMAT, ModelCard, TensorInfo};

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
