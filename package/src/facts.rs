//! What the device is, and whether a package fits it.
//!
//! A Jetson's release is in `/etc/nv_tegra_release` (the L4T version, which maps to a JetPack
//! release); TensorRT and glibc versions are those of the installed Debian packages in
//! `/var/lib/dpkg/status`. Both are read below a system root so tests (and checks of a mounted
//! SD-card image) can point elsewhere than `/`.

use std::path::{Path, PathBuf};

use trident_core::package::Manifest;

use crate::elf::{parse_version, same_major_minor, version_le};
use crate::error::{Error, Result};

/// The L4T release file below the system root.
pub const NV_TEGRA_RELEASE: &str = "etc/nv_tegra_release";
/// dpkg's database of installed packages below the system root.
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";

/// Facts about the device a package is to run on. `None` fields could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The device's architecture in Rust's spelling (`aarch64` on a Jetson): this program's own
    /// (`std::env::consts::ARCH`) for [`probe`], the system root's for
    /// [`DeviceFacts::probe_target`].
    pub arch: String,
    /// Where `arch` came from, for messages.
    pub arch_origin: String,
    /// L4T release, e.g. `32.7.1`.
    pub l4t: Option<String>,
    /// JetPack release derived from L4T, e.g. `4.6.1`.
    pub jetpack: Option<String>,
    /// TensorRT version, e.g. `8.2.1`.
    pub tensorrt: Option<String>,
    /// glibc version, e.g. `2.27`.
    pub glibc: Option<String>,
    /// The system root the facts were read under (`/` on the device).
    pub root: PathBuf,
}

impl DeviceFacts {
    /// [`probe`]: the facts of the system this program runs on, read under `system_root`.
    pub fn probe(system_root: &Path) -> Self {
        probe(system_root)
    }

    /// The facts of another system whose root file system is mounted at `root` (a Nano's SD
    /// card checked from the host): like [`probe`], but the architecture is the one the system
    /// under `root` was built for (the `EABI:` of its release file, else the architecture of
    /// its installed `libc6`), `unknown` when neither says.
    pub fn probe_target(root: &Path) -> Self {
        let mut facts = probe(root);
        let release = facts.release_file();
        let from_release = std::fs::read_to_string(&release).ok().and_then(|t| {
            t.lines().next().and_then(|l| {
                l.split(',')
                    .find_map(|f| f.trim().strip_prefix("EABI:"))
                    .map(|a| a.trim().to_string())
            })
        });
        let dpkg = facts.dpkg_status();
        let from_dpkg = || {
            let status = std::fs::read_to_string(&dpkg).ok()?;
            let arch = installed_field(&status, "libc6", "Architecture:")?;
            Some(
                match arch.as_str() {
                    "arm64" => "aarch64",
                    "amd64" => "x86_64",
                    "armhf" | "armel" => "arm",
                    "i386" => "x86",
                    other => other,
                }
                .to_string(),
            )
        };
        (facts.arch, facts.arch_origin) = match (from_release, from_dpkg()) {
            (Some(a), _) if !a.is_empty() => (a, format!("EABI in {}", release.display())),
            (_, Some(a)) => (a, format!("libc6's architecture in {}", dpkg.display())),
            _ => (
                "unknown".into(),
                format!(
                    "neither {} nor {} names it",
                    release.display(),
                    dpkg.display()
                ),
            ),
        };
        facts
    }

    /// The release file these facts were read from.
    pub fn release_file(&self) -> PathBuf {
        self.root.join(NV_TEGRA_RELEASE)
    }

    /// The dpkg database these facts were read from.
    pub fn dpkg_status(&self) -> PathBuf {
        self.root.join(DPKG_STATUS)
    }
}

/// Reads the device facts below `system_root` (`/` on the device). Missing or unreadable files
/// leave their facts `None`; [`check`] turns those into warnings.
pub fn probe(system_root: &Path) -> DeviceFacts {
    let l4t = std::fs::read_to_string(system_root.join(NV_TEGRA_RELEASE))
        .ok()
        .and_then(|t| parse_nv_tegra_release(&t));
    let status = std::fs::read_to_string(system_root.join(DPKG_STATUS)).unwrap_or_default();
    let version_of = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| installed_version(&status, n))
            .map(|v| upstream(&v).to_string())
    };
    let tensorrt = version_of(&["libnvinfer8", "tensorrt"]).map(|v| {
        // `8.2.1.8` (the tensorrt meta-package) and `8.2.1` (libnvinfer8) are one release.
        v.split('.').take(3).collect::<Vec<_>>().join(".")
    });
    DeviceFacts {
        arch: std::env::consts::ARCH.to_string(),
        arch_origin: "the architecture this program was built for".into(),
        jetpack: l4t.as_deref().and_then(jetpack_for_l4t).map(str::to_string),
        l4t,
        tensorrt,
        glibc: version_of(&["libc6"]),
        root: system_root.to_path_buf(),
    }
}

/// `# R32 (release), REVISION: 7.1, GCID: …` → `32.7.1`.
pub fn parse_nv_tegra_release(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.trim_start().starts_with("# R"))?;
    let major = line.trim_start().strip_prefix("# R")?;
    let major: String = major.chars().take_while(char::is_ascii_digit).collect();
    let revision = line
        .split(',')
        .find_map(|f| f.trim().strip_prefix("REVISION:"))?
        .trim();
    let l4t = format!("{major}.{revision}");
    parse_version(&l4t).is_some().then_some(l4t)
}

