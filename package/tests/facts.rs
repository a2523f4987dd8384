//! Device facts from a Jetson's files, and the compatibility check against a manifest.

use crate::common;

use std::path::Path;

use trident_core::package::PackagedBinary;
use trident_package::Error;
use trident_package::facts::{self, DeviceFacts, jetpack_for_l4t, parse_nv_tegra_release, probe};

const RELEASE: &str = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n";

const DPKG: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: arm64
Version: 2.27-3ubuntu1.6
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: tensorrt
Status: deinstall ok config-files
Version: 7.1.3.0-1+cuda10.2

Package: libnvinfer8
Status: install ok installed
Architecture: arm64
Version: 8.2.1-1+cuda10.2
";

fn jetson_root(dir: &Path) -> &Path {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("var/lib/dpkg")).unwrap();
    std::fs::write(dir.join("etc/nv_tegra_release"), RELEASE).unwrap();
    std::fs::write(dir.join("var/lib/dpkg/status"), DPKG).unwrap();
    dir
}

fn nano(arch: &str) -> DeviceFacts {
    DeviceFacts {
        arch: arch.into(),
        arch_origin: "test".into(),
        l4t: Some("32.7.1".into()),
        jetpack: Some("4.6.1".into()),
        tensorrt: Some("8.2.1".into()),
        glibc: Some("2.27".into()),
        root: "/".into(),
    }
}

#[test]
fn a_jetson_root_gives_l4t_jetpack_tensorrt_and_glibc() {
    let dir = tempfile::tempdir().unwrap();
    let f = probe(jetson_root(dir.path()));
    assert_eq!(f.arch, std::env::consts::ARCH);
    assert_eq!(f.l4t.as_deref(), Some("32.7.1"));
    assert_eq!(f.jetpack.as_deref(), Some("4.6.1"));
    assert_eq!(
        f.tensorrt.as_deref(),
        Some("8.2.1"),
        "libnvinfer8, not the removed tensorrt 7"
    );
    assert_eq!(f.glibc.as_deref(), Some("2.27"));
    assert_eq!(f.release_file(), dir.path().join("etc/nv_tegra_release"));
}

#[test]
fn a_mounted_root_gives_its_own_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let f = DeviceFacts::probe_target(jetson_root(dir.path()));
    assert_eq!(f.arch, "aarch64");
    assert!(
        f.arch_origin.contains("nv_tegra_release"),
        "{}",
        f.arch_origin
    );
    assert_eq!(f.jetpack.as_deref(), Some("4.6.1"));
    // Without the release file, libc6's dpkg architecture says it.
    std::fs::remove_file(dir.path().join("etc/nv_tegra_release")).unwrap();
    let f = DeviceFacts::probe_target(dir.path());
    assert_eq!(f.arch, "aarch64");
    assert!(f.arch_origin.contains("libc6"), "{}", f.arch_origin);
    let empty = tempfile::tempdir().unwrap();
    let f = DeviceFacts::probe_target(empty.path());
    assert_eq!(f.arch, "unknown");
    let m = common::manifest_for(common::FILES, common::target("aarch64"));
    let e = facts::check(&m, &f).unwrap_err().to_string();
    assert!(e.contains("unknown") && e.contains("nor"), "{e}");
}

#[test]
fn an_ordinary_machine_has_no_jetson_facts() {
    let dir = tempfile::tempdir().unwrap();
    let f = probe(dir.path());
    assert_eq!(
        (f.l4t, f.jetpack, f.tensorrt, f.glibc),
        (None, None, None, None)
    );
}

#[test]
fn l4t_releases_map_to_jetpack() {
    assert_eq!(parse_nv_tegra_release(RELEASE).as_deref(), Some("32.7.1"));
    assert_eq!(
        parse_nv_tegra_release("# R32 (release), REVISION: 6.1, GCID: 1").as_deref(),
        Some("32.6.1")
    );
    assert_eq!(parse_nv_tegra_release("garbage"), None);
    for (l4t, jp) in [
        ("32.6.1", Some("4.6")),
        ("32.7.1", Some("4.6.1")),
        ("32.7.2", Some("4.6.2")),
        ("32.7.3", Some("4.6.3")),
        ("32.7.4", Some("4.6.4")),
        ("32.7.5", Some("4.6.5")),
        ("32.7.6", Some("4.6.6")),
        ("32.5.1", Some("4.5.1")),
        ("32.5.0", Some("4.5")),
        ("32.4.4", Some("4.4.1")),
        ("32.4.3", Some("4.4")),
        ("35.1.0", None),
        ("32.7.9", None),
    ] {
        assert_eq!(jetpack_for_l4t(l4t), jp, "{l4t}");
    }
}

#[test]
fn a_matching_device_passes_without_warnings() {
    let m = common::manifest_for(common::FILES, common::target("aarch64"));
    assert!(facts::check(&m, &nano("aarch64")).unwrap().is_empty());
}

