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
    let tensorrt =
        version_of(&["libnvinfer8", "libnvinfer10", "libnvinfer7", "tensorrt"]).map(|v| {
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

/// One row of NVIDIA's release table for the Nano's L4T 32.x line: the L4T release, its JetPack
/// and the TensorRT JetPack ships with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JetPackRelease {
    pub l4t: &'static str,
    pub jetpack: &'static str,
    pub tensorrt: &'static str,
}

/// The Nano's releases, oldest first (JetPack 4.6.x is the last line for the Nano). 4.6 ships
/// TensorRT 8.0.1; every 4.6.1+ release (L4T R32.7.x) ships 8.2.1. Engines are built on the unit,
/// so only the TensorRT major binds a package (see [`check`]).
pub const JETPACK_RELEASES: &[JetPackRelease] = &[
    JetPackRelease {
        l4t: "32.4.3",
        jetpack: "4.4",
        tensorrt: "7.1.3",
    },
    JetPackRelease {
        l4t: "32.4.4",
        jetpack: "4.4.1",
        tensorrt: "7.1.3",
    },
    JetPackRelease {
        l4t: "32.5.0",
        jetpack: "4.5",
        tensorrt: "7.1.3",
    },
    JetPackRelease {
        l4t: "32.5.1",
        jetpack: "4.5.1",
        tensorrt: "7.1.3",
    },
    JetPackRelease {
        l4t: "32.6.1",
        jetpack: "4.6",
        tensorrt: "8.0.1",
    },
    JetPackRelease {
        l4t: "32.7.1",
        jetpack: "4.6.1",
        tensorrt: "8.2.1",
    },
    JetPackRelease {
        l4t: "32.7.2",
        jetpack: "4.6.2",
        tensorrt: "8.2.1",
    },
    JetPackRelease {
        l4t: "32.7.3",
        jetpack: "4.6.3",
        tensorrt: "8.2.1",
    },
    JetPackRelease {
        l4t: "32.7.4",
        jetpack: "4.6.4",
        tensorrt: "8.2.1",
    },
    JetPackRelease {
        l4t: "32.7.5",
        jetpack: "4.6.5",
        tensorrt: "8.2.1",
    },
    JetPackRelease {
        l4t: "32.7.6",
        jetpack: "4.6.6",
        tensorrt: "8.2.1",
    },
];

/// The release-table row of an L4T release (`32.7.1`; `32.4` and `32.4.0` read as 32.4.3's line).
pub fn release_for_l4t(l4t: &str) -> Option<&'static JetPackRelease> {
    let v = parse_version(l4t)?;
    let (major, minor, patch) = (v[0], v.get(1).copied()?, v.get(2).copied().unwrap_or(0));
    JETPACK_RELEASES.iter().find(|r| {
        let t = parse_version(r.l4t).expect("table versions parse");
        (t[0], t[1]) == (major, minor) && (t[2] == patch || (major, minor) == (32, 4) && patch < 4)
    })
}

/// The JetPack release of an L4T release; `None` for releases the table does not know.
pub fn jetpack_for_l4t(l4t: &str) -> Option<&'static str> {
    release_for_l4t(l4t).map(|r| r.jetpack)
}

/// What to flash for a TensorRT major: "JetPack 4.6 (L4T R32.6.1, TensorRT 8.0.1) or 4.6.1 and
/// later (L4T R32.7.x, TensorRT 8.2.1)" for 8.
pub fn jetpacks_with_tensorrt_major(major: u64) -> Option<String> {
    let rows: Vec<&JetPackRelease> = JETPACK_RELEASES
        .iter()
        .filter(|r| parse_version(r.tensorrt).is_some_and(|v| v[0] == major))
        .collect();
    let first = rows.first()?;
    let mut parts = vec![format!(
        "JetPack {} (L4T R{}, TensorRT {})",
        first.jetpack, first.l4t, first.tensorrt
    )];
    // Later releases with another TensorRT minor: one entry per minor.
    let mut seen = first.tensorrt;
    for r in &rows[1..] {
        if r.tensorrt != seen {
            let line = r.l4t.rsplit_once('.').map_or(r.l4t, |(l, _)| l);
            parts.push(format!(
                "{} and later (L4T R{line}.x, TensorRT {})",
                r.jetpack, r.tensorrt
            ));
            seen = r.tensorrt;
        }
    }
    Some(parts.join(" or "))
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
/// architecture must match, JetPack must share major.minor with the target (4.6 takes 4.6 to 4.6.6),
/// TensorRT its major (JetPack 4.6's 8.0.1 and 4.6.1+'s 8.2.1 both run a package for 8), and the
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
                    format!(
                        "JetPack {} (any {0}.x){}",
                        target.jetpack,
                        parse_version(&target.tensorrt)
                            .and_then(|v| jetpacks_with_tensorrt_major(v[0]))
                            .map(|j| format!(": flash {j}"))
                            .unwrap_or_default()
                    ),
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
    // Engines are built on the unit, and the TensorRT shim is built per major: only the major
    // binds (JetPack 4.6's TensorRT 8.0 and 4.6.1+'s 8.2 both run a package for "8").
    let major = |v: &str| parse_version(v).map(|v| v[0]);
    match &facts.tensorrt {
        Some(trt) if major(trt).is_none() || major(trt) != major(&target.tensorrt) => {
            let wanted = major(&target.tensorrt).unwrap_or(0);
            let flash = jetpacks_with_tensorrt_major(wanted)
                .map(|j| format!(": flash {j}"))
                .unwrap_or_default();
            let on = match (&facts.jetpack, &facts.l4t) {
                (Some(jp), Some(l4t)) => format!(" (JetPack {jp}, L4T {l4t})"),
                _ => String::new(),
            };
            return Err(incompatible(
                "target.tensorrt",
                format!("TensorRT {wanted}.x{flash}"),
                &format!("TensorRT {trt}{on}"),
                format!("{}, package libnvinfer{}/tensorrt", dpkg.display(), major(trt).unwrap_or(0)),
            ));
        }
        Some(_) => {}
        None => warnings.push(format!(
            "TensorRT not checked: no installed libnvinfer or tensorrt package in {}; the package wants TensorRT {}.x",
            dpkg.display(),
            major(&target.tensorrt).unwrap_or(0)
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
