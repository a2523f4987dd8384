//! The trident deployment package: building it on the host, checking and installing it on a
//! Jetson.
//!
//! # Format
//!
//! A package is one archive, `trident-<version>-<target>.tar.zst` ([`package_file_name`]), with a
//! detached minisign signature beside it, `<archive>.minisig` ([`SIGNATURE_SUFFIX`]). The archive
//! is a deterministic tar compressed with zstd ([`archive`]): rebuilt from the same files it has
//! the same bytes and SHA-256. Unpacked, it is the folder described in
//! [`trident_core::package`]: `manifest.json` (schema `trident-package/1`) listing every other
//! file with its SHA-256, the models and their cards, the calibration tables, the profiles, the
//! aarch64 `trident-edge` binary and its systemd unit.
//!
//! # Verification order
//!
//! [`verify_package`] checks, stopping at the first failure, so that a single changed byte
//! anywhere fails before anything is installed:
//!
//! 1. the signature of the archive bytes, against a trusted public key ([`signature`]);
//! 2. the archive unpacks within [`Limits`] without a hostile member, into a staging folder
//!    ([`mod@extract`]);
//! 3. the manifest parses and is consistent, every file matches its SHA-256, nothing unlisted;
//! 4. the binary is an executable for the target's architecture and glibc ([`elf`]);
//! 5. the package fits the device: architecture, JetPack, TensorRT, glibc ([`facts`]);
//! 6. the staging folder is renamed into place in one step.
//!
//! The device runtime links this crate without the `sign` and `build` features: verification
//! needs only the small pure-Rust `minisign-verify`; key generation and signing (`minisign`, with
//! scrypt) and building a package from a release config ([`build`], which reads the models
//! through `trident-infer`) are host-only.

pub mod archive;
#[cfg(feature = "build")]
pub mod build;
pub mod elf;
pub mod error;
pub mod extract;
pub mod facts;
pub mod mender;
#[cfg(feature = "build")]
pub mod release;
pub mod release_order;
pub mod signature;
pub mod verify;

pub use archive::{ArchiveEntry, write_archive, write_archive_at_level};
pub use elf::{ElfFacts, compare_versions, version_le};
pub use error::{Error, Result};
pub use extract::{
    Extracted, Limits, StagedPackage, extract, extract_from_reader, extract_staged,
    extract_tar_from_reader,
};
pub use facts::DeviceFacts;
pub use signature::{PublicKey, SignatureInfo, verify_file};
#[cfg(feature = "sign")]
pub use signature::{SigningKey, generate_keypair};
pub use verify::{Verified, VerifyOptions, signature_path, verify_package};

/// The suffix of a package's detached signature file.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// `trident-<version>-<target>.tar.zst`, the package file name.
pub fn package_file_name(version: &str, target: &str) -> String {
    format!("trident-{version}-{target}.tar.zst")
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_follow_the_documented_pattern() {
        assert_eq!(
            super::package_file_name("0.1.0", "jetson-nano"),
            "trident-0.1.0-jetson-nano.tar.zst"
        );
        assert_eq!(
            super::signature_path(std::path::Path::new("out/p.tar.zst")),
            std::path::Path::new("out/p.tar.zst.minisig")
        );
    }
}
