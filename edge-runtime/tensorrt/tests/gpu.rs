//! GPU detection with fake nvidia-smi programs and fake device trees.
#![cfg(unix)]

use crate::common;

use std::ffi::OsStr;
use std::path::Path;

use common::install_script;
use trident_tensorrt::{Error, detect_gpu_in};

fn device_tree(root: &Path, compatible: &[u8]) {
    let dir = root.join("proc/device-tree");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("compatible"), compatible).unwrap();
}

fn no_smi(root: &Path) -> std::path::PathBuf {
    root.join("no-such-nvidia-smi")
}

#[test]
fn override_wins() {
    let root = tempfile::tempdir().unwrap();
    device_tree(root.path(), b"nvidia,tegra194\0");
    let g = detect_gpu_in(
        root.path(),
        no_smi(root.path()).as_os_str(),
        Some("NVIDIA Tegra X1;5.3"),
    )
    .unwrap();
    assert_eq!(
        (g.name.as_str(), g.compute_capability),
        ("NVIDIA Tegra X1", (5, 3))
    );
    let e = detect_gpu_in(root.path(), no_smi(root.path()).as_os_str(), Some("Tegra")).unwrap_err();
    assert!(
        e.is_input_error() && e.to_string().contains("TRIDENT_GPU"),
        "{e}"
    );
}

#[test]
fn nvidia_smi_first_gpu() {
    let root = tempfile::tempdir().unwrap();
    let smi = root.path().join("nvidia-smi");
    install_script(
        &smi,
        "#!/bin/sh\n[ \"$1\" = --query-gpu=name,compute_cap ] && [ \"$2\" = --format=csv,noheader ] || exit 3\n\
         echo 'NVIDIA H100 80GB HBM3, 9.0'\necho 'NVIDIA A100-SXM4-40GB, 8.0'\n",
    );
    device_tree(root.path(), b"nvidia,tegra210\0");
    let g = detect_gpu_in(root.path(), smi.as_os_str(), None).unwrap();
    assert_eq!(
        (g.name.as_str(), g.compute_capability),
        ("NVIDIA H100 80GB HBM3", (9, 0))
    );
}

#[test]
fn jetson_device_trees() {
    for (compatible, name, cc) in [
        (
            &b"nvidia,p3450-0000\0nvidia,jetson-nano\0nvidia,tegra210\0"[..],
            "NVIDIA Tegra X1",
            (5, 3),
        ),
        (
            b"nvidia,p3310\0nvidia,tegra186\0",
            "NVIDIA Tegra X2",
            (6, 2),
        ),
        (
            b"nvidia,p3668-0000\0nvidia,tegra194\0",
            "NVIDIA Xavier",
            (7, 2),
        ),
        (
            b"nvidia,p3767-0005\0nvidia,tegra234\0",
            "NVIDIA Orin",
            (8, 7),
        ),
    ] {
        let root = tempfile::tempdir().unwrap();
        device_tree(root.path(), compatible);
        let g = detect_gpu_in(root.path(), no_smi(root.path()).as_os_str(), None).unwrap();
        assert_eq!((g.name.as_str(), g.compute_capability), (name, cc));
    }
}

#[test]
fn failing_nvidia_smi_falls_back_to_the_device_tree() {
    let root = tempfile::tempdir().unwrap();
    let smi = root.path().join("nvidia-smi");
    install_script(
        &smi,
        "#!/bin/sh\necho 'Field \"compute_cap\" is not a valid field to query.'\nexit 2\n",
    );
    device_tree(root.path(), b"nvidia,jetson-nano\0nvidia,tegra210\0");
    let g = detect_gpu_in(root.path(), smi.as_os_str(), Some("")).unwrap();
    assert_eq!(g.compute_capability, (5, 3));
}

#[test]
fn nothing_found_names_what_was_tried() {
    let root = tempfile::tempdir().unwrap();
    let e = detect_gpu_in(root.path(), OsStr::new("/nonexistent/nvidia-smi"), None).unwrap_err();
    assert!(matches!(e, Error::Gpu(_)));
    let msg = e.to_string();
    for needle in [
        "TRIDENT_GPU",
        "/nonexistent/nvidia-smi",
        "proc/device-tree/compatible",
        "NAME;MAJOR.MINOR",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in {msg}");
    }

    device_tree(root.path(), b"raspberrypi,4-model-b\0brcm,bcm2711\0");
    let msg = detect_gpu_in(root.path(), OsStr::new("/nonexistent/nvidia-smi"), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no known Jetson SoC") && msg.contains("nvidia,tegra210"),
        "{msg}"
    );
}
