//! The shipped runtime: `trident-edge` cross-compiled for the Nano (aarch64, glibc 2.27, by
//! `cargo xtask cross`, which `cargo xtask test` runs first) needs no glibc newer than 2.27,
//! and under qemu-aarch64 with the arm64 sysroot it prints its version, verifies and installs a
//! signed package, and runs that package's models on a `test://` camera.

use crate::common;

use std::process::Command;

use common::{s, stderr, stdout};

#[test]
fn the_cross_compiled_runtime_needs_glibc_2_27_at_most() {
    let (binary, _) = trident_e2e::cross_runtime();
    let facts = trident_package::elf::inspect(&binary).unwrap();
    assert_eq!(facts.machine, "aarch64");
    let glibc = facts.max_glibc.expect("a dynamically linked runtime");
    assert!(
        trident_package::elf::version_le(&glibc, "2.27"),
        "trident-edge needs GLIBC_{glibc}; JetPack 4.6 has 2.27"
    );
    assert_eq!(
        facts.interpreter.as_deref(),
        Some("/lib/ld-linux-aarch64.so.1")
    );
}

#[test]
fn under_qemu_the_runtime_verifies_installs_and_runs_a_package() {
    let (binary, sysroot) = trident_e2e::cross_runtime();
    let edge = |args: &[&str]| {
        let mut c = trident_e2e::qemu(&binary, &sysroot);
        c.args(args);
        c.output().expect("run qemu-aarch64-static")
    };
    let o = edge(&["--version"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("aarch64-unknown-linux-gnu"),
        "{}",
        stdout(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let config = trident_e2e::release_inputs(dir.path(), &binary, "aarch64");
    let keys = dir.path().join("keys");
    let o = Command::new(env!("CARGO_BIN_EXE_trident"))
        .args(["package", "keygen", "--unencrypted", "--out", s(&keys)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("dist");
    let o = Command::new(env!("CARGO_BIN_EXE_trident"))
        .args([
            "export",
            "--package",
            "--config",
            s(&config),
            "--out",
            s(&out),
        ])
        .arg("--sign-key")
        .arg(keys.join("trident.key"))
        .env_remove("TRIDENT_SIGN_KEY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let pkg = out.join("trident-1.2.3-jetson-nano-jp46.tar.zst");
    let public = keys.join("trident.pub");

    // Verify on the "device" (this host's / has no L4T release file: warnings, not errors),
    // then install into a release folder.
    let release = dir.path().join("releases/1.2.3");
    let o = edge(&[
        "verify",
        s(&pkg),
        "--pubkey",
        s(&public),
        "--install",
        s(&release),
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("signature: good") && text.contains("installed"),
        "{text}"
    );
    assert!(release.join("bin/trident-edge").is_file());

    // A wrong key on the device: refused, nothing installed.
    let other = dir.path().join("other");
    let o = Command::new(env!("CARGO_BIN_EXE_trident"))
        .args(["package", "keygen", "--unencrypted", "--out", s(&other)])
        .output()
        .unwrap();
    assert!(o.status.success());
    let refused = dir.path().join("releases/refused");
    let o = edge(&[
        "verify",
        s(&pkg),
        "--pubkey",
        s(&other.join("trident.pub")),
        "--install",
        s(&refused),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(!refused.exists());

    // The installed package's models on a test camera, through tract (pure Rust on aarch64).
    let run_out = dir.path().join("run");
    let o = edge(&[
        "run",
        "--package",
        s(&release),
        "--profile",
        s(&release.join("profiles/nano-10w.yaml")),
        "--source",
        "test://",
        "--width",
        "320",
        "--height",
        "240",
        "--duration",
        "4s",
        "--backend",
        "tract",
        "--http",
        "off",
        "--out",
        s(&run_out),
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let summary = stdout(&o);
    assert!(summary.contains("frames in"), "{summary}");
    let frames: usize = summary
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(frames >= 1, "no frame processed: {summary}");
    assert!(run_out.join("detections.jsonl").is_file());

    // doctor on the installed package: the Nano profile asks for tensorrt first; this "unit" has
    // no TensorRT, so doctor says so, names tract as what loads, and exits 1.
    let o = edge(&[
        "doctor",
        "--package",
        s(&release),
        "--engine-cache",
        s(&dir.path().join("engines")),
    ]);
    let report = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{report}\n{}", stderr(&o));
    assert!(
        report.contains("backends (") && report.contains("nano-10w.yaml"),
        "{report}"
    );
    assert!(report.contains("NO  tensorrt"), "{report}");
    assert!(report.contains("ok  tract"), "{report}");
    assert!(
        report.contains("the runtime would fall back to tract"),
        "{report}"
    );
    assert!(report.contains("GStreamer"), "{report}");
}
