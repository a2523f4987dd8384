//! End-to-end package verification: signature, archive, manifest, binary, device, install.

use crate::common;

use std::path::{Path, PathBuf};

use trident_core::digest::sha256_hex;
use trident_core::package::{MANIFEST, Manifest, PackagedBinary};
use trident_package::facts::DeviceFacts;
use trident_package::{
    Error, PublicKey, SigningKey, VerifyOptions, generate_keypair, signature_path, verify_package,
};

struct Fixture {
    dir: tempfile::TempDir,
    signer: SigningKey,
    key: PublicKey,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = generate_keypair(&dir.path().join("keys"), None).unwrap();
        Fixture {
            signer: SigningKey::from_file(&sk, None).unwrap(),
            key: PublicKey::from_file(&pk).unwrap(),
            dir,
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// A signed package of `files` with `manifest`.
    fn signed(&self, name: &str, files: &[(&str, &[u8])], manifest: &Manifest) -> PathBuf {
        let pkg = common::package(self.path(), name, files, manifest);
        self.signer
            .sign_file(&pkg, &signature_path(&pkg), "trident 0.1.0 jetson-nano")
            .unwrap();
        pkg
    }
    fn good(&self) -> PathBuf {
        let m = common::manifest_for(common::FILES, common::target(std::env::consts::ARCH));
        self.signed("good.tar.zst", common::FILES, &m)
    }
    fn opts(&self) -> VerifyOptions<'_> {
        VerifyOptions {
            public_key: Some(&self.key),
            ..VerifyOptions::default()
        }
    }
}

#[test]
fn a_good_signed_package_verifies_with_its_counts() {
    let f = Fixture::new();
    let pkg = f.good();
    let v = verify_package(&pkg, &f.opts(), None).unwrap();
    assert_eq!(v.files, 4, "three files and the manifest");
    let content: u64 = common::FILES.iter().map(|(_, c)| c.len() as u64).sum();
    let manifest_len = std::fs::metadata(f.path().join("src-good.tar.zst").join(MANIFEST))
        .unwrap()
        .len();
    assert_eq!(v.bytes, content + manifest_len);
    let sig = v.signature.unwrap();
    assert_eq!(sig.key_id, f.key.key_id());
    assert_eq!(sig.trusted_comment, "trident 0.1.0 jetson-nano");
    assert!(v.warnings.is_empty() && v.installed.is_none());
    assert_eq!(v.manifest.models[0].file, "models/balanced.onnx");
}

#[test]
fn a_changed_file_under_a_valid_signature_is_refused_naming_the_file() {
    let f = Fixture::new();
    let m = common::manifest_for(common::FILES, common::target(std::env::consts::ARCH));
    let mut files = common::FILES.to_vec();
    files[0].1 = b"onnx model bytez";
    // Old manifest, changed model, freshly (validly) signed archive.
    let pkg = f.signed("tampered.tar.zst", &files, &m);
    let install = f.path().join("installed");
    let e = verify_package(&pkg, &f.opts(), Some(&install))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("models/balanced.onnx") && e.contains("was changed"),
        "{e}"
    );
    assert!(
        !e.contains("staging"),
        "names the package, not the temporary folder: {e}"
    );
    assert!(!install.exists());
}

#[test]
fn a_changed_archive_byte_fails_the_signature_before_anything_is_unpacked() {
    let f = Fixture::new();
    let pkg = f.good();
    let mut bytes = std::fs::read(&pkg).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    std::fs::write(&pkg, bytes).unwrap();
    let install = f.path().join("installed");
    let e = verify_package(&pkg, &f.opts(), Some(&install)).unwrap_err();
    assert!(matches!(e, Error::Signature { .. }), "{e}");
    assert!(!install.exists());
}

