//! `trident package build` (alias `trident export --package`): the signed deployment package a
//! release ships (feature `build`, host only).
//!
//! Everything is checked before a byte is written — the models agree on their classes, the
//! calibration tables were fitted for exactly these models, the profiles only name these
//! models, the runtime binary is an ELF for the target's architecture needing no newer glibc
//! than the target has — then the archive and its signature are written under temporary names
//! and renamed into place together: a failure leaves no package behind.
//!
//! The archive is reproducible (see `crate::archive`): the same inputs give the same
//! bytes, so a release can be rebuilt and compared. The minisign signature is not (minisign
//! signs with random noise by design); it verifies either way.

use std::path::{Path, PathBuf};

use crate::archive::{ArchiveEntry, write_archive_at_level};
use crate::elf;
use crate::signature::SigningKey;
use trident_core::calibration::CalibrationTables;
use trident_core::digest::sha256_file;
use trident_core::model_card::CardDim;
use trident_core::package::{
    MANIFEST, Manifest, PackagedBinary, PackagedFile, PackagedModel, PackagedShim, PrebuiltShim,
    SCHEMA,
};
use trident_core::profile::Profile;
use trident_infer::models::ModelSet;

use crate::error::{Error, Result};
use crate::release::ReleaseConfig;

/// What one package build needs beyond the release config.
#[derive(Debug)]
pub struct PackageRequest<'a> {
    pub config: &'a ReleaseConfig,
    /// The folder holding every variant's FP32 ONNX and card (exported already).
    pub models_dir: &'a Path,
    pub version: &'a str,
    pub git_revision: Option<String>,
    /// `None` builds an unsigned package (the caller asked for it explicitly).
    pub signer: Option<&'a SigningKey>,
    /// The archive's zstd level: [`crate::archive::ZSTD_LEVEL`] for anything shipped;
    /// a low level for packages that tests build and throw away.
    pub zstd_level: i32,
}

/// A package on disk.
#[derive(Clone, Debug)]
pub struct BuiltPackage {
    pub archive: PathBuf,
    pub signature: Option<PathBuf>,
    pub manifest: Manifest,
    pub sha256: String,
    pub bytes: u64,
}

/// Checks the inputs, then writes `<out>/<name>-<version>-<target>.tar.zst` and its signature.
pub fn build_package(req: &PackageRequest<'_>, out: &Path) -> Result<BuiltPackage> {
    let c = req.config;
    let stage = tempfile::Builder::new()
        .prefix(".trident-package-")
        .tempdir()
        .map_err(|e| {
            trident_core::Error::io("cannot create a temporary folder", std::env::temp_dir(), e)
        })?;
    let (entries, manifest) = gather(req, stage.path())?;
    check_writable(out)?;

    let file_name = format!("{}-{}-{}.tar.zst", c.name, req.version, c.target);
    let archive = out.join(&file_name);
    let signature = out.join(format!("{file_name}{}", crate::SIGNATURE_SUFFIX));
    // Both files are written under hidden names first, then renamed: a failed signature leaves
    // neither, and an old package of the same name stays until the new one is complete.
    let tmp_archive = out.join(format!(".{file_name}.partial"));
    let tmp_signature = out.join(format!(".{file_name}.minisig.partial"));
    let cleanup = || {
        let _ = std::fs::remove_file(&tmp_archive);
        let _ = std::fs::remove_file(&tmp_signature);
    };
    let result = (|| -> Result<String> {
        let sha = write_archive_at_level(&entries, &tmp_archive, req.zstd_level)?;
        if let Some(key) = req.signer {
            let comment = format!("file:{file_name} sha256:{sha}");
            key.sign_file(&tmp_archive, &tmp_signature, &comment)?;
        }
        Ok(sha)
    })();
    let sha256 = match result {
        Ok(sha) => sha,
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| trident_core::Error::io("cannot write", to, e))
    };
    if req.signer.is_some() {
        if let Err(e) = rename(&tmp_signature, &signature) {
            cleanup();
            return Err(e.into());
        }
    } else if signature.exists() {
        // An old signature beside a new unsigned package would verify nothing and mislead.
        std::fs::remove_file(&signature).map_err(|e| {
            trident_core::Error::io("cannot remove the stale signature", &signature, e)
        })?;
    }
    if let Err(e) = rename(&tmp_archive, &archive) {
        cleanup();
        if req.signer.is_some() {
            let _ = std::fs::remove_file(&signature);
        }
        return Err(e.into());
    }
    let bytes = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    Ok(BuiltPackage {
        archive,
        signature: req.signer.map(|_| signature),
        manifest,
        sha256,
        bytes,
    })
}

