//! The edge runtime and the shared contracts must build for a Jetson without tch or Python, and
//! the exporter must run where no libtorch is installed: none of them may depend, directly or
//! through another crate, on libtorch or Python bindings (dev-dependencies of tests aside).

use std::process::Command;

const FORBIDDEN: &[&str] = &["tch", "torch-sys", "pyo3", "pyo3-ffi", "cpython"];

fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(trident_e2e::workspace_root())
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn edge_runtime_core_exporter_and_tensorrt_never_pull_in_torch_or_python() {
    for package in [
        "trident-edge",
        "trident-core",
        "trident-exporter",
        "trident-tensorrt",
    ] {
        let deps = dependencies(package);
        assert!(
            deps.iter().any(|d| d == package),
            "cargo tree listed nothing for {package}"
        );
        for f in FORBIDDEN {
            assert!(!deps.iter().any(|d| d == f), "{package} depends on {f}");
        }
    }
}
