//! Mender artifacts through the binary: written beside the package by `package build` when the
//! release config has a `mender:` section, or by `trident package mender` for an existing
//! package; read back by Debian's `mender-artifact`. Unsigned packages, untrusted signatures
//! and bad options are refused with exit status 2 and nothing written.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{s, stderr, stdout};

const PACKAGE: &str = "trident-1.2.3-jetson-nano-jp46.tar.zst";
const ARTIFACT: &str = "trident-1.2.3-jetson-nano-jp46.mender";

fn trident(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trident"))
        .args(args)
        .env_remove("TRIDENT_SIGN_KEY")
        .env_remove("TRIDENT_SIGN_KEY_PASSWORD")
        .output()
        .expect("run trident")
}

/// `trident package mender PKG --out OUT EXTRA…`.
fn package_mender(pkg: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["package", "mender", s(pkg), "--out", s(out)];
    args.extend(extra);
    trident(&args)
}

fn mender_artifact(args: &[&str]) -> Output {
    Command::new("mender-artifact")
        .args(args)
        .output()
        .expect("mender-artifact: `cargo xtask setup` installs it")
}

fn with_mender(config: &Path, section: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(section);
    std::fs::write(config, text).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn package_build_writes_the_mender_artifact_and_package_mender_wraps_a_package() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = trident_e2e::aarch64_program(dir.path(), "2.27");
    let config = trident_e2e::release_inputs(dir.path(), &runtime, "aarch64");
    let keys = dir.path().join("keys");
    let o = trident(&["package", "keygen", "--out", s(&keys), "--unencrypted"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (secret, public) = (keys.join("trident.key"), keys.join("trident.pub"));

    // The release config's mender: section.
    with_mender(
        &config,
        "mender:\n  device_types: [jetson-nano, jetson-nano-emmc]\n",
    );
    let out = dir.path().join("dist");
    let o = trident(&[
        "package",
        "build",
        "--config",
        s(&config),
        "--out",
        s(&out),
        "--sign-key",
        s(&secret),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Mender artifact trident-1.2.3 for jetson-nano, jetson-nano-emmc"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        names(&out),
        [
            ARTIFACT.to_string(),
            PACKAGE.to_string(),
            format!("{PACKAGE}.minisig")
        ]
    );
    let artifact = out.join(ARTIFACT);
    let v = mender_artifact(&["validate", s(&artifact)]);
    assert!(v.status.success(), "{}", stderr(&v));
    let r = mender_artifact(&["read", s(&artifact)]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("jetson-nano jetson-nano-emmc")
            && text.contains("rootfs-image.trident.version: 1.2.3"),
        "{text}"
    );

    // `package mender` on the same package gives the same artifact.
    let again = dir.path().join("again");
    let o = package_mender(
        &out.join(PACKAGE),
        &again,
        &[
            "--device-type",
            "jetson-nano",
            "--device-type",
            "jetson-nano-emmc",
            "--pubkey",
            s(&public),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(again.join(ARTIFACT)).unwrap(),
        std::fs::read(&artifact).unwrap()
    );
    // With a downgrade allowed and another name, the meta-data says so.
    let down = dir.path().join("down");
    let o = package_mender(
        &out.join(PACKAGE),
        &down,
        &[
            "--device-type",
            "jetson-nano",
            "--artifact-name",
            "reef-rollback-1.2.3",
            "--allow-downgrade",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(may downgrade)"), "{}", stdout(&o));
    let r = mender_artifact(&["read", s(&down.join(ARTIFACT))]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("Name: reef-rollback-1.2.3")
            && text.contains("\"trident_allow_downgrade\": true"),
        "{text}"
    );

    // Another key's public key: the signature check fails, nothing written.
    let other = dir.path().join("other-keys");
    let o = trident(&["package", "keygen", "--out", s(&other), "--unencrypted"]);
    assert!(o.status.success());
    let refused = dir.path().join("refused");
    let o = package_mender(
        &out.join(PACKAGE),
        &refused,
        &[
            "--device-type",
            "jetson-nano",
            "--pubkey",
            s(&other.join("trident.pub")),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(names(&refused).is_empty());
    // A name Mender cannot carry.
    let o = package_mender(
        &out.join(PACKAGE),
        &refused,
        &["--device-type", "jetson nano"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("mender.device_types"), "{}", stderr(&o));
    assert!(names(&refused).is_empty());
}

#[test]
fn unsigned_packages_and_bad_mender_sections_get_no_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = trident_e2e::aarch64_program(dir.path(), "2.27");
    let config = trident_e2e::release_inputs(dir.path(), &runtime, "aarch64");
    let original = std::fs::read_to_string(&config).unwrap();

    with_mender(&config, "mender:\n  device_types: [jetson-nano]\n");
    let out = dir.path().join("dist");
    let o = trident(&[
        "package",
        "build",
        "--config",
        s(&config),
        "--out",
        s(&out),
        "--unsigned",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("no artifact for an unsigned package"),
        "{}",
        stdout(&o)
    );
    assert_eq!(names(&out), [PACKAGE]);
    let o = package_mender(&out.join(PACKAGE), &out, &["--device-type", "jetson-nano"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("signed packages only"),
        "{}",
        stderr(&o)
    );
    assert_eq!(names(&out), [PACKAGE]);

    // A section Mender could not use stops the build before anything is written.
    for (section, field) in [
        ("mender:\n  device_types: []\n", "mender.device_types"),
        ("mender:\n  device_type: [jetson-nano]\n", "device_type"),
        (
            "mender:\n  device_types: [jetson-nano]\n  artifact_name: \"a b\"\n",
            "mender.artifact_name",
        ),
    ] {
        std::fs::write(&config, &original).unwrap();
        with_mender(&config, section);
        let fresh = dir.path().join("fresh");
        let o = trident(&[
            "package",
            "build",
            "--config",
            s(&config),
            "--out",
            s(&fresh),
            "--unsigned",
        ]);
        assert_eq!(o.status.code(), Some(2), "{section}: {}", stderr(&o));
        assert!(stderr(&o).contains(field), "{section}: {}", stderr(&o));
        assert!(names(&fresh).is_empty(), "{section}: {:?}", names(&fresh));
    }
}
