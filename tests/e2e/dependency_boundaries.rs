//! The crate graph in data-flow order. The edge runtime, the inference layer and the shared
//! contracts must build for a Jetson without tch or Python, and the exporter must run where no
//! libtorch is installed: none of them may depend, directly or through another crate, on libtorch
//! or Python bindings. Only the device runtime (`trident-edge`) pulls in GStreamer, the HTTP
//! server and the service's command-line and signal handling: the host's libraries share the
//! inference layer (`trident-infer`), not the device crate (dev-dependencies of tests aside).

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
        "trident-infer",
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

/// What only the device runtime may link: its sources, its HTTP server, its service plumbing.
const DEVICE_ONLY: &[&str] = &[
    "trident-edge",
    "gstreamer",
    "hyper",
    "hyper-util",
    "tokio",
    "ctrlc",
    "signal-hook",
    "tracing-subscriber",
];

#[test]
fn only_the_device_runtime_pulls_in_gstreamer_http_and_the_service() {
    for package in [
        "trident-core",
        "trident-infer",
        "trident-tensorrt",
        "trident-data",
        "trident-eval",
        "trident-trainer",
        "trident-exporter",
        "trident-calibration",
        "trident-package",
    ] {
        let deps = dependencies(package);
        assert!(
            deps.iter().any(|d| d == package),
            "cargo tree listed nothing for {package}"
        );
        for f in DEVICE_ONLY {
            assert!(
                !deps.iter().any(|d| d == f),
                "{package} depends on {f}, which only trident-edge may"
            );
        }
    }
    // The device runtime itself does (the check above would pass on an empty graph otherwise).
    let edge = dependencies("trident-edge");
    for f in ["gstreamer", "hyper", "trident-infer"] {
        assert!(edge.iter().any(|d| d == f), "trident-edge without {f}");
    }
}
