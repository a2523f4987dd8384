//! Mender: the real client (Debian's `mender-client` 3.x, standalone mode) installs artifacts
//! that `trident package mender` wrote, through the Update Module that `trident deploy
//! provision` put on a loopback unit, with the real `trident-edge` and the fleet's systemd
//! stand-in. A good release is committed after its gate; one that fails the gate, or never
//! reaches READY, is rolled back; a package signed by another key and one older than what runs
//! are refused with nothing switched; a wrong device type is refused by Mender itself; and
//! `trident deploy` takes over from Mender and back on the same journal and history. A client
//! that requires Mender's own signature installs a trident artifact signed afterwards with
//! `mender-artifact sign`, and refuses it unsigned.

use crate::common;

use std::path::{Path, PathBuf};

use common::{TestSetup, assert_on, push_opts, unit};
use trident_deploy::inventory::Unit;
use trident_deploy::provision::provision;
use trident_deploy::push::{Outcome, PushOptions, StopAt, push_unit};
use trident_e2e::mender::MenderClient;
use trident_package::mender::{MenderOptions, write_artifact};

const DEVICE: &str = "jetson-nano";

/// A provisioned unit with a Mender client whose device type is [`DEVICE`].
fn mender_unit(t: &TestSetup, name: &str) -> (Unit, MenderClient) {
    let u = unit(&t.fleet, name);
    provision(&t.ssh, &u, &t.package, &t.public_key).unwrap();
    let module = t
        .fleet
        .unit(name)
        .path("/usr/share/mender/modules/v3/trident");
    assert!(module.is_file(), "provision installs the Update Module");
    let client = MenderClient::new(&t.fleet.unit(name).root, DEVICE);
    (u, client)
}

/// The Mender artifact of `pkg` for `device_types`.
fn artifact(t: &TestSetup, pkg: &Path, device_types: &[&str], allow_downgrade: bool) -> PathBuf {
    let out = t.dir.path().join("mender");
    // The manifest is read without the signature: a package signed by another key is wrapped
    // too, for the unit to refuse.
    let m = trident_package::verify::verify_package(
        pkg,
        &trident_package::verify::VerifyOptions {
            allow_unsigned: true,
            ..Default::default()
        },
        None,
    )
    .unwrap()
    .manifest;
    let dir = out.join(format!("{}-{}", m.version, device_types.join("+")));
    write_artifact(
        pkg,
        &m,
        &MenderOptions {
            device_types: device_types.iter().map(|d| d.to_string()).collect(),
            artifact_name: None,
            allow_downgrade,
        },
        &dir,
    )
    .unwrap()
    .path
}

