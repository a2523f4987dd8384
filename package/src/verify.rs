//! Checking a package archive end to end, and installing it only when every check passed.

use std::path::{Path, PathBuf};

use trident_core::package::{MANIFEST, Manifest};

use crate::elf::{self, compare_versions, version_le};
use crate::error::{Error, Result};
use crate::extract::{Limits, extract_staged};
use crate::facts::{self, DeviceFacts};
use crate::signature::{self, PublicKey, SignatureInfo};

/// How [`verify_package`] checks a package.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// The trusted public key.
    pub public_key: Option<&'a PublicKey>,
    /// The signature file; default `<package>.minisig` beside the package.
    pub signature: Option<PathBuf>,
    /// Accept a package whose signature cannot be checked (no signature file or no key). A
    /// signature that is present and checked must still verify.
    pub allow_unsigned: bool,
    /// Check the package against this device.
    pub facts: Option<&'a DeviceFacts>,
    /// Bounds on the archive's content.
    pub limits: Limits,
}

/// A package that passed [`verify_package`].
#[derive(Clone, Debug)]
pub struct Verified {
    pub manifest: Manifest,
    /// `None` when accepted unsigned.
    pub signature: Option<SignatureInfo>,
    /// Checks that could not be made (unsigned package, unreadable device facts).
    pub warnings: Vec<String>,
    /// Where it was installed.
    pub installed: Option<PathBuf>,
    /// Regular files in the package, `manifest.json` included.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Verifies the package archive `pkg` and, with `install_to`, installs it there (a folder that
/// must not exist yet). In order, stopping at the first failure, so that nothing is installed
/// unless every check passed:
///
/// 1. the signature (see [`VerifyOptions::allow_unsigned`]);
/// 2. the archive unpacks within [`VerifyOptions::limits`] without a hostile member, into a
///    temporary folder (beside `install_to`, else in the system's temporary folder);
/// 3. `manifest.json` parses and is consistent, every listed file has its SHA-256, and no file is
///    there that the manifest does not list;
/// 4. the packaged binary, if any, is an executable for `target.arch` whose newest glibc symbol
///    version is the manifest's `binary.max_glibc` and within `target.max_glibc`;
/// 5. with [`VerifyOptions::facts`], the package fits the device ([`facts::check`]);
/// 6. the temporary folder is renamed to `install_to`, or removed.
pub fn verify_package(
    pkg: &Path,
    opts: &VerifyOptions,
    install_to: Option<&Path>,
) -> Result<Verified> {
    let mut warnings = Vec::new();
    std::fs::metadata(pkg).map_err(|e| Error::io("cannot read", pkg, e))?;

    // 1. Signature.
    let explicit = opts.signature.is_some();
    let sig_path = opts
        .signature
        .clone()
        .unwrap_or_else(|| signature_path(pkg));
    let sig_exists = std::fs::metadata(&sig_path).is_ok();
    if explicit && !sig_exists {
        return Err(Error::signature(&sig_path, "signature file not found"));
    }
    let signature = match (sig_exists, opts.public_key) {
        (true, Some(key)) => Some(signature::verify_file(pkg, &sig_path, key)?),
        (has_sig, key) => {
            let missing = match (has_sig, key) {
                (true, _) => "no public key was given to check its signature".to_string(),
                (false, Some(_)) => format!("no signature file {}", sig_path.display()),
                (false, None) => {
                    format!("no signature file {} and no public key", sig_path.display())
                }
            };
            if !opts.allow_unsigned {
                return Err(Error::signature(
                    pkg,
                    format!(
                        "{missing}; refusing an unverified package (pass the trusted public key, \
                         or --allow-unsigned to accept it unchecked)"
                    ),
                ));
            }
            warnings.push(format!(
                "signature not checked: {missing} (--allow-unsigned)"
            ));
            None
        }
    };

    // 2. Unpack into a staging folder.
    let scratch;
    let final_dest = match install_to {
        Some(dest) => dest.to_path_buf(),
        None => {
            scratch = tempfile::Builder::new()
                .prefix("trident-verify-")
                .tempdir()
                .map_err(|e| {
                    Error::io("cannot create temporary folder in", std::env::temp_dir(), e)
                })?;
            scratch.path().join("package")
        }
    };
    let staged = extract_staged(pkg, &final_dest, &opts.limits)?;
    let root = staged.path();
    let inside = |rel: &str| format!("{}: {rel}", pkg.display());

    // 3. Manifest and files.
    let manifest = load_manifest(pkg, root)?;
    manifest
        .verify_dir(root)
        .map_err(|e| relabel(e, root, pkg))?;
    unlisted(root, root, &manifest, &inside)?;

    // 4. The binary.
    if let Some(bin) = &manifest.binary {
        let facts = elf::inspect(&root.join(&bin.file)).map_err(|e| relabel_pkg(e, root, pkg))?;
        let at = inside(&bin.file);
        if facts.machine != manifest.target.arch {
            return Err(Error::invalid(
                at,
                format!(
                    "is an {} executable; the package targets {} (target.arch)",
                    facts.machine, manifest.target.arch
                ),
            ));
        }
        // A binary without GLIBC_ versions (static, or not glibc) is recorded as needing "0".
        let needs = facts.max_glibc.unwrap_or_else(|| "0".into());
        if compare_versions(&needs, &bin.max_glibc) != Some(std::cmp::Ordering::Equal) {
            let what = if needs == "0" {
                "needs no GLIBC_ symbol versions".to_string()
            } else {
                format!("needs GLIBC_{needs}")
            };
            return Err(Error::invalid(
                at,
                format!(
                    "{what}, but manifest binary.max_glibc says {}",
                    bin.max_glibc
                ),
            ));
        }
        if !version_le(&needs, &manifest.target.max_glibc) {
            return Err(Error::invalid(
                at,
                format!(
                    "needs GLIBC_{needs}, newer than target.max_glibc {}: it would not start on the device",
                    manifest.target.max_glibc
                ),
            ));
        }
    }

    // 5. The device.
    if let Some(device) = opts.facts {
        warnings.extend(facts::check(&manifest, device)?);
    }

    // 6. Install or clean up.
    let (files, bytes) = (staged.extracted().files, staged.extracted().bytes);
    let installed = match install_to {
        Some(_) => Some(staged.commit()?),
        None => None,
    };
    // The caller presents the warnings (they are in `Verified`); logged here at debug only, so
    // a command line does not show each twice.
    for w in &warnings {
        tracing::debug!("{}: {w}", pkg.display());
    }
    Ok(Verified {
        manifest,
        signature,
        warnings,
        installed,
        files,
        bytes,
    })
}

/// `<package>.minisig` beside the package.
pub fn signature_path(pkg: &Path) -> PathBuf {
    let mut name = pkg.as_os_str().to_owned();
    name.push(crate::SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// `manifest.json` of the unpacked package, named `<package>/manifest.json` in errors.
fn load_manifest(pkg: &Path, root: &Path) -> Result<Manifest> {
    let path = root.join(MANIFEST);
    let label = PathBuf::from(format!("{}/{MANIFEST}", pkg.display()));
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::invalid(
                label.display().to_string(),
                "is not a regular file",
            ));
        }
        Err(_) => {
            return Err(Error::invalid(
                pkg.display().to_string(),
                format!("has no {MANIFEST}; not a trident package"),
            ));
        }
    }
    let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read", &label, e))?;
    let manifest = Manifest::parse(&bytes, &label)?;
    Ok(manifest)
}

