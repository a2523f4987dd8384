//! The Mender artifact, read back by the real `mender-artifact` tool (Debian's package, installed
//! by `cargo xtask setup`), and its bytes checked member by member.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use trident_core::digest::{sha256_file, sha256_hex};
use trident_package::mender::{MenderOptions, artifact_file_name, write_artifact};
use trident_package::{SigningKey, generate_keypair, signature_path};

const TOOL_HINT: &str = "`cargo xtask setup` installs mender-artifact (Debian package)";

fn mender_artifact(args: &[&str]) -> (bool, String) {
    let out = Command::new("mender-artifact")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mender-artifact ({e}): {TOOL_HINT}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A signed package `trident-1.2.0-jetson-nano-jp46.tar.zst` in `dir`.
fn signed_package(dir: &Path) -> (std::path::PathBuf, trident_core::package::Manifest) {
    let mut m = common::manifest_for(common::FILES, common::target("aarch64"));
    m.version = "1.2.0".into();
    let pkg = common::package(
        dir,
        "trident-1.2.0-jetson-nano-jp46.tar.zst",
        common::FILES,
        &m,
    );
    let (sk, _) = generate_keypair(&dir.join("keys"), None).unwrap();
    SigningKey::from_file(&sk, None)
        .unwrap()
        .sign_file(&pkg, &signature_path(&pkg), "trident 1.2.0")
        .unwrap();
    (pkg, m)
}

/// The members of an uncompressed tar: (name, bytes).
fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

#[test]
fn the_real_mender_artifact_tool_validates_and_reads_what_trident_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, m) = signed_package(dir.path());
    let out = dir.path().join("dist");
    let opts = MenderOptions {
        device_types: vec!["jetson-nano".into(), "jetson-nano-emmc".into()],
        ..Default::default()
    };
    let a = write_artifact(&pkg, &m, &opts, &out).unwrap();
    assert_eq!(a.artifact_name, "trident-1.2.0");
    assert_eq!(
        a.path,
        out.join("trident-1.2.0-jetson-nano-jp46.mender"),
        "named after the package"
    );
    assert_eq!(
        artifact_file_name(&pkg),
        "trident-1.2.0-jetson-nano-jp46.mender"
    );
    let path = a.path.to_str().unwrap();

    let (ok, text) = mender_artifact(&["validate", path]);
    assert!(ok, "mender-artifact validate refused it:\n{text}");
    let (ok, text) = mender_artifact(&["read", path]);
    assert!(ok, "mender-artifact read failed:\n{text}");
    for needle in [
        "Name: trident-1.2.0",
        "Format: mender",
        "Version: 3",
        "jetson-nano jetson-nano-emmc",
        "Type:   trident",
        "rootfs-image.trident.version: 1.2.0",
        "trident.package: trident-1.2.0-jetson-nano-jp46.tar.zst",
        "rootfs-image.trident.*",
        "\"trident_version\": \"1.2.0\"",
        "\"trident_allow_downgrade\": false",
        "name:     trident-1.2.0-jetson-nano-jp46.tar.zst",
        "name:     trident-1.2.0-jetson-nano-jp46.tar.zst.minisig",
        &format!("checksum: {}", sha256_file(&pkg).unwrap()),
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }

    // The payload is the package byte for byte, its signature beside it; the manifest's sums
    // are those of the members.
    let bytes = std::fs::read(&a.path).unwrap();
    let outer = members(&bytes);
    let names: Vec<&str> = outer.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["version", "manifest", "header.tar", "data/0000.tar"]
    );
    let manifest = String::from_utf8(outer[1].1.clone()).unwrap();
    assert!(manifest.contains(&format!("{}  version\n", sha256_hex(&outer[0].1))));
    assert!(manifest.contains(&format!("{}  header.tar\n", sha256_hex(&outer[2].1))));
    let data = members(&outer[3].1);
    assert_eq!(data.len(), 2);
    assert_eq!(data[0].1, std::fs::read(&pkg).unwrap());
    assert_eq!(data[1].1, std::fs::read(signature_path(&pkg)).unwrap());

    // Deterministic: the same package gives the same bytes.
    let again = write_artifact(&pkg, &m, &opts, &dir.path().join("again")).unwrap();
    assert_eq!(
        std::fs::read(&again.path).unwrap(),
        bytes,
        "a rebuild differs"
    );
}

#[test]
fn a_changed_byte_fails_the_real_tools_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, m) = signed_package(dir.path());
    let opts = MenderOptions {
        device_types: vec!["jetson-nano".into()],
        ..Default::default()
    };
    let a = write_artifact(&pkg, &m, &opts, dir.path()).unwrap();
    let mut bytes = std::fs::read(&a.path).unwrap();
    // A byte in the middle of the package inside data/0000.tar.
    let package = std::fs::read(&pkg).unwrap();
    let start = bytes
        .windows(64)
        .position(|w| w == &package[..64])
        .expect("the package is stored as is");
    bytes[start + package.len() / 2] ^= 0x5a;
    let bad = dir.path().join("bad.mender");
    std::fs::write(&bad, &bytes).unwrap();
    let (ok, text) = mender_artifact(&["validate", bad.to_str().unwrap()]);
    assert!(!ok, "a changed payload byte was accepted:\n{text}");
}

#[test]
fn bad_options_are_refused_naming_the_field_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, m) = signed_package(dir.path());
    let out = dir.path().join("out");
    let e = write_artifact(&pkg, &m, &MenderOptions::default(), &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mender.device_types"), "{e}");
    let e = write_artifact(
        &pkg,
        &m,
        &MenderOptions {
            device_types: vec!["jetson nano".into()],
            ..Default::default()
        },
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mender.device_types") && e.contains("\"jetson nano\""),
        "{e}"
    );
    assert!(!out.exists() || common::names(&out).is_empty());
}