#[test]
fn another_architecture_is_incompatible() {
    let m = common::manifest_for(common::FILES, common::target("aarch64"));
    let e = facts::check(&m, &nano("x86_64")).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Incompatible { .. }) && e.is_input_error());
    assert!(
        text.contains("target.arch") && text.contains("aarch64") && text.contains("x86_64"),
        "{text}"
    );
}

#[test]
fn another_jetpack_or_tensorrt_is_incompatible_naming_where_it_was_read() {
    let m = common::manifest_for(common::FILES, common::target("aarch64"));
    let mut device = nano("aarch64");
    device.l4t = Some("32.5.1".into());
    device.jetpack = Some("4.5.1".into());
    let text = facts::check(&m, &device).unwrap_err().to_string();
    assert!(
        text.contains("target.jetpack")
            && text.contains("JetPack 4.6")
            && text.contains("JetPack 4.5.1")
            && text.contains("nv_tegra_release"),
        "{text}"
    );
    let mut device = nano("aarch64");
    device.tensorrt = Some("7.1.3".into());
    let text = facts::check(&m, &device).unwrap_err().to_string();
    assert!(
        text.contains("target.tensorrt") && text.contains("7.1.3") && text.contains("dpkg/status"),
        "{text}"
    );
    // The refusal says what to flash.
    assert!(
        text.contains("TensorRT 8.x: flash JetPack 4.6 (L4T R32.6.1, TensorRT 8.0.1)"),
        "{text}"
    );
}

#[test]
fn both_jetpack_4_6_lines_run_a_package_for_tensorrt_8() {
    // JetPack 4.6 (TensorRT 8.0.1) and 4.6.1+ (8.2.1), with the old manifests' "8.2" and the
    // release's "8": only the major binds.
    for wanted in ["8", "8.2", "8.0"] {
        let mut target = common::target("aarch64");
        target.tensorrt = wanted.into();
        let m = common::manifest_for(common::FILES, target);
        for (l4t, jp, trt) in [("32.6.1", "4.6", "8.0.1"), ("32.7.4", "4.6.4", "8.2.1")] {
            let mut device = nano("aarch64");
            device.l4t = Some(l4t.into());
            device.jetpack = Some(jp.into());
            device.tensorrt = Some(trt.into());
            assert!(
                facts::check(&m, &device).is_ok(),
                "{wanted} on JetPack {jp}"
            );
        }
        // TensorRT 10 is another major.
        let mut device = nano("aarch64");
        device.tensorrt = Some("10.3.0".into());
        assert!(facts::check(&m, &device).is_err(), "{wanted} on 10.3");
    }
}

#[test]
fn the_release_table_agrees_with_itself() {
    for r in facts::JETPACK_RELEASES {
        assert_eq!(jetpack_for_l4t(r.l4t), Some(r.jetpack), "{r:?}");
    }
    assert_eq!(
        facts::release_for_l4t("32.6.1").map(|r| r.tensorrt),
        Some("8.0.1")
    );
    assert_eq!(
        facts::release_for_l4t("32.7.2").map(|r| r.tensorrt),
        Some("8.2.1")
    );
    assert_eq!(
        facts::jetpacks_with_tensorrt_major(8).as_deref(),
        Some(
            "JetPack 4.6 (L4T R32.6.1, TensorRT 8.0.1) or 4.6.1 and later (L4T R32.7.x, TensorRT 8.2.1)"
        )
    );
    assert_eq!(facts::jetpacks_with_tensorrt_major(9), None);
}

#[test]
fn an_older_glibc_than_the_binary_needs_is_incompatible() {
    let mut m = common::manifest_for(common::FILES, common::target("aarch64"));
    m.binary = Some(PackagedBinary {
        file: "bin/trident-edge".into(),
        sha256: "0".repeat(64),
        max_glibc: "2.28".into(),
    });
    let e = facts::check(&m, &nano("aarch64")).unwrap_err().to_string();
    assert!(
        e.contains("binary.max_glibc") && e.contains("2.28") && e.contains("glibc 2.27"),
        "{e}"
    );
    // Without a binary, the target's glibc is what counts.
    m.binary = None;
    m.target.max_glibc = "2.31".into();
    let e = facts::check(&m, &nano("aarch64")).unwrap_err().to_string();
    assert!(e.contains("target.max_glibc") && e.contains("2.31"), "{e}");
}

#[test]
fn unreadable_facts_become_warnings() {
    let m = common::manifest_for(common::FILES, common::target(std::env::consts::ARCH));
    let dir = tempfile::tempdir().unwrap();
    let warnings = facts::check(&m, &probe(dir.path())).unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].contains("JetPack not checked") && warnings[0].contains("nv_tegra_release")
    );
    assert!(warnings[1].contains("TensorRT not checked"));
    assert!(warnings[2].contains("glibc not checked"));
    // An L4T release without a known JetPack says which.
    let mut device = nano(std::env::consts::ARCH);
    device.l4t = Some("36.2.0".into());
    device.jetpack = None;
    let warnings = facts::check(&m, &device).unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].contains("L4T 36.2.0"),
        "{warnings:?}"
    );
}
