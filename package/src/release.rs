//! `configs/release.yaml`: what a deployment package gathers (see that file for the schema
//! with comments). Relative paths are resolved against the config file's folder, so release
//! CI can run from anywhere.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use trident_core::package::TargetFacts;

use crate::error::{Error, Result};

/// The release config as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    pub name: String,
    /// Default: the version of the `trident` binary building the package.
    #[serde(default)]
    pub version: Option<String>,
    /// The file-name part after the version: `jetson-nano-jp46`.
    pub target: String,
    pub models: ModelsSource,
    pub calibration: PathBuf,
    #[serde(default)]
    pub profiles: Vec<PathBuf>,
    pub binary: PathBuf,
    pub systemd_unit: PathBuf,
    pub tensorrt_shim: ShimConfig,
    pub device: TargetFacts,
    /// A Mender artifact of the package, written beside it (`trident package mender`).
    #[serde(default)]
    pub mender: Option<crate::mender::MenderOptions>,
}

/// The TensorRT shim the package carries.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// The shim's C++ source folder (`edge-runtime/tensorrt/shim`): in every package, so a unit
    /// can build the shim for its own TensorRT.
    pub source: PathBuf,
    /// A folder with a shim built for the target (`libtrident_trt.so` and its `shim.json`), as
    /// `cargo xtask cross` leaves it when the sysroot has TensorRT's development files. Packaged
    /// when that folder holds a build; a package without one builds the shim on the unit.
    #[serde(default)]
    pub prebuilt: Option<PathBuf>,
}

/// Where the models come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSource {
    /// A folder of exported models (FP32 ONNX + card per variant).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Checkpoints to export when `dir` lacks a variant.
    #[serde(default)]
    pub checkpoints: Vec<PathBuf>,
    /// The dataset the export verifies checkpoints on.
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// The variants the package must carry, in ensemble order.
    pub variants: Vec<String>,
}

impl ReleaseConfig {
    /// Reads a release config; errors name `file:line:column` and the field. Relative paths
    /// are made absolute against the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = trident_core::error::read_to_string(path)?;
        let mut c: ReleaseConfig = trident_core::yaml::parse_located(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = &mut c.models.dir {
            at(d);
        }
        c.models.checkpoints.iter_mut().for_each(at);
        if let Some(d) = &mut c.models.data {
            at(d);
        }
        at(&mut c.calibration);
        c.profiles.iter_mut().for_each(at);
        at(&mut c.binary);
        at(&mut c.systemd_unit);
        at(&mut c.tensorrt_shim.source);
        if let Some(p) = &mut c.tensorrt_shim.prebuilt {
            at(p);
        }
        c.validate(&|field| trident_core::yaml::place(&text, path, field))?;
        Ok(c)
    }

    fn validate(&self, at: &dyn Fn(&str) -> String) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::invalid(at(field), message));
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !s.starts_with('.')
        };
        if !plain(&self.name) {
            return bad(
                "name",
                format!("`{}`: expected letters, digits, `-`, `_`, `.`", self.name),
            );
        }
        if !plain(&self.target) {
            return bad(
                "target",
                format!("`{}`: expected letters, digits, `-`, `_`, `.`", self.target),
            );
        }
        if let Some(v) = &self.version
            && !plain(v)
        {
            return bad(
                "version",
                format!("`{v}`: expected a version such as 1.2.0"),
            );
        }
        if self.models.variants.is_empty() {
            return bad(
                "models.variants",
                "expected the variants the package carries".into(),
            );
        }
        if self.models.dir.is_none() && self.models.checkpoints.is_empty() {
            return bad(
                "models",
                "expected `dir` (exported models) or `checkpoints`".into(),
            );
        }
        for (field, value) in [
            ("device.device", &self.device.device),
            ("device.arch", &self.device.arch),
            ("device.jetpack", &self.device.jetpack),
            ("device.tensorrt", &self.device.tensorrt),
            ("device.max_glibc", &self.device.max_glibc),
        ] {
            if value.trim().is_empty() {
                return bad(field, "must not be empty".into());
            }
        }
        for (field, value) in [
            ("device.jetpack", &self.device.jetpack),
            ("device.tensorrt", &self.device.tensorrt),
            ("device.max_glibc", &self.device.max_glibc),
        ] {
            if !value
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            {
                return bad(
                    field,
                    format!("`{value}`: expected a dotted version such as 2.27"),
                );
            }
        }
        for (i, p) in self.profiles.iter().enumerate() {
            if p.extension().is_none_or(|e| e != "yaml") {
                return bad(
                    &format!("profiles[{i}]"),
                    format!("{}: expected a .yaml profile", p.display()),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_release_config_parses_with_paths_beside_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/release.yaml");
        let c = ReleaseConfig::load(&path).unwrap();
        assert_eq!(
            c.models.variants,
            ["high_recall", "balanced", "high_precision"]
        );
        assert_eq!(c.device.max_glibc, "2.27");
        assert_eq!(c.device.arch, "aarch64");
        assert!(c.binary.is_absolute() || c.binary.starts_with(path.parent().unwrap()));
        assert!(
            c.binary
                .ends_with("aarch64-unknown-linux-gnu/release/trident-edge")
        );
        assert_eq!(c.profiles.len(), 2);
        for p in &c.profiles {
            assert!(p.is_file(), "{}", p.display());
        }
        assert!(c.systemd_unit.is_file());
    }

    #[test]
    fn bad_fields_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.yaml");
        let base = "name: trident\ntarget: jetson-nano\nmodels: {dir: m, variants: [a]}\ncalibration: c.yaml\nbinary: b\nsystemd_unit: s\ntensorrt_shim: {source: t}\ndevice: {device: jetson-nano, arch: aarch64, jetpack: \"4.6\", tensorrt: \"8.2\", max_glibc: \"2.27\"}\n";
        std::fs::write(&path, base).unwrap();
        ReleaseConfig::load(&path).unwrap();
        for (from, to, words) in [
            ("name: trident", "name: ../evil", "name"),
            ("max_glibc: \"2.27\"", "max_glibc: two", "device.max_glibc"),
            ("variants: [a]", "variants: []", "models.variants"),
            (
                "target: jetson-nano",
                "target: jetson-nano\nsigning: yes",
                "signing",
            ),
        ] {
            std::fs::write(&path, base.replace(from, to)).unwrap();
            let e = ReleaseConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains("release.yaml") && e.contains(words), "{e}");
        }
    }
}
