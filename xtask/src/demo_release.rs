//! The demo's release stages: the Nano runtime (cross build), a throwaway signing key, the signed
//! package, and its verification on the host and — under qemu-aarch64 — by the device's own
//! binary, which installs it as a unit would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::demo::{Demo, Stage, run_cmd};
use crate::demo_floors::Verdict;
use crate::root;

/// Runs the stages; returns the installed release folder.
pub(crate) fn run(d: &mut Demo) -> Result<PathBuf> {
    let t = Instant::now();
    let cross = crate::cross::build()?;
    d.push(Stage::new(
        "cross build",
        Verdict::Pass,
        format!(
            "trident-edge for aarch64 (glibc ≤ {}, checked), {:.1} MiB",
            crate::cross::MAX_GLIBC,
            std::fs::metadata(&cross.binary)?.len() as f64 / (1 << 20) as f64
        ),
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    let _ = std::fs::remove_dir_all(d.dir.join("keys"));
    run_cmd(&mut d.trident(&["package", "keygen", "--unencrypted", "--out", "demo/keys"]))?;
    let mut package = d.trident(&[
        "export",
        "--package",
        "--config",
        "configs/release.yaml",
        "--out",
        "demo/dist",
        "--sign-key",
        "demo/keys/trident.key",
        "--models",
        "demo/models",
        "--calibration",
        "demo/calibration/calibration.yaml",
    ]);
    package
        .arg("--binary")
        .arg(&cross.binary)
        .env_remove("TRIDENT_SIGN_KEY");
    run_cmd(&mut package)?;
    let name = format!(
        "trident-{}-jetson-nano-jp46.tar.zst",
        env!("CARGO_PKG_VERSION")
    );
    let pkg = format!("demo/dist/{name}");
    let bytes = std::fs::metadata(root().join(&pkg))?.len();
    d.push(Stage::new(
        "package",
        Verdict::Pass,
        format!(
            "{pkg} ({:.1} MiB) + .minisig (throwaway key demo/keys)",
            bytes as f64 / (1 << 20) as f64
        ),
        t.elapsed().as_secs_f64(),
    ));

    // Both verifiers exit non-zero on any bad signature, hash, file or fact: passing them is
    // the verdict.
    let t = Instant::now();
    run_cmd(&mut d.trident(&[
        "package",
        "verify",
        &pkg,
        "--pubkey",
        "demo/keys/trident.pub",
    ]))?;
    let release = d
        .dir
        .join(format!("device/releases/{}", env!("CARGO_PKG_VERSION")));
    let _ = std::fs::remove_dir_all(d.dir.join("device"));
    std::fs::create_dir_all(d.dir.join("device/releases"))?;
    let mut device = Command::new("qemu-aarch64-static");
    device
        .current_dir(root())
        .arg(&cross.binary)
        .args([
            "verify",
            &pkg,
            "--pubkey",
            "demo/keys/trident.pub",
            "--install",
        ])
        .arg(&release)
        .env("QEMU_LD_PREFIX", &cross.sysroot);
    run_cmd(&mut device)?;
    d.push(Stage::new(
        "verify",
        Verdict::Pass,
        format!(
            "host and device (aarch64 under qemu): signature and {} sha256s, installed → {}",
            manifest_files(&release)?,
            release.strip_prefix(root()).unwrap_or(&release).display()
        ),
        t.elapsed().as_secs_f64(),
    ));
    Ok(release)
}

/// How many files an installed package's manifest lists.
fn manifest_files(release: &Path) -> Result<usize> {
    let path = release.join("manifest.json");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(m["files"].as_object().map_or(0, |f| f.len()))
}