/// The shim library in a prebuilt folder and the TensorRT version its record names, or `None`
/// when the folder holds no build (the release's sysroot had no TensorRT). A build for another
/// architecture or TensorRT major than the target is refused.
fn prebuilt_shim(dir: &Path, c: &ReleaseConfig) -> Result<Option<(PathBuf, String)>> {
    let lib = dir.join(trident_infer::trt_shim::SHIM_FILE);
    if !lib.is_file() {
        tracing::info!(
            "no prebuilt TensorRT shim in {}: units build it from the packaged source",
            dir.display()
        );
        return Ok(None);
    }
    let record_path = dir.join("shim.json");
    let record: trident_infer::trt_shim::BuiltShimRecord = std::fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Error::invalid(
                record_path.display().to_string(),
                "missing or unreadable: a prebuilt shim needs the record of its build (TensorRT version)",
            )
        })?;
    let facts = elf::inspect(&lib)?;
    if facts.machine != c.device.arch {
        return Err(Error::invalid(
            lib.display().to_string(),
            format!(
                "is a {} library; the target needs {}",
                facts.machine, c.device.arch
            ),
        ));
    }
    let major = |v: &str| v.split('.').next().unwrap_or_default().to_string();
    if major(&record.tensorrt) != major(&c.device.tensorrt) {
        return Err(Error::invalid(
            record_path.display().to_string(),
            format!(
                "the shim was built for TensorRT {}; the package targets TensorRT {}",
                record.tensorrt, c.device.tensorrt
            ),
        ));
    }
    Ok(Some((lib, record.tensorrt)))
}

/// Fails early (before the long part) when the output folder cannot take files.
fn check_writable(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .map_err(|e| trident_core::Error::io("cannot create the output folder", out, e))?;
    tempfile::Builder::new()
        .prefix(".trident-write-test-")
        .tempfile_in(out)
        .map(drop)
        .map_err(|e| trident_core::Error::io("cannot write into the output folder", out, e).into())
}