#[test]
fn an_unlisted_file_is_refused() {
    let f = Fixture::new();
    let m = common::manifest_for(common::FILES, common::target(std::env::consts::ARCH));
    let mut files = common::FILES.to_vec();
    files.push(("extra/payload.sh", b"#!/bin/sh\n"));
    let pkg = f.signed("extra.tar.zst", &files, &m);
    let e = verify_package(&pkg, &f.opts(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("extra/payload.sh") && e.contains("not listed"),
        "{e}"
    );
}

#[test]
fn an_unsigned_package_is_refused_unless_allowed() {
    let f = Fixture::new();
    let pkg = f.good();
    std::fs::remove_file(signature_path(&pkg)).unwrap();
    let e = verify_package(&pkg, &f.opts(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no signature file") && e.contains("--allow-unsigned"),
        "{e}"
    );
    let v = verify_package(
        &pkg,
        &VerifyOptions {
            allow_unsigned: true,
            ..f.opts()
        },
        None,
    )
    .unwrap();
    assert!(v.signature.is_none());
    assert!(
        v.warnings[0].contains("signature not checked"),
        "{:?}",
        v.warnings
    );
}

#[test]
fn a_signature_without_a_key_is_refused_unless_allowed() {
    let f = Fixture::new();
    let pkg = f.good();
    let e = verify_package(&pkg, &VerifyOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no public key") && e.contains("--allow-unsigned"),
        "{e}"
    );
    let opts = VerifyOptions {
        allow_unsigned: true,
        ..VerifyOptions::default()
    };
    assert!(verify_package(&pkg, &opts, None).is_ok());
}

#[test]
fn allow_unsigned_does_not_excuse_a_bad_signature() {
    let f = Fixture::new();
    let pkg = f.good();
    let other = Fixture::new();
    let opts = VerifyOptions {
        public_key: Some(&other.key),
        allow_unsigned: true,
        ..VerifyOptions::default()
    };
    let e = verify_package(&pkg, &opts, None).unwrap_err().to_string();
    assert!(
        e.contains(&f.key.key_id()) && e.contains(&other.key.key_id()),
        "{e}"
    );
}

#[test]
fn install_renames_into_place_and_refuses_an_existing_folder() {
    let f = Fixture::new();
    let pkg = f.good();
    let parent = f.path().join("opt");
    let install = parent.join("trident-0.1.0");
    let v = verify_package(&pkg, &f.opts(), Some(&install)).unwrap();
    assert_eq!(v.installed.as_deref(), Some(install.as_path()));
    trident_core::package::PackageDir::open(&install).unwrap();
    assert_eq!(
        common::names(&parent),
        ["trident-0.1.0".to_string()].into(),
        "no staging left"
    );
    let e = verify_package(&pkg, &f.opts(), Some(&install))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn a_failed_install_leaves_nothing_behind() {
    let f = Fixture::new();
    let m = common::manifest_for(common::FILES, common::target("aarch64"));
    let pkg = f.signed("arm.tar.zst", common::FILES, &m);
    let parent = f.path().join("opt");
    std::fs::create_dir(&parent).unwrap();
    let mut device = probe_nothing(f.path());
    device.arch = "x86_64".into();
    let opts = VerifyOptions {
        facts: Some(&device),
        ..f.opts()
    };
    let e = verify_package(&pkg, &opts, Some(&parent.join("t"))).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, Error::Incompatible { .. }) && text.contains("target.arch"),
        "{text}"
    );
    assert!(
        common::names(&parent).is_empty(),
        "{:?}",
        common::names(&parent)
    );
}

fn probe_nothing(root: &Path) -> DeviceFacts {
    trident_package::facts::probe(&root.join("no-such-root"))
}

#[test]
fn device_facts_are_checked_and_unreadable_ones_warned_about() {
    let f = Fixture::new();
    let pkg = f.good();
    let device = DeviceFacts {
        jetpack: Some("4.5".into()),
        l4t: Some("32.5.0".into()),
        ..probe_nothing(f.path())
    };
    let opts = VerifyOptions {
        facts: Some(&device),
        ..f.opts()
    };
    let e = verify_package(&pkg, &opts, None).unwrap_err().to_string();
    assert!(e.contains("target.jetpack") && e.contains("4.5"), "{e}");

    let device = probe_nothing(f.path());
    let opts = VerifyOptions {
        facts: Some(&device),
        ..f.opts()
    };
    let v = verify_package(&pkg, &opts, None).unwrap();
    assert_eq!(v.warnings.len(), 3, "{:?}", v.warnings);
}

/// A package whose binary is this machine's `/bin/ls`, with `max_glibc` as given.
fn binary_package(f: &Fixture, name: &str, arch: &str, max_glibc: &str) -> PathBuf {
    let ls = std::fs::read("/bin/ls").unwrap();
    let ls: &'static [u8] = Box::leak(ls.into_boxed_slice());
    let mut files = common::FILES.to_vec();
    files.push(("bin/trident-edge", ls));
    let mut m = common::manifest_for(&files, common::target(arch));
    m.target.max_glibc = "2.99".into();
    m.binary = Some(PackagedBinary {
        file: "bin/trident-edge".into(),
        sha256: sha256_hex(ls),
        max_glibc: max_glibc.into(),
    });
    f.signed(name, &files, &m)
}

#[test]
fn the_binary_must_match_the_target_and_its_recorded_glibc() {
    let f = Fixture::new();
    let facts = trident_package::elf::inspect(Path::new("/bin/ls")).unwrap();
    let glibc = facts.max_glibc.unwrap();
    let arch = std::env::consts::ARCH;
    let pkg = binary_package(&f, "ok.tar.zst", arch, &glibc);
    verify_package(&pkg, &f.opts(), None).unwrap();

    let pkg = binary_package(&f, "understated.tar.zst", arch, "2.2");
    let e = verify_package(&pkg, &f.opts(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bin/trident-edge")
            && e.contains(&format!("GLIBC_{glibc}"))
            && e.contains("binary.max_glibc says 2.2"),
        "{e}"
    );

    let other = if arch == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let pkg = binary_package(&f, "wrong-arch.tar.zst", other, &glibc);
    let e = verify_package(&pkg, &f.opts(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bin/trident-edge") && e.contains(&format!("targets {other}")),
        "{e}"
    );
}

#[test]
fn a_binary_newer_than_the_targets_glibc_is_refused() {
    let f = Fixture::new();
    let glibc = trident_package::elf::inspect(Path::new("/bin/ls"))
        .unwrap()
        .max_glibc
        .unwrap();
    let ls = std::fs::read("/bin/ls").unwrap();
    let ls: &'static [u8] = Box::leak(ls.into_boxed_slice());
    let mut files = common::FILES.to_vec();
    files.push(("bin/trident-edge", ls));
    let mut m = common::manifest_for(&files, common::target(std::env::consts::ARCH));
    m.target.max_glibc = "2.0".into();
    m.binary = Some(PackagedBinary {
        file: "bin/trident-edge".into(),
        sha256: sha256_hex(ls),
        max_glibc: glibc,
    });
    let pkg = f.signed("new.tar.zst", &files, &m);
    let e = verify_package(&pkg, &f.opts(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("target.max_glibc 2.0"), "{e}");
}

#[test]
fn a_package_without_a_manifest_is_not_a_package() {
    let f = Fixture::new();
    let src = f.path().join("x");
    std::fs::write(&src, b"x").unwrap();
    let pkg = f.path().join("nomanifest.tar.zst");
    trident_package::write_archive(&[trident_package::ArchiveEntry::file("x", &src)], &pkg)
        .unwrap();
    let opts = VerifyOptions {
        allow_unsigned: true,
        ..VerifyOptions::default()
    };
    let e = verify_package(&pkg, &opts, None).unwrap_err().to_string();
    assert!(
        e.contains("nomanifest.tar.zst") && e.contains("no manifest.json"),
        "{e}"
    );
}
