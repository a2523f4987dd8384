//! `trident package build` (also `trident export --package`), `trident package verify` and
//! `trident package keygen`.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Context;
use trident_package::build::{PackageRequest, build_package};
use trident_package::facts::DeviceFacts;
use trident_package::mender::{MenderArtifact, MenderOptions, write_artifact};
use trident_package::release::ReleaseConfig;
use trident_package::signature::{PublicKey, SigningKey, generate_keypair};
use trident_package::verify::{VerifyOptions, verify_package};

use crate::cli::{
    ExportArgs, KeygenArgs, MenderArgs, PackageBuildArgs, PackageCommand, VerifyPackageArgs,
};

/// The environment variable holding the signing key's text (release CI secrets).
pub const KEY_ENV: &str = "TRIDENT_SIGN_KEY";
/// The environment variable holding an encrypted key's password.
pub const PASSWORD_ENV: &str = "TRIDENT_SIGN_KEY_PASSWORD";

pub fn run(command: PackageCommand) -> anyhow::Result<ExitCode> {
    match command {
        PackageCommand::Build(a) => build(&a),
        PackageCommand::Verify(a) => verify(a),
        PackageCommand::Keygen(a) => keygen(a),
        PackageCommand::Mender(a) => mender(a),
    }
}

/// `trident package build --config release.yaml --out dist/` (or `trident export --package …`).
pub fn build(p: &PackageBuildArgs) -> anyhow::Result<ExitCode> {
    let config_path = p.config.as_path();
    let mut config = ReleaseConfig::load(config_path)?;
    if let Some(dir) = &p.models {
        config.models.dir = Some(dir.clone());
    }
    if let Some(c) = &p.calibration {
        config.calibration = c.clone();
    }
    if let Some(b) = &p.binary {
        config.binary = b.clone();
    }
    if let Some(v) = &p.release_version {
        config.version = Some(v.clone());
    }
    // The key first: a release without its key should fail in a second, not after an export.
    let signer = signing_key(p.sign_key.as_deref(), p.unsigned)?;
    if let Some(m) = &config.mender {
        m.check()
            .with_context(|| format!("the mender: section of {}", config_path.display()))?;
    }
    let version = config
        .version
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    let export_dir;
    let models_dir = match models_to_export(&config) {
        None => config
            .models
            .dir
            .clone()
            .expect("checked by models_to_export"),
        Some(missing) => {
            export_dir = tempfile::Builder::new()
                .prefix(".trident-package-export-")
                .tempdir()
                .context("creating a folder for the package's exports")?;
            eprintln!(
                "exporting {} from checkpoints for the package",
                missing.join(", ")
            );
            export_checkpoints(&config, export_dir.path())?;
            if let Some(dir) = &config.models.dir {
                copy_models(dir, export_dir.path(), &config.models.variants)?;
            }
            export_dir.path().to_path_buf()
        }
    };
    let request = PackageRequest {
        config: &config,
        models_dir: &models_dir,
        version: &version,
        git_revision: git_revision(config_path.parent().unwrap_or(Path::new("."))),
        signer: signer.as_ref(),
        zstd_level: trident_package::archive::ZSTD_LEVEL,
    };
    let built = build_package(&request, &p.out)
        .with_context(|| format!("building the package from {}", config_path.display()))?;
    let m = &built.manifest;
    println!(
        "{}: {} {} for {} (JetPack {}, TensorRT {}, glibc ≤ {}), {} files, {:.1} MiB",
        built.archive.display(),
        m.name,
        m.version,
        m.target.device,
        m.target.jetpack,
        m.target.tensorrt,
        m.target.max_glibc,
        m.files.len() + 1,
        built.bytes as f64 / (1 << 20) as f64
    );
    println!("  sha256 {}", built.sha256);
    println!(
        "  models: {}",
        m.models
            .iter()
            .map(|x| format!("{} ({}…)", x.variant, &x.sha256[..12]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(b) = &m.binary {
        println!("  runtime: {} (needs GLIBC_{})", b.file, b.max_glibc);
    }
    println!("  {}", shim_line(m));
    match (&built.signature, &signer) {
        (Some(sig), Some(key)) => println!("  signature: {} (key {})", sig.display(), key.key_id()),
        _ => println!("  unsigned (--unsigned): units refuse it unless told --allow-unsigned"),
    }
    if let Some(opts) = &config.mender {
        if built.signature.is_none() {
            println!(
                "  mender: no artifact for an unsigned package (units install signed packages only)"
            );
        } else {
            let a = write_artifact(&built.archive, m, opts, &p.out)
                .with_context(|| format!("the mender: section of {}", config_path.display()))?;
            print_artifact(&a, opts);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `trident package mender PKG --device-type jetson-nano --out dist/`.
fn mender(a: MenderArgs) -> anyhow::Result<ExitCode> {
    let key = a.pubkey.as_deref().map(PublicKey::from_arg).transpose()?;
    let opts = VerifyOptions {
        public_key: key.as_ref(),
        // Without --pubkey every sha256 is still checked; the unit checks the signature.
        allow_unsigned: key.is_none(),
        ..Default::default()
    };
    let v = verify_package(&a.package, &opts, None)
        .with_context(|| format!("verifying {}", a.package.display()))?;
    let opts = MenderOptions {
        device_types: a.device_types,
        artifact_name: a.artifact_name,
        allow_downgrade: a.allow_downgrade,
    };
    let artifact = write_artifact(&a.package, &v.manifest, &opts, &a.out)?;
    print_artifact(&artifact, &opts);
    if key.is_none() {
        println!("  the package's signature was not checked here (no --pubkey); units check it");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_artifact(a: &MenderArtifact, opts: &MenderOptions) {
    println!(
        "{}: Mender artifact {} for {}, {:.1} MiB{}",
        a.path.display(),
        a.artifact_name,
        opts.device_types.join(", "),
        a.bytes as f64 / (1 << 20) as f64,
        if opts.allow_downgrade {
            " (may downgrade)"
        } else {
            ""
        }
    );
}

fn signing_key(file: Option<&Path>, unsigned: bool) -> anyhow::Result<Option<SigningKey>> {
    let password = std::env::var(PASSWORD_ENV).ok();
    match file {
        Some(path) => Ok(Some(SigningKey::from_file(path, password).with_context(
            || {
                format!(
                    "the signing key (an encrypted key's password is read from ${PASSWORD_ENV})"
                )
            },
        )?)),
        None if std::env::var_os(KEY_ENV).is_some() => {
            Ok(Some(SigningKey::from_env(KEY_ENV, PASSWORD_ENV)?))
        }
        None if unsigned => Ok(None),
        None => Err(trident_core::Error::invalid(
            "no signing key",
            format!("pass --sign-key FILE or put the key in ${KEY_ENV} (or build with --unsigned)"),
        )
        .into()),
    }
}

/// The variants the models folder lacks, when checkpoints can supply them; `None` when the
/// folder has them all.
fn models_to_export(c: &ReleaseConfig) -> Option<Vec<String>> {
    let missing: Vec<String> = c
        .models
        .variants
        .iter()
        .filter(|v| {
            c.models
                .dir
                .as_ref()
                .is_none_or(|d| !d.join(format!("{v}.card.json")).is_file())
        })
        .cloned()
        .collect();
    (!missing.is_empty() && !c.models.checkpoints.is_empty()).then_some(missing)
}

/// Exports the config's checkpoints into `dir` as `trident export` does (verification included).
fn export_checkpoints(c: &ReleaseConfig, dir: &Path) -> anyhow::Result<()> {
    let args = ExportArgs::for_checkpoints(
        c.models.checkpoints.clone(),
        c.models.data.clone(),
        dir.to_path_buf(),
    );
    crate::export::run(args)
        .map(drop)
        .context("exporting the release config's checkpoints")
}

/// Copies the variants `dir` has (ONNX + card) beside the fresh exports.
fn copy_models(dir: &Path, into: &Path, variants: &[String]) -> anyhow::Result<()> {
    for v in variants {
        for name in [format!("{v}.onnx"), format!("{v}.card.json")] {
            let (from, to) = (dir.join(&name), into.join(&name));
            if from.is_file() && !to.exists() {
                std::fs::copy(&from, &to)
                    .with_context(|| format!("copying {} for the package", from.display()))?;
            }
        }
    }
    Ok(())
}

/// `git rev-parse HEAD` of the tree holding the config, `-dirty` when tracked files changed.
fn git_revision(dir: &Path) -> Option<String> {
    // --no-optional-locks: `git status` must not refresh the index as a side effect; the
    // trainer's build script watches .git/index, and a rewrite would rebuild it and everything
    // above it at the next cargo command (the demo's and the suite's package builds run here).
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("--no-optional-locks")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// `trident package verify PKG --pubkey KEY`.
fn verify(a: VerifyPackageArgs) -> anyhow::Result<ExitCode> {
    let key = a.pubkey.as_deref().map(PublicKey::from_arg).transpose()?;
    let facts = a.device_root.as_deref().map(DeviceFacts::probe_target);
    let opts = VerifyOptions {
        public_key: key.as_ref(),
        signature: a.signature.clone(),
        allow_unsigned: a.allow_unsigned,
        facts: facts.as_ref(),
        limits: Default::default(),
    };
    let v = verify_package(&a.package, &opts, a.extract.as_deref())
        .with_context(|| format!("verifying {}", a.package.display()))?;
    print_verified(&a.package, &v);
    Ok(ExitCode::SUCCESS)
}

pub fn print_verified(package: &Path, v: &trident_package::verify::Verified) {
    let m = &v.manifest;
    println!(
        "{}: verified — {} {}{} for {} {} (JetPack {}, TensorRT {}, glibc ≤ {})",
        package.display(),
        m.name,
        m.version,
        m.git_revision
            .as_ref()
            .map(|r| format!(" (git {})", &r[..r.len().min(12)]))
            .unwrap_or_default(),
        m.target.device,
        m.target.arch,
        m.target.jetpack,
        m.target.tensorrt,
        m.target.max_glibc
    );
    match &v.signature {
        Some(s) => println!(
            "  signature: good, key {} (trusted comment: {})",
            s.key_id, s.trusted_comment
        ),
        None => println!("  signature: NOT checked (--allow-unsigned)"),
    }
    println!(
        "  {} files, {:.1} MiB, every sha256 matches the manifest",
        v.files,
        v.bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  models: {} — classes [{}]",
        m.models
            .iter()
            .map(|x| x.variant.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        m.models
            .first()
            .map(|x| x.classes.join(", "))
            .unwrap_or_default()
    );
    if let Some(b) = &m.binary {
        println!("  runtime: {} (needs GLIBC_{})", b.file, b.max_glibc);
    }
    println!("  {}", shim_line(m));
    for w in &v.warnings {
        println!("  warning: {w}");
    }
    if let Some(dir) = &v.installed {
        println!("  unpacked into {}", dir.display());
    }
}

/// `trident package keygen --out DIR`.
fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let password = match (a.unencrypted, std::env::var(PASSWORD_ENV).ok()) {
        (true, _) => None,
        (false, Some(p)) if !p.is_empty() => Some(p),
        (false, _) => {
            return Err(trident_core::Error::invalid(
                "no password",
                format!(
                    "set ${PASSWORD_ENV} to the password for the new key, or pass --unencrypted for a throwaway key"
                ),
            )
            .into());
        }
    };
    let (secret, public) = generate_keypair(&a.out, password)?;
    let key = PublicKey::from_file(&public)?;
    println!(
        "key {}: secret {} (keep it out of the repository), public {}",
        key.key_id(),
        secret.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The TensorRT shim a package carries, as one line.
fn shim_line(m: &trident_core::package::Manifest) -> String {
    match &m.tensorrt_shim {
        None => "TensorRT shim: none (a package from before the shim: units run on the CPU)".into(),
        Some(s) => match &s.prebuilt {
            Some(p) => format!(
                "TensorRT shim: {} prebuilt for TensorRT {} + source {}/ ({} files; units with another TensorRT {} minor build their own)",
                p.file,
                p.tensorrt,
                s.source,
                s.source_files.len(),
                m.target.tensorrt.split('.').next().unwrap_or_default()
            ),
            None => format!(
                "TensorRT shim: source {}/ ({} files), built on each unit by `trident-edge prepare` (no prebuilt: the release sysroot had no TensorRT)",
                s.source,
                s.source_files.len()
            ),
        },
    }
}