/// Checks every input and lists the archive's entries; the manifest is written into `stage`.
fn gather(req: &PackageRequest<'_>, stage: &Path) -> Result<(Vec<ArchiveEntry>, Manifest)> {
    let c = req.config;
    let mut entries = Vec::new();
    let mut manifest = Manifest {
        schema: SCHEMA.into(),
        name: c.name.clone(),
        version: req.version.into(),
        git_revision: req.git_revision.clone(),
        target: c.device.clone(),
        models: Vec::new(),
        calibration: None,
        profiles: Vec::new(),
        binary: None,
        tensorrt_shim: None,
        files: Default::default(),
    };
    let mut add = |path: String, source: &Path, executable: bool| -> Result<String> {
        let sha = sha256_file(source)?;
        manifest.files.insert(path.clone(), sha.clone());
        entries.push(ArchiveEntry {
            path,
            source: source.to_path_buf(),
            executable,
        });
        Ok(sha)
    };

    // Models: exactly the configured variants, agreeing on classes (ModelSet checks hashes
    // against cards and the class lists).
    let set = ModelSet::load_dir(req.models_dir)?;
    let mut models = Vec::new();
    for variant in &c.models.variants {
        let m = set.get(variant).ok_or_else(|| {
            Error::invalid(
                req.models_dir.display().to_string(),
                format!(
                    "has no FP32 model `{variant}` (it has {}); export it or fix models.variants",
                    set.models
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let file = format!("models/{variant}.onnx");
        let sha = add(file.clone(), &m.onnx_path, false)?;
        let card = trident_core::model_card::ModelCard::path_for(&m.onnx_path);
        add(format!("models/{variant}.card.json"), &card, false)?;
        // A symbolic (dynamic batch) dimension is packaged as 1: the unit runs one frame at a time.
        let dims = |t: &trident_core::model_card::TensorInfo| {
            t.shape
                .iter()
                .map(|d| match d {
                    CardDim::Fixed(n) => (*n).max(1) as usize,
                    CardDim::Symbolic(_) => 1,
                })
                .collect::<Vec<usize>>()
        };
        models.push(PackagedModel {
            variant: variant.clone(),
            file,
            sha256: sha,
            input: dims(&m.card.input),
            output: dims(&m.card.output),
            classes: m.card.names.clone(),
            conf_floor: m.card.conf_floor,
        });
    }

    // Calibration tables fitted for exactly these models.
    let tables = CalibrationTables::load(&c.calibration)?;
    tables.check_models(
        &c.calibration.display().to_string(),
        &set.names,
        c.models
            .variants
            .iter()
            .filter_map(|v| set.get(v).map(|m| (v.as_str(), m.card.sha256.as_str()))),
    )?;
    let cal = "calibration/calibration.yaml".to_string();
    let cal_sha = add(cal.clone(), &c.calibration, false)?;

    // Profiles: valid, and naming only packaged models.
    let mut profiles = Vec::new();
    for path in &c.profiles {
        let carried: Vec<&str> = c.models.variants.iter().map(String::as_str).collect();
        Profile::load(path)?.check_models(path, &carried)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = format!("profiles/{name}");
        if profiles.contains(&rel) {
            return Err(Error::invalid(
                path.display().to_string(),
                "two profiles share this file name",
            ));
        }
        add(rel.clone(), path, false)?;
        profiles.push(rel);
    }

    // The runtime binary: an ELF for the target needing no newer glibc than the target has.
    if !c.binary.is_file() {
        return Err(Error::invalid(
            c.binary.display().to_string(),
            "the runtime binary is missing; build it with `cargo xtask cross` (or pass --binary)",
        ));
    }
    let facts = elf::inspect(&c.binary)?;
    if facts.machine != c.device.arch {
        return Err(Error::invalid(
            c.binary.display().to_string(),
            format!(
                "is a {} binary; the target needs {} (build it with `cargo xtask cross`)",
                facts.machine, c.device.arch
            ),
        ));
    }
    let glibc = facts.max_glibc.clone().unwrap_or_else(|| "0".into());
    if !elf::version_le(&glibc, &c.device.max_glibc) {
        return Err(Error::invalid(
            c.binary.display().to_string(),
            format!(
                "needs GLIBC_{glibc}; the target has glibc {} (build with cargo zigbuild --target aarch64-unknown-linux-gnu.{})",
                c.device.max_glibc, c.device.max_glibc
            ),
        ));
    }
    let bin = "bin/trident-edge".to_string();
    let bin_sha = add(bin.clone(), &c.binary, true)?;

    if !c.systemd_unit.is_file() {
        return Err(Error::invalid(
            c.systemd_unit.display().to_string(),
            "the systemd unit is missing",
        ));
    }
    add(
        "systemd/trident-edge.service".into(),
        &c.systemd_unit,
        false,
    )?;

    // The TensorRT shim: its source always, a library prebuilt for the target when there is one.
    let shim_cfg = &c.tensorrt_shim;
    let source = trident_infer::trt_shim::ShimSource::at(&shim_cfg.source)
        .map_err(|e| Error::invalid(shim_cfg.source.display().to_string(), e.to_string()))?;
    let source_sha256 = source
        .sha256()
        .map_err(|e| Error::invalid(shim_cfg.source.display().to_string(), e.to_string()))?;
    let mut source_files = Vec::new();
    for f in trident_infer::trt_shim::SHIM_SOURCES {
        let rel = format!("{}/{f}", trident_infer::trt_shim::PACKAGE_SHIM_SOURCE);
        add(rel.clone(), &shim_cfg.source.join(f), false)?;
        source_files.push(rel);
    }
    let prebuilt = match &shim_cfg.prebuilt {
        Some(dir) => prebuilt_shim(dir, c)?,
        None => None,
    };
    let prebuilt = match prebuilt {
        Some((lib, tensorrt)) => {
            let file = trident_infer::trt_shim::PACKAGE_SHIM.to_string();
            let sha256 = add(file.clone(), &lib, false)?;
            Some(PrebuiltShim {
                file,
                sha256,
                tensorrt,
            })
        }
        None => None,
    };
    let tensorrt_shim = PackagedShim {
        source: trident_infer::trt_shim::PACKAGE_SHIM_SOURCE.into(),
        source_files,
        source_sha256,
        prebuilt,
    };

    manifest.models = models;
    manifest.tensorrt_shim = Some(tensorrt_shim);
    manifest.calibration = Some(PackagedFile {
        file: cal,
        sha256: cal_sha,
    });
    manifest.profiles = profiles;
    manifest.binary = Some(PackagedBinary {
        file: bin,
        sha256: bin_sha,
        max_glibc: glibc,
    });
    manifest.validate("manifest.json")?;
    let manifest_path = stage.join(MANIFEST);
    let mut text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    text.push(b'\n');
    trident_core::fsutil::write_atomic(&manifest_path, &text)?;
    entries.push(ArchiveEntry {
        path: MANIFEST.into(),
        source: manifest_path,
        executable: false,
    });
    Ok((entries, manifest))
}