/// Refuses any file (or link) under `dir` that is neither `manifest.json` nor listed in it: a
/// package carries nothing unaccounted for.
fn unlisted(
    root: &Path,
    dir: &Path,
    manifest: &Manifest,
    inside: &dyn Fn(&str) -> String,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot read", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("cannot read", &path, e))?;
        if kind.is_dir() {
            unlisted(root, &path, manifest, inside)?;
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if rel != MANIFEST && !manifest.files.contains_key(&rel) {
            return Err(Error::invalid(
                inside(&rel),
                "is not listed in manifest.json; a package may carry only the files its manifest lists",
            ));
        }
    }
    Ok(())
}

/// Replaces the staging folder in a core error's location by `<package>:`.
fn relabel(e: trident_core::Error, root: &Path, pkg: &Path) -> Error {
    let root_text = root.display().to_string();
    match e {
        trident_core::Error::Invalid { location, message } if location.starts_with(&root_text) => {
            let rel = location[root_text.len()..].trim_start_matches('/');
            Error::invalid(format!("{}: {rel}", pkg.display()), message)
        }
        other => other.into(),
    }
}

/// [`relabel`] for this crate's errors.
fn relabel_pkg(e: Error, root: &Path, pkg: &Path) -> Error {
    match e {
        Error::Core(c) => relabel(c, root, pkg),
        Error::Invalid { location, message } => relabel(
            trident_core::Error::Invalid { location, message },
            root,
            pkg,
        ),
        other => other,
    }
}
