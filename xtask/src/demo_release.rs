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
        "package",
        "build",
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
    let t = Instant::now();
    let (verdict, text) = mender_artifact(&pkg)?;
    d.push(Stage::new(
        "mender artifact",
        verdict,
        text,
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
    let (verdict, shim) = shim_of(&release)?;
    d.push(Stage::new("", verdict, shim, 0.0));

    doctor(d, &cross, &release)?;
    Ok(release)
}

/// The Mender artifact `package build` wrote beside the package (the release config's `mender:`
/// section), checked by the real `mender-artifact`: its checksums (`validate`) and what Mender
/// goes by (`read`: name, device type, payload type, the package inside).
fn mender_artifact(pkg: &str) -> Result<(Verdict, String)> {
    let artifact = format!("{}.mender", pkg.trim_end_matches(".tar.zst"));
    let tool = |args: &[&str]| -> Result<(bool, String)> {
        let out = Command::new("mender-artifact")
            .current_dir(root())
            .args(args)
            .output()
            .context("running mender-artifact (`cargo xtask setup` installs it)")?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let (valid, why) = tool(&["validate", &artifact])?;
    if !valid {
        return Ok((
            Verdict::Fail,
            format!(
                "{artifact}: mender-artifact validate refused it: {}",
                why.trim()
            ),
        ));
    }
    let (_, read) = tool(&["read", &artifact])?;
    let package = Path::new(pkg)
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let expected = [
        format!("Name: trident-{}", env!("CARGO_PKG_VERSION")),
        "Compatible devices: '[jetson-nano]'".to_string(),
        "Type:   trident".to_string(),
        format!("name:     {package}.minisig"),
    ];
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !read.contains(e.as_str()))
        .collect();
    let bytes = std::fs::metadata(root().join(&artifact))?.len();
    Ok(if missing.is_empty() {
        (
            Verdict::Pass,
            format!(
                "{artifact} ({:.1} MiB): validated by mender-artifact; trident-{} for jetson-nano, payload type trident (package + signature)",
                bytes as f64 / (1 << 20) as f64,
                env!("CARGO_PKG_VERSION")
            ),
        )
    } else {
        (
            Verdict::Fail,
            format!("{artifact}: mender-artifact read lacks {missing:?}"),
        )
    })
}

/// What the installed package carries of the TensorRT shim; the source must be there.
fn shim_of(release: &Path) -> Result<(Verdict, String)> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(release.join("manifest.json"))?)?;
    let shim = &m["tensorrt_shim"];
    let files = shim["source_files"].as_array().map_or(0, Vec::len);
    let source_ok = files > 0
        && shim["source_files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .all(|f| release.join(f).is_file());
    let text = match shim["prebuilt"]["tensorrt"].as_str() {
        Some(v) => format!(
            "TensorRT shim: prebuilt for TensorRT {v} + source ({files} files; floor: the source is in the package)"
        ),
        None => format!(
            "TensorRT shim: source ({files} files), built on each unit by prepare (this sysroot has no TensorRT, so no prebuilt; floor: the source is in the package)"
        ),
    };
    Ok((Verdict::from_ok(source_ok), text))
}

/// `trident-edge doctor` with the aarch64 binary under qemu on the installed package. This machine
/// has no Jetson, GPU or TensorRT, so the profile's first backend (tensorrt) must be reported as
/// not loading, with its reason, and tract as the fallback that loads: the floor is that doctor
/// says so rather than crashing or claiming TensorRT.
fn doctor(d: &mut Demo, cross: &crate::cross::CrossBuild, release: &Path) -> Result<()> {
    let t = Instant::now();
    let mut c = Command::new("qemu-aarch64-static");
    c.current_dir(root())
        .arg(&cross.binary)
        .arg("doctor")
        .arg("--package")
        .arg(release)
        .arg("--engine-cache")
        .arg(d.dir.join("device/engines"))
        .arg("--json")
        .env("QEMU_LD_PREFIX", &cross.sysroot)
        .env("RUST_LOG", "warn");
    println!("\n$ {}", crate::describe(&c));
    let out = c
        .output()
        .context("running trident-edge doctor under qemu")?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "trident-edge doctor printed no report ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let backends = report["backends"].as_array().cloned().unwrap_or_default();
    let line = |b: &serde_json::Value| {
        let detail = b["detail"].as_str().unwrap_or("");
        let short: String = detail.chars().take(90).collect();
        format!(
            "{} {}{}",
            b["backend"].as_str().unwrap_or("?"),
            if b["loads"] == true {
                "loads"
            } else {
                "does not load: "
            },
            if b["loads"] == true {
                String::new()
            } else {
                short
            }
        )
    };
    let first_is_tensorrt = backends.first().is_some_and(|b| b["backend"] == "tensorrt");
    let honest = first_is_tensorrt
        && backends[0]["loads"] == false
        && !out.status.success()
        && backends.iter().any(|b| b["loads"] == true);
    let gst = report["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v[0] == "GStreamer")
        .and_then(|v| v[1].as_str())
        .unwrap_or("?")
        .split(' ')
        .next()
        .unwrap_or("?")
        .to_string();
    d.push(Stage::new(
        "doctor",
        Verdict::from_ok(honest),
        format!(
            "aarch64 under qemu, exit {}: {} (floor: no TensorRT here, so the profile's tensorrt is reported missing and a fallback loads)",
            out.status.code().unwrap_or(-1),
            report["verdict"].as_str().unwrap_or("?").split(':').next().unwrap_or("?"),
        ),
        t.elapsed().as_secs_f64(),
    ));
    for b in &backends {
        d.push(Stage::new("", Verdict::None, line(b), 0.0));
    }
    d.push(Stage::new(
        "",
        Verdict::None,
        format!(
            "GStreamer {gst} (the sysroot's, under qemu); Jetson elements present: {}",
            {
                let jetson: Vec<&str> = report["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["present"] == true)
                    .filter_map(|e| e["element"].as_str())
                    .filter(|e| e.starts_with("nv"))
                    .collect();
                if jetson.is_empty() {
                    "none".to_string()
                } else {
                    jetson.join(", ")
                }
            }
        ),
        0.0,
    ));
    Ok(())
}

/// How many files an installed package's manifest lists.
fn manifest_files(release: &Path) -> Result<usize> {
    let path = release.join("manifest.json");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(m["files"].as_object().map_or(0, |f| f.len()))
}
