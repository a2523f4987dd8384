//! A test fleet with a signed package for it: the host's `trident-edge` as the runtime (the
//! units run on this machine), three fixture models with their tables, built by the exporter's
//! package builder and signed with a fresh key.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use trident_deploy::inventory::{PowerMode, Unit};
use trident_deploy::ssh::Ssh;
use trident_e2e::fleet::TestFleet;
use trident_package::build::{PackageRequest, build_package};
use trident_package::release::ReleaseConfig;
use trident_package::signature::SigningKey;

pub struct TestSetup {
    pub fleet: TestFleet,
    pub ssh: Ssh,
    pub package: PathBuf,
    pub public_key: PathBuf,
    pub secret_key: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestSetup {
    pub fn new(units: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fleet = TestFleet::start(&dir.path().join("fleet"), units);
        // As the CLI does: one shared connection per unit.
        let ssh = Ssh {
            config: Some(fleet.ssh_config()),
            ..Default::default()
        }
        .share_connections()
        .unwrap();
        let (secret_key, public_key) =
            trident_package::signature::generate_keypair(&dir.path().join("keys"), None).unwrap();
        let package = build(dir.path(), "1.0.0", &secret_key);
        TestSetup {
            fleet,
            ssh,
            package,
            public_key,
            secret_key,
            dir,
        }
    }

    /// The manifest of `pkg`, verified with this setup's key.
    pub fn manifest(&self, pkg: &Path) -> trident_core::package::Manifest {
        let key = trident_package::signature::PublicKey::from_file(&self.public_key).unwrap();
        trident_package::verify::verify_package(
            pkg,
            &trident_package::verify::VerifyOptions {
                public_key: Some(&key),
                ..Default::default()
            },
            None,
        )
        .unwrap()
        .manifest
    }

    /// Another version of the package (same inputs), signed with the same key.
    pub fn package_version(&self, version: &str) -> PathBuf {
        build(self.dir.path(), version, &self.secret_key)
    }
}

/// Builds `trident-<version>-test.tar.zst` for this machine (x86-64, its glibc).
pub fn build(dir: &Path, version: &str, secret_key: &Path) -> PathBuf {
    let inputs = dir.join(format!("inputs-{version}"));
    std::fs::create_dir_all(&inputs).unwrap();
    let config = trident_e2e::host_release_inputs(&inputs);
    let release = ReleaseConfig::load(&config).unwrap();
    let key = SigningKey::from_file(secret_key, None).unwrap();
    let models = release.models.dir.clone().unwrap();
    let built = build_package(
        &PackageRequest {
            config: &release,
            models_dir: &models,
            version,
            git_revision: None,
            signer: Some(&key),
            // Thrown away after the test: fast to compress.
            zstd_level: 3,
        },
        &dir.join("dist"),
    )
    .unwrap();
    built.archive
}

/// The inventory entry of a harness unit (its Host block in the harness's ssh config).
pub fn unit(fleet: &TestFleet, name: &str) -> Unit {
    let t = fleet.unit(name);
    Unit {
        name: name.into(),
        host: name.into(),
        port: None,
        user: None,
        tags: vec![],
        power_mode: PowerMode::Maxn,
        root: t.root.display().to_string(),
        health_addr: ([127, 0, 0, 1], t.health_port).into(),
    }
}

/// The unit runs `release`, its folder is complete (the verifier accepts it again) and the
/// service answers healthy.
pub fn assert_on(t: &TestSetup, u: &Unit, release: &str) {
    let tu = t.fleet.unit(&u.name);
    assert_eq!(tu.current_release().as_deref(), Some(release));
    assert!(tu.service_running(), "{}: service not running", u.name);
    let gate = trident_deploy::recover::gate(&t.ssh, u, release, &push_opts()).unwrap();
    assert_eq!(gate, trident_deploy::recover::Gate::Passed, "{}", u.name);
    let dir = tu.path(&format!("/opt/trident/releases/{release}"));
    trident_core::package::PackageDir::open(&dir).unwrap();
}

/// Push options with a gate that holds on a busy 2-core machine.
pub fn push_opts() -> trident_deploy::push::PushOptions {
    trident_deploy::push::PushOptions {
        health_timeout_s: 60,
        ..Default::default()
    }
}