/// The JetPack release of an L4T release (NVIDIA's release table for the Nano's 32.x line);
/// `None` for releases this table does not know.
pub fn jetpack_for_l4t(l4t: &str) -> Option<&'static str> {
    let v = parse_version(l4t)?;
    let (major, minor, patch) = (v[0], v.get(1).copied()?, v.get(2).copied().unwrap_or(0));
    Some(match (major, minor, patch) {
        (32, 7, 1) => "4.6.1",
        (32, 7, 2) => "4.6.2",
        (32, 7, 3) => "4.6.3",
        (32, 7, 4) => "4.6.4",
        (32, 7, 5) => "4.6.5",
        (32, 7, 6) => "4.6.6",
        (32, 6, 1) => "4.6",
        (32, 5, 0) => "4.5",
        (32, 5, 1) => "4.5.1",
        (32, 5, 2) => "4.5.2",
        (32, 4, 4) => "4.4.1",
        (32, 4, _) => "4.4",
        _ => return None,
    })
}

/// The upstream version (`1.14.5` of `1.14.5-0ubuntu1~18.04.2`) of the first of `names` that
/// dpkg's database below `system_root` lists as installed; `None` when none is, or the database
/// cannot be read. For facts beyond [`DeviceFacts`] (GStreamer, in a benchmark report).
pub fn installed_package_version(system_root: &Path, names: &[&str]) -> Option<String> {
    let status = std::fs::read_to_string(system_root.join(DPKG_STATUS)).ok()?;
    names
        .iter()
        .find_map(|n| installed_version(&status, n))
        .map(|v| upstream(&v).to_string())
}

/// The `Version:` of an installed package in dpkg's status file.
fn installed_version(status: &str, package: &str) -> Option<String> {
    installed_field(status, package, "Version:")
}

/// A field (`Version:`, `Architecture:`) of an installed package in dpkg's status file.
fn installed_field(status: &str, package: &str, name: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let installed = field("Status:").is_none_or(|s| s.ends_with(" installed"));
        (field("Package:")? == package && installed)
            .then(|| field(name))
            .flatten()
    })
}

/// `1:2.27-3ubuntu1.6` → `2.27`: the upstream part of a Debian version.
fn upstream(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.split_once('-').map_or(v, |(u, _)| u)
}

/// Checks that a package built for `manifest.target` can run on a device with `facts`: the
/// architecture must match, JetPack and TensorRT must share major.minor with the target, and the
/// device's glibc must be at least the binary's (or the target's). Facts that could not be read
/// are not held against the package; each becomes a warning in the returned list.
pub fn check(manifest: &Manifest, facts: &DeviceFacts) -> Result<Vec<String>> {
    let target = &manifest.target;
    let mut warnings = Vec::new();
    let incompatible =
        |field: &str, package: String, device: &str, origin: String| Error::Incompatible {
            field: field.to_string(),
            package,
            device: device.to_string(),
            origin,
        };
    if facts.arch != target.arch {
        return Err(incompatible(
            "target.arch",
            target.arch.clone(),
            &facts.arch,
            facts.arch_origin.clone(),
        ));
    }
    let release = facts.release_file();
    match (&facts.jetpack, &facts.l4t) {
        (Some(jp), l4t) => {
            if !same_major_minor(jp, &target.jetpack) {
                return Err(incompatible(
                    "target.jetpack",
                    format!("JetPack {} (any {0}.x)", target.jetpack),
                    &format!("JetPack {jp}"),
                    format!(
                        "{}, L4T {}",
                        release.display(),
                        l4t.as_deref().unwrap_or("?")
                    ),
                ));
            }
        }
        (None, Some(l4t)) => warnings.push(format!(
            "JetPack not checked: L4T {l4t} (from {}) is no JetPack release this build knows; the package wants JetPack {}",
            release.display(),
            target.jetpack
        )),
        (None, None) => warnings.push(format!(
            "JetPack not checked: {} is missing or unreadable; the package wants JetPack {}",
            release.display(),
            target.jetpack
        )),
    }
    let dpkg = facts.dpkg_status();
    match &facts.tensorrt {
        Some(trt) if !same_major_minor(trt, &target.tensorrt) => {
            return Err(incompatible(
                "target.tensorrt",
                format!("TensorRT {} (any {0}.x)", target.tensorrt),
                &format!("TensorRT {trt}"),
                format!("{}, package libnvinfer8/tensorrt", dpkg.display()),
            ));
        }
        Some(_) => {}
        None => warnings.push(format!(
            "TensorRT not checked: no installed libnvinfer8 or tensorrt package in {}; the package wants TensorRT {}",
            dpkg.display(),
            target.tensorrt
        )),
    }
    let (field, needed) = match &manifest.binary {
        Some(b) => ("binary.max_glibc", &b.max_glibc),
        None => ("target.max_glibc", &target.max_glibc),
    };
    match &facts.glibc {
        Some(g) if !version_le(needed, g) => {
            return Err(incompatible(
                field,
                format!("glibc {needed} or newer"),
                &format!("glibc {g}"),
                format!("{}, package libc6", dpkg.display()),
            ));
        }
        Some(_) => {}
        None => warnings.push(format!(
            "glibc not checked: no installed libc6 package in {}; the package needs glibc {needed} or newer",
            dpkg.display()
        )),
    }
    Ok(warnings)
}
