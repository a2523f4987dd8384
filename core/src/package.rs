//! The deployment package manifest (`manifest.json`, schema `trident-package/1`): what `trident
//! export --package` writes and what the device checks before it runs anything from a package.
//!
//! An unpacked package is a folder:
//!
//! ```text
//! manifest.json
//! models/<variant>.onnx, models/<variant>.card.json   the three models and their cards
//! calibration/calibration.yaml                        tables fitted for exactly those models
//! profiles/*.yaml                                     deployment profiles
//! bin/trident-edge                                    the aarch64 runtime
//! systemd/trident-edge.service
//! ```
//!
//! Every file is listed with its SHA-256; [`Manifest::verify_dir`] refuses a folder where any
//! listed file is missing or differs, where a listed path could leave the folder, or where the
//! manifest's own cross-references (models, calibration, binary) are not among the files.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

pub use crate::digest::sha256_file;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "trident-package/1";
pub const MANIFEST: &str = "manifest.json";
/// Where the models sit inside a package.
pub const MODELS_DIR: &str = "models";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    pub version: String,
    /// `git rev-parse HEAD` of the source the package was built from (with `-dirty` when the
    /// tree had changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    pub target: TargetFacts,
    pub models: Vec<PackagedModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<PackagedFile>,
    /// Package-relative paths of the deployment profiles.
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PackagedBinary>,
    /// The TensorRT shim: its source (every package) and a library prebuilt by the release when
    /// its sysroot had TensorRT's development files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensorrt_shim: Option<PackagedShim>,
    /// Every file of the package but the manifest: package-relative path → SHA-256.
    pub files: BTreeMap<String, String>,
}

/// What the package was built for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFacts {
    /// `jetson-nano`.
    pub device: String,
    /// `aarch64`.
    pub arch: String,
    /// `4.6`.
    pub jetpack: String,
    /// The TensorRT the package's engines and shim are built for, `8`: only its major binds (an
    /// `8.2` binds as 8), so JetPack 4.6 (TensorRT 8.0.1) and 4.6.1+ (8.2.1) both take it.
    pub tensorrt: String,
    /// The highest glibc the runtime may need, `2.27`.
    pub max_glibc: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagedModel {
    pub variant: String,
    /// Package-relative path of the ONNX file.
    pub file: String,
    pub sha256: String,
    /// Input shape `[1, 3, H, W]` and output shape `[1, 4 + nc, N]`.
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf_floor: Option<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagedFile {
    pub file: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagedBinary {
    pub file: String,
    pub sha256: String,
    /// The highest `GLIBC_x.y` symbol version the binary requires.
    pub max_glibc: String,
}

/// The TensorRT shim in a package (`trident-edge` opens it at run time; it never links TensorRT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagedShim {
    /// Package-relative folder of the C++ source (`shim`), built on a unit by `trident-edge
    /// prepare` when no prebuilt library fits its TensorRT.
    pub source: String,
    /// The source files, package-relative (each listed under `files`).
    pub source_files: Vec<String>,
    /// SHA-256 over the source, the key of the unit's shim build cache.
    pub source_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuilt: Option<PrebuiltShim>,
}

/// A shim library built by the release against a JetPack sysroot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrebuiltShim {
    /// `lib/libtrident_trt.so`.
    pub file: String,
    pub sha256: String,
    /// The TensorRT version of the headers it was compiled with (`8.2.1`); it loads only where
    /// the unit's libnvinfer has the same major.minor, and the unit builds its own otherwise.
    pub tensorrt: String,
}

/// A package-relative path that stays inside the package: relative, no `..`, no empty parts.
pub fn check_relative(path: &str) -> std::result::Result<PathBuf, String> {
    let p = Path::new(path);
    if path.is_empty() || path.contains('\\') {
        return Err(format!("`{path}` is not a package path"));
    }

    for c in p.components() {
        match c {
            Component::Normal(_) => {}
            Component::CurDir => return Err(format!("`{path}` has a `.` component")),
            Component::ParentDir => return Err(format!("`{path}` leaves the package (`..`)")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("`{path}` is absolute"));
            }
        }
    }
    // `Path::components` drops inner empty and `.` parts silently (`a//b`, `a/./b`), which
    // would let two spellings name one file; the raw parts must all be plain names.
    if path.split('/').any(|part| part.is_empty() || part == ".") {
        return Err(format!("`{path}` has an empty or `.` part"));
    }
    Ok(p.to_path_buf())
}

