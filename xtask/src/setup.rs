//! `cargo xtask setup`: everything a fresh Debian/Ubuntu machine needs, installed idempotently.
//!
//! 1. apt packages: GStreamer headers, plugins and tools; the aarch64 cross linker and libc;
//!    qemu-user-static; pkg-config (only missing packages are installed).
//! 2. `.venv` from `python/requirements.txt`: libtorch (torch), libonnxruntime (onnxruntime),
//!    zig + cargo-zigbuild, and the test references (pycocotools, ensemble-boxes, onnx, numpy,
//!    opencv-python-headless), then `python/requirements-nodeps.txt` without dependencies
//!    (ultralytics, to build the `--weights` test's YOLOv8n state dict);
//!    skipped when the requirements files' hash matches the stamp of the last install.
//! 3. Stable links `.venv/libtorch` and `.venv/onnxruntime/libonnxruntime.so`, which
//!    `.cargo/config.toml` points LIBTORCH and ORT_DYLIB_PATH at.
//! 4. The Rust target `aarch64-unknown-linux-gnu`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cmd, describe, exec, root};

const APT_PACKAGES: &[&str] = &[
    "pkg-config",
    "libgstreamer1.0-dev",
    "libgstreamer-plugins-base1.0-dev",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-tools",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user-static",
    // Verifies package signatures in the tests exactly as a field engineer would.
    "minisign",
    // The deploy tests play Nano units with real OpenSSH servers on loopback; uploads use rsync
    // when both ends have it.
    "openssh-client",
    "openssh-server",
    "rsync",
    // `systemd-analyze verify` checks the unit file the units get.
    "systemd",
    // Mender's artifact tool reads back every artifact trident writes; its client, run
    // standalone, drives the Update Module on loopback units.
    "mender-artifact",
    "mender-client",
    // Makes the ECDSA key a test signs Mender artifacts with, as Mender's documentation does.
    "openssl",
];

const AARCH64: &str = "aarch64-unknown-linux-gnu";

pub fn run() -> Result<()> {
    let start = Instant::now();
    apt_packages()?;
    venv()?;
    links()?;
    rust_target()?;
    eprintln!("setup: ready in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

pub fn output(c: &mut std::process::Command) -> Option<String> {
    c.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn apt_packages() -> Result<()> {
    let mut wanted: Vec<&str> = APT_PACKAGES.to_vec();
    // Debian's own python3 needs python3-venv for `-m venv`; pyenv and similar builds have it.
    if output(cmd("python3").args(["-c", "import venv, ensurepip"])).is_none() {
        wanted.push("python3-venv");
    }
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|p| {
            !output(cmd("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        eprintln!("setup: apt packages present");
        return Ok(());
    }
    eprintln!("setup: installing apt packages: {}", missing.join(" "));
    quiet(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    quiet(&mut install).context("installing apt packages (run as root or with sudo)")
}

/// `apt-get ARGS`, through sudo unless this is root.
pub fn apt(args: &[&str]) -> std::process::Command {
    privileged("apt-get", args)
}

/// A system administration command, through sudo unless this is root.
pub fn privileged(program: &str, args: &[&str]) -> std::process::Command {
    let root_user = output(cmd("id").arg("-u")).is_some_and(|s| s.trim() == "0");
    let mut c = if root_user {
        cmd(program)
    } else {
        let mut c = cmd("sudo");
        c.arg(program);
        c
    };
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Runs a chatty installer, showing its output only when it fails.
pub fn quiet(c: &mut std::process::Command) -> Result<()> {
    let shown = describe(c);
    eprintln!("$ {shown}");
    let out = c
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !out.status.success() {
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        bail!("`{shown}` failed with {}", out.status);
    }
    Ok(())
}

fn venv() -> Result<()> {
    let root = root();
    let python = root.join(".venv/bin/python");
    let mut both = Vec::new();
    for file in ["python/requirements.txt", "python/requirements-nodeps.txt"] {
        let path = root.join(file);
        both.extend(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let wanted = fingerprint(&both);
    let stamp = root.join(".venv/.trident-requirements");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) {
        eprintln!("setup: .venv up to date");
        return Ok(());
    }
    if !python.exists() {
        exec(cmd("python3").args(["-m", "venv", ".venv"]))?;
    }
    exec(cmd(".venv/bin/python").args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-r",
        "python/requirements.txt",
    ]))?;
    exec(cmd(".venv/bin/python").args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-deps",
        "-r",
        "python/requirements-nodeps.txt",
    ]))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// FNV-1a of the requirements files: enough to notice an edit.
fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for e in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let p = e?.path().join("site-packages");
        if p.is_dir() {
            return Ok(p);
        }
    }
    bail!("no site-packages under {}", lib.display())
}

fn links() -> Result<()> {
    let venv = root().join(".venv");
    let site = site_packages(&venv)?;
    link(&site.join("torch"), &venv.join("libtorch"))?;
    let capi = site.join("onnxruntime/capi");
    let ort = std::fs::read_dir(&capi)
        .with_context(|| format!("reading {}", capi.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .with_context(|| format!("no libonnxruntime.so in {}", capi.display()))?;
    std::fs::create_dir_all(venv.join("onnxruntime"))?;
    link(&ort, &venv.join("onnxruntime/libonnxruntime.so"))
}

fn link(target: &Path, at: &Path) -> Result<()> {
    if !target.exists() {
        bail!("{} is missing from the venv", target.display());
    }
    if std::fs::read_link(at).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(target, at)
        .with_context(|| format!("linking {} → {}", at.display(), target.display()))
}

fn rust_target() -> Result<()> {
    if output(cmd("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|s| s.lines().any(|l| l.trim() == AARCH64))
    {
        eprintln!("setup: Rust target {AARCH64} present");
        return Ok(());
    }
    exec(cmd("rustup").args(["target", "add", AARCH64]))
}
