//! Helpers for the workspace-level tests: where the repository and its Python venv are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