/// A name safe as one path component and in a shell word: `[A-Za-z0-9._+-]{1,64}`, no
/// leading `.`.
pub fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

impl Manifest {
    /// Parses and checks a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parses and checks manifest bytes (untrusted: they come out of a package); `path` names
    /// the source in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        m.validate(&path.display().to_string())?;
        Ok(m)
    }

    /// Schema, paths and cross-references (no file access).
    pub fn validate(&self, file: &str) -> Result<()> {
        let at = |field: String| format!("{file}: {field}");
        if self.schema != SCHEMA {
            return Err(Error::invalid(
                at("schema".into()),
                format!("is {:?}; this build reads {SCHEMA:?}", self.schema),
            ));
        }
        // Name and version become file and folder names on the unit (releases/<version>).
        for (field, value) in [("name", &self.name), ("version", &self.version)] {
            if !plain_name(value) {
                return Err(Error::invalid(
                    at(field.into()),
                    format!(
                        "{value:?}: expected 1–64 letters, digits, `.`, `_`, `+` or `-`, not starting with `.`"
                    ),
                ));
            }
        }
        for (path, sha) in &self.files {
            check_relative(path).map_err(|m| Error::invalid(at(format!("files.{path}")), m))?;
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    at(format!("files.{path}")),
                    "expected a SHA-256 (64 hex digits)",
                ));
            }
        }
        let listed = |field: String, f: &str, sha: &str| match self.files.get(f) {
            Some(s) if s.eq_ignore_ascii_case(sha) => Ok(()),
            Some(_) => Err(Error::invalid(
                at(field),
                format!("`{f}`: its sha256 differs from the one under `files`"),
            )),
            None => Err(Error::invalid(
                at(field),
                format!("`{f}` is not among the package's files"),
            )),
        };
        if self.models.is_empty() {
            return Err(Error::invalid(at("models".into()), "no models"));
        }
        for (i, m) in self.models.iter().enumerate() {
            listed(format!("models[{i}].file"), &m.file, &m.sha256)?;
            // A floor outside [0, 1] (a number too large for f32 parses as infinity) would
            // silence or flood the model on the unit.
            if let Some(f) = m.conf_floor
                && !(f.is_finite() && (0.0..=1.0).contains(&f))
            {
                return Err(Error::invalid(
                    at(format!("models[{i}].conf_floor")),
                    format!("{f}: expected a confidence between 0 and 1"),
                ));
            }
            if m.input.len() != 4 || m.output.len() != 3 {
                return Err(Error::invalid(
                    at(format!("models[{i}]")),
                    format!(
                        "input {:?} / output {:?}: expected [1, 3, H, W] and [1, 4 + classes, N]",
                        m.input, m.output
                    ),
                ));
            }
            if m.classes != self.models[0].classes {
                return Err(Error::invalid(
                    at(format!("models[{i}].classes")),
                    format!(
                        "`{}` names [{}], `{}` names [{}]; every model must share the class list",
                        m.variant,
                        m.classes.join(", "),
                        self.models[0].variant,
                        self.models[0].classes.join(", ")
                    ),
                ));
            }
        }
        if let Some(c) = &self.calibration {
            listed("calibration.file".into(), &c.file, &c.sha256)?;
        }
        if let Some(b) = &self.binary {
            listed("binary.file".into(), &b.file, &b.sha256)?;
        }
        if let Some(shim) = &self.tensorrt_shim {
            if shim.source_files.is_empty() {
                return Err(Error::invalid(
                    at("tensorrt_shim.source_files".into()),
                    "no source files",
                ));
            }
            for (i, f) in shim.source_files.iter().enumerate() {
                let field = at(format!("tensorrt_shim.source_files[{i}]"));
                if !f.starts_with(&format!("{}/", shim.source)) {
                    return Err(Error::invalid(
                        field,
                        format!("`{f}` is not inside `{}`", shim.source),
                    ));
                }
                if !self.files.contains_key(f) {
                    return Err(Error::invalid(
                        field,
                        format!("`{f}` is not among the package's files"),
                    ));
                }
            }
            if let Some(p) = &shim.prebuilt {
                listed("tensorrt_shim.prebuilt.file".into(), &p.file, &p.sha256)?;
                let major = |v: &str| v.split('.').next().map(str::to_string);
                if major(&p.tensorrt) != major(&self.target.tensorrt) {
                    return Err(Error::invalid(
                        at("tensorrt_shim.prebuilt.tensorrt".into()),
                        format!(
                            "the shim was built for TensorRT {}, the package targets TensorRT {}",
                            p.tensorrt, self.target.tensorrt
                        ),
                    ));
                }
            }
        }
        for (i, p) in self.profiles.iter().enumerate() {
            if !self.files.contains_key(p) {
                return Err(Error::invalid(
                    at(format!("profiles[{i}]")),
                    format!("`{p}` is not among the package's files"),
                ));
            }
        }
        Ok(())
    }

    /// Checks an unpacked package: every listed file exists (not through a symbolic link) and
    /// hashes to its recorded SHA-256. The first difference is the error.
    pub fn verify_dir(&self, root: &Path) -> Result<()> {
        for (path, sha) in &self.files {
            let rel = check_relative(path).map_err(|m| Error::invalid(MANIFEST, m))?;
            let full = root.join(&rel);
            let meta = std::fs::symlink_metadata(&full)
                .map_err(|e| Error::io("cannot read", full.clone(), e))?;
            if !meta.file_type().is_file() {
                return Err(Error::invalid(
                    full.display().to_string(),
                    "is not a regular file (links are not followed)",
                ));
            }
            let actual = sha256_file(&full)?;
            if !actual.eq_ignore_ascii_case(sha) {
                return Err(Error::invalid(
                    full.display().to_string(),
                    format!(
                        "sha256 {actual} differs from the manifest's {sha}: the file was changed"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An unpacked package whose manifest and files were verified.
#[derive(Clone, Debug)]
pub struct PackageDir {
    pub root: PathBuf,
    pub manifest: Manifest,
}

impl PackageDir {
    /// Loads `root/manifest.json` and verifies every file against it.
    pub fn open(root: &Path) -> Result<Self> {
        let manifest = Manifest::load(&root.join(MANIFEST))?;
        manifest.verify_dir(root)?;
        Ok(PackageDir {
            root: root.to_path_buf(),
            manifest,
        })
    }

    pub fn models_dir(&self) -> PathBuf {
        self.root.join(MODELS_DIR)
    }

    pub fn calibration(&self) -> Option<PathBuf> {
        self.manifest
            .calibration
            .as_ref()
            .map(|c| self.root.join(&c.file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        crate::digest::sha256_hex(bytes)
    }

    fn package(dir: &Path) -> Manifest {
        std::fs::create_dir_all(dir.join("models")).unwrap();
        std::fs::write(dir.join("models/balanced.onnx"), b"onnx").unwrap();
        std::fs::create_dir_all(dir.join("calibration")).unwrap();
        std::fs::write(dir.join("calibration/calibration.yaml"), b"tables").unwrap();
        let m = Manifest {
            schema: SCHEMA.into(),
            name: "trident".into(),
            version: "0.1.0".into(),
            git_revision: None,
            target: TargetFacts {
                device: "jetson-nano".into(),
                arch: "aarch64".into(),
                jetpack: "4.6".into(),
                tensorrt: "8.2".into(),
                max_glibc: "2.27".into(),
            },
            models: vec![PackagedModel {
                variant: "balanced".into(),
                file: "models/balanced.onnx".into(),
                sha256: sha(b"onnx"),
                input: vec![1, 3, 64, 64],
                output: vec![1, 6, 84],
                classes: vec!["fish".into(), "crab".into()],
                conf_floor: Some(0.25),
            }],
            calibration: Some(PackagedFile {
                file: "calibration/calibration.yaml".into(),
                sha256: sha(b"tables"),
            }),
            profiles: vec![],
            binary: None,
            tensorrt_shim: None,
            files: [
                ("models/balanced.onnx".to_string(), sha(b"onnx")),
                ("calibration/calibration.yaml".to_string(), sha(b"tables")),
            ]
            .into(),
        };
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        m
    }

    #[test]
    fn a_verified_package_names_its_models_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        let m = package(dir.path());
        let p = PackageDir::open(dir.path()).unwrap();
        assert_eq!(p.manifest, m);
        assert_eq!(p.models_dir(), dir.path().join("models"));
        assert_eq!(
            p.calibration().unwrap(),
            dir.path().join("calibration/calibration.yaml")
        );
    }

    #[test]
    fn a_changed_byte_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        package(dir.path());
        std::fs::write(dir.path().join("models/balanced.onnx"), b"onnX").unwrap();
        let e = PackageDir::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("balanced.onnx") && e.contains("was changed"),
            "{e}"
        );
    }

    #[test]
    fn escaping_paths_and_dangling_references_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "./a",
            "",
            "a//b",
            "a/./b",
            "a/",
        ] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
        assert!(check_relative("models/a.onnx").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let mut m = package(dir.path());
        m.files.insert("../evil".into(), "0".repeat(64));
        let e = m.validate("manifest.json").unwrap_err().to_string();
        assert!(e.contains("leaves the package"), "{e}");
        let mut m = package(dir.path());
        m.files.remove("calibration/calibration.yaml");
        let e = m.validate("manifest.json").unwrap_err().to_string();
        assert!(e.contains("calibration.file"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_listed_file_replaced_by_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        package(dir.path());
        let outside = dir.path().join("outside.onnx");
        std::fs::write(&outside, b"onnx").unwrap();
        std::fs::remove_file(dir.path().join("models/balanced.onnx")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("models/balanced.onnx")).unwrap();
        let e = PackageDir::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn names_and_versions_that_could_not_be_folder_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "../1.0",
            "1.0; rm -rf /",
            "",
            ".hidden",
            "a/b",
            &"9".repeat(65),
        ] {
            let mut m = package(dir.path());
            m.version = bad.to_string();
            let e = m.validate("manifest.json").unwrap_err().to_string();
            assert!(e.contains("version"), "{bad}: {e}");
        }
        let mut m = package(dir.path());
        m.version = "1.2.3-rc.1+build.5".into();
        m.validate("manifest.json").unwrap();
    }

    #[test]
    fn a_floor_out_of_range_is_refused_found_by_fuzzing() {
        // The manifest fuzz target found this: a floor too large for f32 parsed as infinity,
        // validated, and came back as `null` after a round trip.
        let dir = tempfile::tempdir().unwrap();
        let mut m = package(dir.path());
        let mut text = serde_json::to_string(&m).unwrap();
        text = text.replace(
            "\"conf_floor\":0.25",
            &format!("\"conf_floor\":1{}.25", "7".repeat(60)),
        );
        let e = Manifest::parse(text.as_bytes(), Path::new("manifest.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("models[0].conf_floor"), "{e}");
        m.models[0].conf_floor = Some(-0.1);
        assert!(m.validate("manifest.json").is_err());
        m.models[0].conf_floor = Some(1.0);
        m.validate("manifest.json").unwrap();
        m.models[0].input = vec![1, 3];
        let e = m.validate("manifest.json").unwrap_err().to_string();
        assert!(e.contains("models[0]"), "{e}");
    }

    #[test]
    fn a_malformed_manifest_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), "{\n  \"schema\": 3\n}").unwrap();
        let e = PackageDir::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("manifest.json:2:"), "{e}");
    }
}
