//! `cargo xtask cross`: `trident-edge` for the Jetson Nano — aarch64, glibc 2.27 (JetPack 4.6
//! is Ubuntu 18.04) — with cargo-zigbuild, which links against glibc 2.27's symbol versions
//! whatever the build machine's glibc is. `cross` would do the same in Docker, which build
//! machines may not have.
//!
//! GStreamer is linked from a sysroot: `TRIDENT_AARCH64_SYSROOT` names a JetPack/L4T root file
//! system in real use (e.g. from NVIDIA's `Linux_for_Tegra/rootfs`). Without it, Debian's arm64
//! packages stand in: downloaded with apt (the `arm64` architecture added to dpkg, nothing
//! installed) and unpacked under `target/aarch64-sysroot`. The runtime only uses GStreamer 1.14
//! API (no version features on the bindings), so the newer stand-in links the same symbols.
//! The same sysroot lets qemu-aarch64 run the binary in the tests.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::setup::{apt, output, privileged, quiet};
use crate::{cmd, exec, root};

/// The Rust target with the glibc version cargo-zigbuild links against.
pub const ZIG_TARGET: &str = "aarch64-unknown-linux-gnu.2.27";
pub const TARGET: &str = "aarch64-unknown-linux-gnu";
/// The highest glibc the Nano's Ubuntu 18.04 has.
pub const MAX_GLIBC: &str = "2.27";

/// Debian arm64 packages whose files make the stand-in sysroot (their dependencies follow).
const SYSROOT_PACKAGES: &[&str] = &[
    "libc6:arm64",
    "libgstreamer1.0-dev:arm64",
    "libgstreamer-plugins-base1.0-dev:arm64",
    // videotestsrc, videoconvert, appsink: what `test://` sources need under qemu.
    "gstreamer1.0-plugins-base:arm64",
];

/// The built binary and the sysroot it was linked against.
pub struct CrossBuild {
    pub binary: PathBuf,
    pub sysroot: PathBuf,
}

pub fn run() -> Result<()> {
    let built = build()?;
    let size = std::fs::metadata(&built.binary)?.len();
    println!(
        "{} ({:.1} MiB, aarch64, glibc ≤ {MAX_GLIBC}; sysroot {})",
        built.binary.display(),
        size as f64 / (1 << 20) as f64,
        built.sysroot.display()
    );
    Ok(())
}

/// Builds `trident-edge` for the Nano (release profile) and checks its glibc needs.
pub fn build() -> Result<CrossBuild> {
    build_with(None)
}

/// As [`build`], but as a background job beside the test suite: at a lower CPU priority (the
/// suite's tests keep theirs), with cargo's output in `log` (shown when the build fails) so
/// that it does not interleave with the tests'.
pub fn build_in_background(log: &Path) -> Result<CrossBuild> {
    build_with(Some(log))
}

fn build_with(background: Option<&Path>) -> Result<CrossBuild> {
    let sysroot = sysroot()?;
    let zigbuild = [
        "zigbuild",
        "--release",
        "--target",
        ZIG_TARGET,
        "-p",
        "trident-edge",
    ];
    let mut c = match background {
        None => cmd("cargo"),
        Some(_) => {
            let mut c = cmd("nice");
            c.args(["-n", "10", "cargo"]);
            c
        }
    };
    c.args(zigbuild);
    pkg_config_env(&mut c, &sysroot);
    match background {
        None => exec(&mut c).context("cross-compiling trident-edge (cargo zigbuild)")?,
        Some(log) => {
            let shown = crate::describe(&c);
            eprintln!("$ {shown} > {} 2>&1 &", log.display());
            let file = std::fs::File::create(log)
                .with_context(|| format!("creating {}", log.display()))?;
            c.stdout(file.try_clone()?).stderr(file);
            let status = c
                .status()
                .with_context(|| format!("cannot start `{shown}`"))?;
            if !status.success() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                for line in tail.iter().rev() {
                    eprintln!("cross: {line}");
                }
                bail!(
                    "`{shown}` failed with {status} (its output: {})",
                    log.display()
                );
            }
        }
    }
    let binary = root().join(format!("target/{TARGET}/release/trident-edge"));
    let facts = trident_package::elf::inspect(&binary)
        .with_context(|| format!("inspecting {}", binary.display()))?;
    let glibc = facts.max_glibc.clone().unwrap_or_else(|| "none".into());
    if facts.machine != "aarch64" {
        bail!(
            "{} is a {} binary, expected aarch64",
            binary.display(),
            facts.machine
        );
    }
    if !trident_package::elf::version_le(&glibc, MAX_GLIBC) {
        bail!(
            "{} needs GLIBC_{glibc}, newer than the Nano's {MAX_GLIBC}",
            binary.display()
        );
    }
    eprintln!("cross: {} needs GLIBC_{glibc} at most", binary.display());
    let checked = crate::gst_symbols::check(&binary, &sysroot)?;
    eprintln!(
        "cross: its {checked} GStreamer/GLib symbols all exist in GStreamer {} / GLib {} (the Nano's)",
        crate::gst_symbols::NANO_GSTREAMER,
        crate::gst_symbols::NANO_GLIB
    );
    prebuilt_shim(&sysroot)?;
    Ok(CrossBuild { binary, sysroot })
}

/// The cross C++ compiler override for the prebuilt shim.
const CXX_ENV: &str = "TRIDENT_AARCH64_CXX";

