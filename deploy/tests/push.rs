//! `push` against loopback units: a healthy update commits and is not repeated; a release that
//! fails its health check is rolled back automatically; a deploy stopped between switch and
//! health check is resolved by the next run; a dropped upload resumes; a tampered package, a
//! package signed by another key and a full disk change nothing; a part that rotted on the unit
//! is sent again. After every case the unit runs exactly one complete, verified release and its
//! service is up.

use crate::common;

use common::{TestSetup, assert_on, unit};
use trident_deploy::inventory::Unit;
use trident_deploy::provision::provision;
use trident_deploy::push::{Outcome, PushOptions, push_unit};
use trident_package::verify::{VerifyOptions, verify_package};

fn opts() -> PushOptions {
    PushOptions {
        health_timeout_s: 60,
        keep_releases: 3,
        ..Default::default()
    }
}

fn manifest(t: &TestSetup, pkg: &std::path::Path) -> trident_core::package::Manifest {
    t.manifest(pkg)
}

/// A push whose connection drops after 1 MiB of the upload: an error, the part left behind.
fn drop_upload(
    t: &TestSetup,
    u: &Unit,
    pkg: &std::path::Path,
    m: &trident_core::package::Manifest,
) {
    let e = push_unit(
        &t.ssh,
        u,
        pkg,
        m,
        &PushOptions {
            drop_upload_after: Some(1 << 20),
            ..opts()
        },
        &(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("dropped"), "{e}");
}

fn ready(t: &TestSetup, name: &str) -> Unit {
    let u = unit(&t.fleet, name);
    provision(&t.ssh, &u, &t.package, &t.public_key).unwrap();
    u
}

/// An outcome with the doctor's verdict dropped, for comparisons that are not about it.
fn without_doctor(o: Outcome) -> Outcome {
    match o {
        Outcome::Updated { from, to, .. } => Outcome::Updated {
            from,
            to,
            doctor: None,
        },
        other => other,
    }
}

#[test]
fn an_update_commits_a_bad_one_rolls_back_and_an_interrupted_one_is_resolved() {
    let t = TestSetup::new(&["reef-01"]);
    let u = ready(&t, "reef-01");
    let tu = t.fleet.unit("reef-01");

    let m1 = manifest(&t, &t.package);
    let out = push_unit(&t.ssh, &u, &t.package, &m1, &opts(), &()).unwrap();
    // doctor ran on the unit as the service would: the Nano profile asks for tensorrt first, and
    // this loopback "unit" has no TensorRT, so the verdict says so and names the fallback.
    let Outcome::Updated {
        doctor: Some(verdict),
        ..
    } = &out
    else {
        panic!("{out:?}");
    };
    assert!(
        verdict.starts_with("FAIL: tensorrt") && verdict.contains("fall back to"),
        "{verdict}"
    );
    assert_eq!(
        without_doctor(out),
        Outcome::Updated {
            from: None,
            to: "1.0.0".into(),
            doctor: None
        }
    );
    assert_on(&t, &u, "1.0.0");
    assert!(
        tu.calls("systemctl")
            .iter()
            .any(|c| c.contains("restart trident-edge"))
    );
    // Engines are prepared by the service user, so the service can read and rebuild them.
    let prepares = tu.calls("runuser");
    assert!(
        prepares
            .iter()
            .any(|c| c.starts_with("-u trident -- ") && c.contains("trident-edge prepare")),
        "{prepares:?}"
    );
    assert_eq!(
        push_unit(&t.ssh, &u, &t.package, &m1, &opts(), &()).unwrap(),
        Outcome::AlreadyCurrent("1.0.0".into())
    );

    // 1.1.0 never gets healthy: back to 1.0.0 automatically.
    let p2 = t.package_version("1.1.0");
    let m2 = manifest(&t, &p2);
    tu.set_fault("unhealthy-1.1.0", true);
    let out = push_unit(
        &t.ssh,
        &u,
        &p2,
        &m2,
        &PushOptions {
            health_timeout_s: 8,
            ..opts()
        },
        &(),
    )
    .unwrap();
    match out {
        Outcome::RolledBack { failed, to, .. } => {
            assert_eq!((failed.as_str(), to.as_str()), ("1.1.0", "1.0.0"))
        }
        other => panic!("{other:?}"),
    }
    assert_on(&t, &u, "1.0.0");
    tu.set_fault("unhealthy-1.1.0", false);

    // The deploy dies between switch and health check; the next run finds the journal,
    // checks the switched release and commits it.
    let e = push_unit(
        &t.ssh,
        &u,
        &p2,
        &m2,
        &PushOptions {
            stop_at: Some(trident_deploy::push::StopAt::Restart),
            ..opts()
        },
        &(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fault injection"), "{e}");
    assert_eq!(tu.current_release().as_deref(), Some("1.1.0"));
    let out = push_unit(&t.ssh, &u, &p2, &m2, &opts(), &()).unwrap();
    assert_eq!(out, Outcome::AlreadyCurrent("1.1.0".into()));
    let journal = std::fs::read_to_string(tu.path("/opt/trident/deploy-journal")).unwrap();
    assert!(journal.contains("state=committed"), "{journal}");
    assert_on(&t, &u, "1.1.0");
}

#[test]
fn a_dropped_upload_resumes_and_bad_packages_or_a_full_disk_change_nothing() {
    let t = TestSetup::new(&["reef-01"]);
    let u = ready(&t, "reef-01");
    let tu = t.fleet.unit("reef-01");
    let m1 = manifest(&t, &t.package);
    push_unit(&t.ssh, &u, &t.package, &m1, &opts(), &()).unwrap();

    let p2 = t.package_version("1.1.0");
    let m2 = manifest(&t, &p2);

    // A 5 W unit and a package without the 5 W profile: refused in preflight.
    let mut five_watt = u.clone();
    five_watt.power_mode = trident_deploy::inventory::PowerMode::FiveWatt;
    let mut no_5w = m2.clone();
    no_5w.profiles.retain(|p| !p.ends_with("nano-5w.yaml"));
    let e = push_unit(&t.ssh, &five_watt, &p2, &no_5w, &opts(), &())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused: the package has no profiles/nano-5w.yaml"),
        "{e}"
    );

    // Disk full: refused in preflight, nothing uploaded or switched.
    tu.set_disk_avail_kb(1024);
    let e = push_unit(&t.ssh, &u, &p2, &m2, &opts(), &())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not enough disk"), "{e}");
    assert!(
        std::fs::read_dir(tu.path("/opt/trident/incoming"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_on(&t, &u, "1.0.0");
    tu.set_disk_avail_kb(10 << 20);

    // The link drops mid-upload; the next push resumes from what arrived.
    drop_upload(&t, &u, &p2, &m2);
    assert_on(&t, &u, "1.0.0");

    // A package signed by another key: the unit's verifier refuses it, nothing switched.
    let (other_secret, _) =
        trident_package::signature::generate_keypair(&t.dir.path().join("other-keys"), None)
            .unwrap();
    let foreign_dir = t.dir.path().join("foreign");
    std::fs::create_dir_all(&foreign_dir).unwrap();
    let foreign = common::build(&foreign_dir, "1.2.0", &other_secret);
    let mf = manifest_unchecked(&foreign);
    let e = push_unit(&t.ssh, &u, &foreign, &mf, &opts(), &())
        .unwrap_err()
        .to_string();
    assert!(e.contains("verify"), "{e}");
    assert!(!tu.path("/opt/trident/releases/1.2.0").exists());
    assert_on(&t, &u, "1.0.0");

    // Resume, then the update goes through.
    let out = push_unit(&t.ssh, &u, &p2, &m2, &opts(), &()).unwrap();
    assert_eq!(
        without_doctor(out),
        Outcome::Updated {
            from: Some("1.0.0".into()),
            to: "1.1.0".into(),
            doctor: None
        }
    );
    assert_on(&t, &u, "1.1.0");
}

/// The manifest of a package without checking its signature (the unit is the one to refuse it).
fn manifest_unchecked(pkg: &std::path::Path) -> trident_core::package::Manifest {
    verify_package(
        pkg,
        &VerifyOptions {
            allow_unsigned: true,
            signature: Some(pkg.with_extension("none")),
            ..Default::default()
        },
        None,
    )
    .map(|v| v.manifest)
    .or_else(|_| {
        verify_package(
            pkg,
            &VerifyOptions {
                allow_unsigned: true,
                ..Default::default()
            },
            None,
        )
        .map(|v| v.manifest)
    })
    .unwrap()
}

/// The package's files on the unit, without logs.
fn incoming_packages(t: &TestSetup) -> Vec<String> {
    std::fs::read_dir(t.fleet.unit("reef-01").path("/opt/trident/incoming"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tar.zst"))
        .collect()
}

#[test]
fn a_tampered_package_or_a_rotten_part_never_becomes_current() {
    let t = TestSetup::new(&["reef-01"]);
    let u = ready(&t, "reef-01");
    let tu = t.fleet.unit("reef-01");
    push_unit(
        &t.ssh,
        &u,
        &t.package,
        &manifest(&t, &t.package),
        &opts(),
        &(),
    )
    .unwrap();
    let p2 = t.package_version("1.1.0");
    let m2 = manifest(&t, &p2);

    // Tampered after signing: one byte flipped, the genuine signature beside it. The unit's
    // verifier refuses it; nothing installed or switched, the upload removed.
    let dir = t.dir.path().join("tampered");
    std::fs::create_dir_all(&dir).unwrap();
    let tampered = dir.join(p2.file_name().unwrap());
    let mut bytes = std::fs::read(&p2).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&tampered, bytes).unwrap();
    let sig = trident_package::verify::signature_path(&p2);
    std::fs::copy(&sig, trident_package::verify::signature_path(&tampered)).unwrap();
    let e = push_unit(&t.ssh, &u, &tampered, &m2, &opts(), &())
        .unwrap_err()
        .to_string();
    assert!(e.contains("reef-01: verify:"), "{e}");
    assert!(!tu.path("/opt/trident/releases/1.1.0").exists());
    assert_eq!(incoming_packages(&t), Vec::<String>::new());
    assert_on(&t, &u, "1.0.0");

    // A dropped upload leaves a part, and bytes of it rot on the unit's card: the next push
    // sends again what differs, and the release that goes live is the signed one.
    drop_upload(&t, &u, &p2, &m2);
    let part = tu.path(&format!(
        "/opt/trident/incoming/{}.part",
        p2.file_name().unwrap().to_string_lossy()
    ));
    let mut bytes = std::fs::read(&part).unwrap();
    assert!(bytes.len() > 4096);
    bytes[1000] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    let out = push_unit(&t.ssh, &u, &p2, &m2, &opts(), &()).unwrap();
    assert_eq!(
        without_doctor(out),
        Outcome::Updated {
            from: Some("1.0.0".into()),
            to: "1.1.0".into(),
            doctor: None
        }
    );
    assert_on(&t, &u, "1.1.0");
    assert_eq!(incoming_packages(&t), Vec::<String>::new());
}