/// Shortens the gate's wait on the unit (the module reads its settings at every state).
fn set_health_timeout(t: &TestSetup, u: &Unit, seconds: u64) {
    let path = t.fleet.unit(&u.name).path("/opt/trident/update-module.env");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("HEALTH_ADDR="), "{text}");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("HEALTH_TIMEOUT_S=") {
                format!("HEALTH_TIMEOUT_S={seconds}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn history(t: &TestSetup, u: &Unit) -> String {
    std::fs::read_to_string(t.fleet.unit(&u.name).path("/opt/trident/history")).unwrap_or_default()
}

fn releases(t: &TestSetup, u: &Unit) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(t.fleet.unit(&u.name).path("/opt/trident/releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `mender install` then `mender commit`, both succeeding.
fn install_and_commit(client: &MenderClient, artifact: &Path) {
    let r = client.run(&["install", artifact.to_str().unwrap()]);
    assert!(r.ok, "mender install failed:\n{}", r.output);
    assert!(r.output.contains("Use 'commit' to update"), "{}", r.output);
    let r = client.run(&["commit"]);
    assert!(r.ok, "mender commit failed:\n{}", r.output);
}

/// The unit runs `release`, complete and healthy, and the journal says committed.
fn assert_committed(t: &TestSetup, u: &Unit, release: &str) {
    assert_on(t, u, release);
    let journal =
        std::fs::read_to_string(t.fleet.unit(&u.name).path("/opt/trident/deploy-journal"))
            .unwrap_or_default();
    assert!(
        journal.contains("state=committed") && journal.contains(&format!("target={release}")),
        "{journal}"
    );
}

#[test]
fn a_good_release_is_committed_and_one_failing_its_gate_is_rolled_back() {
    let t = TestSetup::new(&["mender-01"]);
    let (u, client) = mender_unit(&t, "mender-01");
    let tu = t.fleet.unit("mender-01");

    // First release through Mender: verified with the unit's key, switched, gated, committed.
    install_and_commit(&client, &artifact(&t, &t.package, &[DEVICE], false));
    assert_committed(&t, &u, "1.0.0");
    assert_eq!(client.installed_artifact(), "trident-1.0.0");
    let provides = client.run(&["show-provides"]).output;
    assert!(
        provides.contains("rootfs-image.trident.version=1.0.0"),
        "{provides}"
    );
    assert_eq!(history(&t, &u), "good 1.0.0\n");

    // A release whose camera delivers nothing: READY, /healthz up, no frames. The gate at
    // ArtifactCommit fails; Mender calls ArtifactRollback, then ArtifactFailure.
    let v2 = t.package_version("1.1.0");
    tu.set_fault("no-frames-1.1.0", true);
    set_health_timeout(&t, &u, 6);
    let r = client.run(&[
        "install",
        artifact(&t, &v2, &[DEVICE], false).to_str().unwrap(),
    ]);
    assert!(r.ok, "the install itself succeeds:\n{}", r.output);
    assert_eq!(tu.current_release().as_deref(), Some("1.1.0"), "switched");
    let r = client.run(&["commit"]);
    assert!(
        !r.ok,
        "a release failing its gate was committed:\n{}",
        r.output
    );
    assert!(
        r.output.contains("1.1.0 did not pass its health gate"),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("back on 1.0.0; 1.1.0 is marked failed"),
        "{}",
        r.output
    );
    set_health_timeout(&t, &u, 60);
    assert_eq!(tu.current_release().as_deref(), Some("1.0.0"));
    assert!(tu.service_running());
    assert_eq!(history(&t, &u), "failed 1.1.0\ngood 1.0.0\n");
    assert_eq!(
        releases(&t, &u),
        ["1.0.0"],
        "ArtifactFailure leaves the one complete release"
    );
    assert_eq!(client.installed_artifact(), "trident-1.0.0");
    let journal = std::fs::read_to_string(tu.path("/opt/trident/deploy-journal")).unwrap();
    assert!(journal.contains("state=rolled-back"), "{journal}");
    tu.set_fault("no-frames-1.1.0", false);

    // A release that dies before READY: the restart in ArtifactInstall fails, Mender rolls back.
    let v3 = t.package_version("1.2.0");
    tu.set_fault("start-fails-1.2.0", true);
    let r = client.run(&[
        "install",
        artifact(&t, &v3, &[DEVICE], false).to_str().unwrap(),
    ]);
    assert!(!r.ok, "{}", r.output);
    assert!(
        r.output
            .contains("1.2.0 did not start (the restart failed)"),
        "{}",
        r.output
    );
    tu.set_fault("start-fails-1.2.0", false);
    assert_on(&t, &u, "1.0.0");
    assert_eq!(history(&t, &u), "failed 1.1.0\nfailed 1.2.0\ngood 1.0.0\n");
    assert_eq!(releases(&t, &u), ["1.0.0"]);
    assert_eq!(client.installed_artifact(), "trident-1.0.0");
}

#[test]
fn another_key_an_older_release_and_a_wrong_device_type_are_refused_with_nothing_switched() {
    let t = TestSetup::new(&["mender-02"]);
    let (u, client) = mender_unit(&t, "mender-02");
    let tu = t.fleet.unit("mender-02");
    let v2 = t.package_version("1.1.0");
    install_and_commit(&client, &artifact(&t, &v2, &[DEVICE], false));
    assert_committed(&t, &u, "1.1.0");
    let pid = tu.service_pid().unwrap();

    // Signed by a key the unit does not trust.
    let (other_secret, _) =
        trident_package::signature::generate_keypair(&t.dir.path().join("other-keys"), None)
            .unwrap();
    let foreign = common::build(&t.dir.path().join("other"), "1.2.0", &other_secret);
    let r = client.run(&[
        "install",
        artifact(&t, &foreign, &[DEVICE], false).to_str().unwrap(),
    ]);
    assert!(
        !r.ok,
        "a package from another key was installed:\n{}",
        r.output
    );
    assert!(r.output.contains("1.2.0 was not installed"), "{}", r.output);
    assert!(
        r.output.contains("but the trusted public key"),
        "{}",
        r.output
    );

    // Older than what runs: refused by the unit's verifier (a downgrade needs an artifact
    // that allows it).
    let r = client.run(&[
        "install",
        artifact(&t, &t.package, &[DEVICE], false).to_str().unwrap(),
    ]);
    assert!(!r.ok, "a downgrade was installed:\n{}", r.output);
    assert!(
        r.output.contains("older than the running 1.1.0"),
        "{}",
        r.output
    );

    // A device type the unit is not: Mender refuses before the module runs.
    let owner = std::fs::read_to_string(tu.path("/opt/trident/deploy.lock.owner")).unwrap();
    let v3 = t.package_version("1.3.0");
    let r = client.run(&[
        "install",
        artifact(&t, &v3, &["jetson-xavier-nx"], false)
            .to_str()
            .unwrap(),
    ]);
    assert!(!r.ok, "{}", r.output);
    assert!(
        r.output.contains("jetson-xavier-nx") && r.output.contains(DEVICE),
        "Mender names both device types: {}",
        r.output
    );
    assert_eq!(
        std::fs::read_to_string(tu.path("/opt/trident/deploy.lock.owner")).unwrap(),
        owner,
        "the module never ran"
    );

    // Nothing switched or restarted; nothing left behind.
    assert_eq!(tu.current_release().as_deref(), Some("1.1.0"));
    assert_eq!(tu.service_pid(), Some(pid), "the service was restarted");
    assert_eq!(releases(&t, &u), ["1.1.0"]);
    assert_eq!(history(&t, &u), "good 1.1.0\n");
    assert_eq!(client.installed_artifact(), "trident-1.1.0");

    // The same older package, with a downgrade allowed, installs.
    install_and_commit(&client, &artifact(&t, &t.package, &[DEVICE], true));
    assert_committed(&t, &u, "1.0.0");
}

#[test]
fn trident_deploy_and_mender_take_over_from_each_other() {
    let t = TestSetup::new(&["mender-03"]);
    let (u, client) = mender_unit(&t, "mender-03");
    let tu = t.fleet.unit("mender-03");
    let opts = push_opts();

    // Pushed over SSH first.
    let o = push_unit(&t.ssh, &u, &t.package, &t.manifest(&t.package), &opts, &()).unwrap();
    assert!(matches!(o, Outcome::Updated { .. }), "{o:?}");

    // Mender installs the next one but is not committed yet (a standalone install awaiting
    // `mender commit`); a `trident deploy push` arrives: it finishes that deploy first (gate,
    // commit), then installs its own.
    let v2 = t.package_version("1.1.0");
    let r = client.run(&[
        "install",
        artifact(&t, &v2, &[DEVICE], false).to_str().unwrap(),
    ]);
    assert!(r.ok, "{}", r.output);
    let journal = std::fs::read_to_string(tu.path("/opt/trident/deploy-journal")).unwrap();
    assert!(
        journal.contains("state=switching") && journal.contains("target=1.1.0"),
        "{journal}"
    );
    let v3 = t.package_version("1.2.0");
    let o = push_unit(&t.ssh, &u, &v3, &t.manifest(&v3), &opts, &()).unwrap();
    assert!(
        matches!(&o, Outcome::Updated { from: Some(f), to, .. } if f == "1.1.0" && to == "1.2.0"),
        "{o:?}"
    );
    assert_eq!(history(&t, &u), "good 1.0.0\ngood 1.1.0\ngood 1.2.0\n");
    // Mender's commit then finds 1.1.0 decided by another tool and says so.
    let r = client.run(&["commit"]);
    assert!(!r.ok, "{}", r.output);
    assert!(
        r.output
            .contains("1.1.0 is no longer the release being installed"),
        "{}",
        r.output
    );
    assert_committed(&t, &u, "1.2.0");

    // Mender again, on top of what `trident deploy` installed.
    let v4 = t.package_version("1.3.0");
    install_and_commit(&client, &artifact(&t, &v4, &[DEVICE], false));
    assert_committed(&t, &u, "1.3.0");
    assert_eq!(
        history(&t, &u),
        "good 1.0.0\ngood 1.1.0\ngood 1.2.0\ngood 1.3.0\n"
    );
    // keep_releases (3) prunes as a push would.
    assert_eq!(releases(&t, &u), ["1.1.0", "1.2.0", "1.3.0"]);

    // And `trident deploy rollback` goes back to what Mender's predecessor left.
    let o = trident_deploy::recover::rollback(&t.ssh, &u, &opts).unwrap();
    assert!(
        matches!(&o, Outcome::Updated { to, .. } if to == "1.2.0"),
        "{o:?}"
    );
}

/// `cmd`, which must succeed.
fn ok(cmd: &mut std::process::Command) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): `cargo xtask setup` installs it"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_client_requiring_mender_signatures_takes_a_trident_artifact_signed_by_mender_artifact() {
    let t = TestSetup::new(&["mender-04"]);
    let (u, client) = mender_unit(&t, "mender-04");
    let tu = t.fleet.unit("mender-04");
    // An ECDSA P-256 key pair, as Mender's documentation makes one for artifact signing.
    let key = t.dir.path().join("mender-signing.pem");
    let public = t.dir.path().join("mender-verify.pem");
    ok(std::process::Command::new("openssl")
        .args([
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
        ])
        .arg(&key));
    ok(std::process::Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    client.require_signatures(&public);

    let unsigned = artifact(&t, &t.package, &[DEVICE], false);
    let r = client.run(&["install", unsigned.to_str().unwrap()]);
    assert!(!r.ok, "an unsigned artifact was installed:\n{}", r.output);
    assert!(
        r.output.contains("expecting signed artifact"),
        "{}",
        r.output
    );
    assert_eq!(tu.current_release(), None, "nothing was switched");

    let signed = t.dir.path().join("signed.mender");
    ok(std::process::Command::new("mender-artifact")
        .arg("sign")
        .arg(&unsigned)
        .arg("-k")
        .arg(&key)
        .arg("-o")
        .arg(&signed));
    install_and_commit(&client, &signed);
    assert_committed(&t, &u, "1.0.0");
}

#[test]
fn a_push_killed_after_its_switch_is_finished_by_the_next_mender_install() {
    let t = TestSetup::new(&["mender-05"]);
    let (u, client) = mender_unit(&t, "mender-05");
    let tu = t.fleet.unit("mender-05");
    let opts = push_opts();
    push_unit(&t.ssh, &u, &t.package, &t.manifest(&t.package), &opts, &()).unwrap();
    let old_pid = tu.service_pid().unwrap();

    // The push dies between the switch and the restart: `current` names 1.1.0, the 1.0.0
    // process still runs, and the journal says switching.
    let v2 = t.package_version("1.1.0");
    let e = push_unit(
        &t.ssh,
        &u,
        &v2,
        &t.manifest(&v2),
        &PushOptions {
            stop_at: Some(StopAt::Symlink),
            ..opts.clone()
        },
        &(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fault injection"), "{e}");
    assert_eq!(tu.current_release().as_deref(), Some("1.1.0"));
    assert_eq!(tu.service_pid(), Some(old_pid), "not restarted yet");

    // Mender's next install finishes it first — restart, gate, commit 1.1.0 — then installs
    // its own release on top.
    let v3 = t.package_version("1.2.0");
    let r = client.run(&[
        "install",
        artifact(&t, &v3, &[DEVICE], false).to_str().unwrap(),
    ]);
    assert!(r.ok, "{}", r.output);
    assert!(
        r.output
            .contains("an interrupted deploy of 1.1.0 passed its gate and is committed"),
        "{}",
        r.output
    );
    let r = client.run(&["commit"]);
    assert!(r.ok, "{}", r.output);
    assert_committed(&t, &u, "1.2.0");
    assert_eq!(history(&t, &u), "good 1.0.0\ngood 1.1.0\ngood 1.2.0\n");
}