/// The TensorRT shim, prebuilt into `target/<TARGET>/release/tensorrt-shim` (where
/// `configs/release.yaml` packages it from) when the sysroot has JetPack's TensorRT and CUDA
/// development files; otherwise that folder is emptied and units build the shim themselves.
fn prebuilt_shim(sysroot: &Path) -> Result<()> {
    use trident_tensorrt::shim_build::{ShimSource, build_prebuilt};
    let out = root().join(format!("target/{TARGET}/release/tensorrt-shim"));
    std::fs::create_dir_all(&out)?;
    // The compiler sees the sysroot's headers and libraries through --sysroot.
    let cxx = std::env::var(CXX_ENV).unwrap_or_else(|_| "aarch64-linux-gnu-g++".into());
    let wrapper = out.join("cxx");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{cxx}' --sysroot='{}' \"$@\"\n",
            sysroot.display()
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    let built = build_prebuilt(
        &ShimSource::in_repository(),
        sysroot,
        "aarch64-linux-gnu",
        &wrapper,
        &out,
    )
    .with_context(|| {
        format!(
            "building the TensorRT shim against {} with {cxx} (set {CXX_ENV})",
            sysroot.display()
        )
    })?;
    match built {
        Ok(record) => eprintln!(
            "cross: TensorRT shim prebuilt for TensorRT {} → {}",
            record.tensorrt,
            out.display()
        ),
        Err(why) => eprintln!(
            "cross: no prebuilt TensorRT shim (the sysroot has no TensorRT development files: {}); packages carry its source and units build it",
            why.missing.first().map(String::as_str).unwrap_or("?")
        ),
    }
    Ok(())
}

/// The package's Debian `symbols` file (its control archive), where dpkg keeps it on an installed
/// system: `var/lib/dpkg/info/<package>.symbols`.
fn extract_symbols(deb: &Path, root: &Path) -> Result<()> {
    let control = tempfile_dir(root)?;
    let status = cmd("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(&control)
        .status()
        .context("running dpkg-deb -e")?;
    if !status.success() {
        bail!("dpkg-deb -e {} failed with {status}", deb.display());
    }
    let symbols = control.join("symbols");
    if symbols.is_file() {
        let name = deb
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .split('_')
            .next()
            .unwrap_or_default()
            .to_string();
        let info = root.join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info)?;
        std::fs::copy(&symbols, info.join(format!("{name}.symbols")))?;
    }
    std::fs::remove_dir_all(&control)?;
    Ok(())
}

/// A fresh scratch folder beside the sysroot being built.
fn tempfile_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.with_extension("control");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

/// pkg-config finds the sysroot's GStreamer and prefixes its paths with the sysroot.
fn pkg_config_env(c: &mut std::process::Command, sysroot: &Path) {
    let lib = sysroot.join("usr/lib/aarch64-linux-gnu/pkgconfig");
    let share = sysroot.join("usr/share/pkgconfig");
    c.env("PKG_CONFIG_ALLOW_CROSS", "1")
        .env("PKG_CONFIG_SYSROOT_DIR", sysroot)
        .env(
            "PKG_CONFIG_LIBDIR",
            std::env::join_paths([lib, share]).expect("plain paths"),
        );
}

/// The sysroot: `TRIDENT_AARCH64_SYSROOT`, or the Debian stand-in (built once).
pub fn sysroot() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TRIDENT_AARCH64_SYSROOT") {
        let dir = PathBuf::from(dir);
        if !dir
            .join("usr/lib/aarch64-linux-gnu/pkgconfig/gstreamer-1.0.pc")
            .is_file()
        {
            bail!(
                "TRIDENT_AARCH64_SYSROOT={}: no usr/lib/aarch64-linux-gnu/pkgconfig/gstreamer-1.0.pc; \
                 expected an L4T root file system with GStreamer's development files",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let dir = root().join("target/aarch64-sysroot");
    let stamp = dir.join(".trident-sysroot");
    // "+symbols": the packages' Debian symbols files are extracted too (gst_symbols checks the
    // binary against them); an older stand-in without them is rebuilt.
    let wanted = format!("{} +symbols", SYSROOT_PACKAGES.join(" "));
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) {
        return Ok(dir);
    }
    eprintln!(
        "cross: building the Debian arm64 stand-in sysroot in {}",
        dir.display()
    );
    if !output(cmd("dpkg").arg("--print-foreign-architectures"))
        .is_some_and(|s| s.lines().any(|l| l.trim() == "arm64"))
    {
        quiet(&mut privileged("dpkg", &["--add-architecture", "arm64"]))?;
        quiet(&mut apt(&["update", "-q"]))?;
    }
    let debs = root().join("target/aarch64-debs");
    std::fs::create_dir_all(debs.join("partial"))?;
    // Download only: the arm64 -dev packages conflict with the host's amd64 ones, and nothing
    // of the build machine's own system should change.
    let archives = format!("Dir::Cache::archives={}", debs.display());
    let mut args = vec![
        "install",
        "--download-only",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        &archives,
    ];
    args.extend(SYSROOT_PACKAGES);
    if quiet(&mut apt(&args)).is_err() {
        // Stale package lists (a fresh arm64 architecture, a mirror update): refresh once.
        quiet(&mut apt(&["update", "-q"]))?;
        quiet(&mut apt(&args)).context("downloading the arm64 packages of the sysroot")?;
    }
    let staging = root().join("target/aarch64-sysroot.partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let mut count = 0;
    for entry in std::fs::read_dir(&debs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            let status = cmd("dpkg-deb")
                .arg("-x")
                .arg(&path)
                .arg(&staging)
                .status()
                .context("running dpkg-deb")?;
            if !status.success() {
                bail!("dpkg-deb -x {} failed with {status}", path.display());
            }
            extract_symbols(&path, &staging)?;
            count += 1;
        }
    }
    std::fs::write(staging.join(".trident-sysroot"), &wanted)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("moving the sysroot into {}", dir.display()))?;
    eprintln!("cross: sysroot from {count} arm64 packages");
    Ok(dir)
}
