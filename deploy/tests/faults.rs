//! The fault matrix of `push` and `rollback` against loopback units whose service runs under the
//! systemd stand-in (Type=notify: a restart waits for READY=1 and fails when the release dies
//! first). Every case ends by asserting that the unit runs exactly one complete, verified
//! release that passed its gate, and that `deploy status` says so.

use crate::common;

use std::path::{Path, PathBuf};

use common::{TestSetup, unit};
use trident_deploy::inventory::Unit;
use trident_deploy::provision::provision;
use trident_deploy::push::{Outcome, PushOptions, StopAt, push_unit};
use trident_deploy::recover::{self, Gate};
use trident_deploy::status::{self, Health};

fn opts() -> PushOptions {
    PushOptions {
        // A healthy fixture runtime passes within seconds; failing cases cost the whole timeout
        // only where nothing tells the gate earlier.
        health_timeout_s: 30,
        ..Default::default()
    }
}

struct Case {
    t: TestSetup,
    u: Unit,
    packages: Vec<(String, PathBuf)>,
}

impl Case {
    /// One unit, provisioned, running 1.0.0.
    fn new(name: &str) -> Case {
        let t = TestSetup::new(&[name]);
        let u = unit(&t.fleet, name);
        provision(&t.ssh, &u, &t.package, &t.public_key).unwrap();
        let mut case = Case {
            packages: vec![("1.0.0".into(), t.package.clone())],
            t,
            u,
        };
        let out = case.push("1.0.0", &opts()).unwrap();
        assert!(matches!(out, Outcome::Updated { .. }), "{out:?}");
        case
    }

    fn package(&mut self, version: &str) -> PathBuf {
        if let Some((_, p)) = self.packages.iter().find(|(v, _)| v == version) {
            return p.clone();
        }
        let p = self.t.package_version(version);
        self.packages.push((version.into(), p.clone()));
        p
    }

    fn push(&mut self, version: &str, opts: &PushOptions) -> trident_deploy::Result<Outcome> {
        let pkg = self.package(version);
        let m = self.t.manifest(&pkg);
        let started = std::time::Instant::now();
        let out = push_unit(&self.t.ssh, &self.u, &pkg, &m, opts, &Steps(started));
        eprintln!(
            "{}: push {version}: {:.1} s",
            self.u.name,
            started.elapsed().as_secs_f64()
        );
        out
    }

    fn test_unit(&self) -> &trident_e2e::fleet::TestUnit {
        self.t.fleet.unit(&self.u.name)
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.test_unit().path("/opt/trident/deploy-journal"))
            .unwrap_or_default()
    }

    /// The unit runs exactly one complete, verified `release` that passed its gate, and
    /// `deploy status` says so.
    fn assert_settled(&self, release: &str) {
        let tu = self.test_unit();
        assert_eq!(tu.current_release().as_deref(), Some(release));
        assert!(tu.service_running(), "{}: service not running", self.u.name);
        let gate = recover::gate(&self.t.ssh, &self.u, release, &opts()).unwrap();
        assert_eq!(gate, Gate::Passed, "{}", self.u.name);
        let dir = tu.path(&format!("/opt/trident/releases/{release}"));
        trident_core::package::PackageDir::open(&dir).unwrap();
        let s = status::read(&self.t.ssh, &self.u);
        assert_eq!(s.release.as_deref(), Some(release), "{s:?}");
        assert_eq!(s.release_state.as_deref(), Some("good"), "{s:?}");
        assert_eq!(s.health, Health::Ok, "{s:?}");
        assert_eq!(s.running_version.as_deref(), Some(release), "{s:?}");
        assert!(
            matches!(s.deploy_state.as_deref(), Some("committed" | "rolled-back")),
            "{s:?}"
        );
        assert_eq!(s.locked_by, None, "{s:?}");
    }
}

/// Prints each step's start, for reading where a slow case spends its time.
struct Steps(std::time::Instant);

impl trident_deploy::push::Report for Steps {
    fn step(&self, step: &str) {
        eprintln!("  {:6.2} s {step}", self.0.elapsed().as_secs_f64());
    }
    fn uploaded(&self, _: u64, _: u64) {}
}

fn releases(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A release that dies before READY=1: under systemd the restart fails; the push rolls back and
/// says so, and the release is never chosen again.
#[test]
fn a_release_that_crashes_before_ready_is_rolled_back() {
    let mut c = Case::new("crash-01");
    c.test_unit().set_fault("start-fails-1.1.0", true);
    let out = c.push("1.1.0", &opts()).unwrap();
    match &out {
        Outcome::RolledBack { failed, to, why } => {
            assert_eq!((failed.as_str(), to.as_str()), ("1.1.0", "1.0.0"));
            assert!(
                why.contains(
                    "Job for trident-edge.service failed because the control process exited"
                ),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    c.assert_settled("1.0.0");
    let s = status::read(&c.t.ssh, &c.u);
    assert_eq!(s.failed_release.as_deref(), Some("1.1.0"));
    assert!(s.history.contains(&"failed 1.1.0".to_string()), "{s:?}");
}

/// A release that starts and serves /healthz but never processes a frame fails its gate.
#[test]
fn a_release_that_processes_no_frame_is_not_committed() {
    let mut c = Case::new("frames-01");
    c.test_unit().set_fault("no-frames-1.1.0", true);
    let out = c
        .push(
            "1.1.0",
            &PushOptions {
                health_timeout_s: 15,
                ..opts()
            },
        )
        .unwrap();
    match &out {
        Outcome::RolledBack { failed, why, .. } => {
            assert_eq!(failed, "1.1.0");
            assert!(why.contains("frames"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    c.assert_settled("1.0.0");
}

/// Killed after each step of the switch and during commit: the next push finishes or undoes
/// exactly what was done.
#[test]
fn a_deploy_killed_at_any_step_is_finished_or_undone_by_the_next() {
    let mut c = Case::new("killed-01");
    for (stop, version) in [
        (StopAt::Journal, "1.1.0"),
        (StopAt::Symlink, "1.2.0"),
        (StopAt::Restart, "1.3.0"),
        (StopAt::Commit, "1.4.0"),
    ] {
        let before = c.test_unit().current_release().unwrap();
        let e = c
            .push(
                version,
                &PushOptions {
                    stop_at: Some(stop),
                    ..opts()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("fault injection"), "{stop:?}: {e}");
        assert!(
            c.journal().contains("state=switching"),
            "{stop:?}: {}",
            c.journal()
        );
        let expected_current = if stop == StopAt::Journal {
            before.as_str()
        } else {
            version
        };
        assert_eq!(
            c.test_unit().current_release().as_deref(),
            Some(expected_current),
            "{stop:?}"
        );
        // The next push of the same package finds the journal and ends on it, committed.
        let out = c.push(version, &opts()).unwrap();
        match stop {
            // Undone, then installed afresh.
            StopAt::Journal => assert!(
                matches!(&out, Outcome::Updated { to, .. } if to == version),
                "{out:?}"
            ),
            // Finished (restarted where the restart had not happened), committed.
            _ => assert_eq!(out, Outcome::AlreadyCurrent(version.into()), "{stop:?}"),
        }
        c.assert_settled(version);
    }
    // Pruning kept three releases by the history (current and the two newest good ones).
    let dir = c.test_unit().path("/opt/trident/releases");
    assert_eq!(releases(&dir), ["1.2.0", "1.3.0", "1.4.0"]);
}

/// A failed release is never the target of a manual rollback, and pruning goes by the history,
/// not by mtimes set by a unit clock that went back to 1970.
#[test]
fn manual_rollback_after_an_automatic_one_skips_the_failed_release() {
    let mut c = Case::new("history-01");
    c.push("1.1.0", &opts()).unwrap();
    c.test_unit().set_fault("start-fails-1.2.0", true);
    let out = c.push("1.2.0", &opts()).unwrap();
    assert!(matches!(out, Outcome::RolledBack { .. }), "{out:?}");
    c.assert_settled("1.1.0");
    // The unit's clock was set back: every release folder looks older than it is, the newest
    // good one oldest of all.
    let dir = c.test_unit().path("/opt/trident/releases");
    for (r, when) in [
        ("1.0.0", "2026-11-30"),
        ("1.1.0", "1970-01-01"),
        ("1.2.0", "2026-12-01"),
    ] {
        assert!(
            std::process::Command::new("touch")
                .args(["-d", when])
                .arg(dir.join(r))
                .status()
                .unwrap()
                .success()
        );
    }
    let out = recover::rollback(&c.t.ssh, &c.u, &opts()).unwrap();
    assert_eq!(
        out,
        Outcome::Updated {
            from: Some("1.1.0".into()),
            to: "1.0.0".into(),
            doctor: None
        }
    );
    c.assert_settled("1.0.0");
    // Back up to 1.1.0 (the history's newest good one other than current), then nothing older.
    let out = recover::rollback(&c.t.ssh, &c.u, &opts()).unwrap();
    assert!(
        matches!(&out, Outcome::Updated { to, .. } if to == "1.1.0"),
        "{out:?}"
    );
    c.assert_settled("1.1.0");
}

/// Two deploys at once: the second fails fast naming the first, or queues behind it with a
/// wait; a push during a rollback likewise.
#[test]
fn concurrent_deploys_are_refused_or_queued() {
    let mut c = Case::new("lock-01");
    let p2 = c.package("1.1.0");
    let m2 = c.t.manifest(&p2);
    let p3 = c.package("1.2.0");
    let m3 = c.t.manifest(&p3);
    let held =
        c.t.ssh
            .lock(&c.u, "push 9.9.9 by someone@elsewhere (pid 1)", None)
            .unwrap();
    let e = push_unit(&c.t.ssh, &c.u, &p2, &m2, &opts(), &())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("busy") && e.contains("push 9.9.9 by someone@elsewhere (pid 1) since"),
        "{e}"
    );
    let e = recover::rollback(&c.t.ssh, &c.u, &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("busy"), "{e}");
    let s = status::read(&c.t.ssh, &c.u);
    assert!(
        s.locked_by
            .as_deref()
            .is_some_and(|w| w.contains("someone@elsewhere")),
        "{s:?}"
    );
    // With --wait, a push queues and runs once the holder lets go.
    let (ssh, u) = (c.t.ssh.clone(), c.u.clone());
    let (p3b, m3b) = (p3.clone(), m3.clone());
    let waiting = std::thread::spawn(move || {
        push_unit(
            &ssh,
            &u,
            &p3b,
            &m3b,
            &PushOptions {
                lock_wait: Some(std::time::Duration::from_secs(120)),
                ..opts()
            },
            &(),
        )
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!waiting.is_finished(), "it waits for the lock");
    drop(held);
    let out = waiting.join().unwrap().unwrap();
    assert!(
        matches!(&out, Outcome::Updated { to, .. } if to == "1.2.0"),
        "{out:?}"
    );
    c.assert_settled("1.2.0");

    // Two real pushes started together: one runs, the other is refused (a downgrade after it,
    // or busy during it); the unit ends on one release.
    let p4 = c.package("1.3.0");
    let m4 = c.t.manifest(&p4);
    let p5 = c.package("1.4.0");
    let m5 = c.t.manifest(&p5);
    let run = |p: PathBuf, m: trident_core::package::Manifest| {
        let (ssh, u) = (c.t.ssh.clone(), c.u.clone());
        std::thread::spawn(move || push_unit(&ssh, &u, &p, &m, &opts(), &()))
    };
    let (a, b) = (run(p4, m4), run(p5, m5));
    let results = [a.join().unwrap(), b.join().unwrap()];
    let ok: Vec<&Outcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!ok.is_empty(), "{results:?}");
    let current = c.test_unit().current_release().unwrap();
    assert!(current == "1.3.0" || current == "1.4.0", "{current}");
    c.assert_settled(&current);
}

/// A downgrade is refused unless asked for; then it installs like any release.
#[test]
fn a_downgrade_needs_allow_downgrade() {
    let mut c = Case::new("down-01");
    c.push("1.1.0", &opts()).unwrap();
    let e = c.push("1.0.0", &opts()).unwrap_err().to_string();
    assert!(
        e.contains("older than the running 1.1.0") && e.contains("--allow-downgrade"),
        "{e}"
    );
    c.assert_settled("1.1.0");
    let out = c
        .push(
            "1.0.0",
            &PushOptions {
                allow_downgrade: true,
                ..opts()
            },
        )
        .unwrap();
    assert!(
        matches!(&out, Outcome::Updated { to, .. } if to == "1.0.0"),
        "{out:?}"
    );
    c.assert_settled("1.0.0");
}

/// The switch and the journal reach the disk before the restart: the unit's `sync` saw the
/// journal's temporary file, the trident folder (the renames) and a full sync, in that order.
#[test]
fn the_journal_and_the_switch_are_synced_before_the_restart() {
    let mut c = Case::new("sync-01");
    let log = c.test_unit().path("/var/log/fake-sync.log");
    let _ = std::fs::remove_file(&log);
    c.push("1.1.0", &opts()).unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let t = c.test_unit().path("/opt/trident").display().to_string();
    let at = |needle: &str| {
        calls
            .lines()
            .position(|l| l == needle)
            .unwrap_or_else(|| panic!("no `sync {needle}` in:\n{calls}"))
    };
    let journal = at(&format!("{t}/deploy-journal.tmp"));
    let folder = calls
        .lines()
        .enumerate()
        .skip(journal + 1)
        .find(|(_, l)| *l == t)
        .map(|(i, _)| i)
        .expect("the folder synced after the journal");
    let full = calls
        .lines()
        .enumerate()
        .skip(folder + 1)
        .find(|(_, l)| l.is_empty())
        .map(|(i, _)| i)
        .expect("a full sync after the switch");
    assert!(journal < folder && folder < full, "{calls}");
    c.assert_settled("1.1.0");
}

/// A unit whose SSH user is not root: without passwordless sudo, provisioning is refused with
/// the reason and nothing on the unit changes; with it, every step runs through `sudo -n` and
/// the unit ends as a root login's would.
#[test]
fn a_non_root_user_needs_passwordless_sudo() {
    let t = TestSetup::new(&["user-01"]);
    let u = unit(&t.fleet, "user-01");
    let tu = t.fleet.unit("user-01");
    tu.login_unprivileged(false);
    let e = provision(&t.ssh, &u, &t.package, &t.public_key)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not root and has no passwordless sudo")
            && e.contains("a password is required")
            && e.contains("NOPASSWD"),
        "{e}"
    );
    assert!(!tu.path("/opt/trident").exists(), "nothing changed");

    tu.login_unprivileged(true);
    provision(&t.ssh, &u, &t.package, &t.public_key).unwrap();
    let m = t.manifest(&t.package);
    let out = push_unit(&t.ssh, &u, &t.package, &m, &opts(), &()).unwrap();
    assert!(
        matches!(&out, Outcome::Updated { to, .. } if to == "1.0.0"),
        "{out:?}"
    );
    let p2 = t.package_version("1.1.0");
    let m2 = t.manifest(&p2);
    let out = push_unit(&t.ssh, &u, &p2, &m2, &opts(), &()).unwrap();
    assert!(
        matches!(&out, Outcome::Updated { to, .. } if to == "1.1.0"),
        "{out:?}"
    );
    // The steps went through sudo as the unprivileged user.
    let sudo = tu.calls("sudo");
    assert!(
        sudo.iter().any(|l| l.starts_with(&format!(
            "uid={} -n -- sh -s",
            trident_e2e::fleet::UNPRIVILEGED_UID
        ))),
        "{sudo:?}"
    );
    assert!(
        sudo.iter()
            .any(|l| l.contains("rsync") || l.contains("cat >>")),
        "the upload too: {sudo:?}"
    );
    let c = Case {
        t,
        u,
        packages: vec![],
    };
    c.assert_settled("1.1.0");
}

/// The host is gone after the switch (killed before the restart) and the new release cannot
/// start: the unit's own guard, run by the unit file before each start, switches back to the
/// last good release after three failed starts — with nothing but systemd's restarts.
#[test]
fn the_unit_heals_itself_when_the_host_is_gone() {
    let mut c = Case::new("guard-01");
    let tu = c.test_unit();
    tu.set_fault("start-fails-1.1.0", true);
    // Shorter restarts than the unit's 5 s, as a drop-in (the unit file stays the shipped one).
    let drop_in = tu.path("/etc/systemd/system/trident-edge.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(drop_in.join("10-test.conf"), "[Service]\nRestartSec=1\n").unwrap();
    assert!(tu.ssh(&["systemctl", "daemon-reload"]).status.success());
    let e = c
        .push(
            "1.1.0",
            &PushOptions {
                stop_at: Some(StopAt::Symlink),
                ..opts()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("fault injection"), "{e}");
    let tu = c.test_unit();
    assert_eq!(tu.current_release().as_deref(), Some("1.1.0"));
    // The unit restarts (a power cycle, or the watchdog): 1.1.0 dies before READY; systemd
    // restarts it; the guard counts.
    let restart = tu.ssh(&["systemctl", "restart", "trident-edge"]);
    assert!(!restart.status.success(), "1.1.0 cannot start");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while tu.current_release().as_deref() != Some("1.0.0") || !tu.service_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the guard did not switch back: {}",
            std::fs::read_to_string(tu.path("/var/log/trident-edge.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let journal = c.journal();
    assert!(
        journal.contains("state=rolled-back\ntarget=1.0.0\nfailed=1.1.0\nby=unit"),
        "{journal}"
    );
    let log = std::fs::read_to_string(tu.path("/var/log/trident-edge.log")).unwrap_or_default();
    assert!(
        log.contains("1.1.0 failed to start 3 times in a row; switched back to 1.0.0"),
        "{log}"
    );
    c.assert_settled("1.0.0");
    let s = status::read(&c.t.ssh, &c.u);
    assert!(s.history.contains(&"failed 1.1.0".to_string()), "{s:?}");
    // Fixed, the next push installs it over the unit's own rollback.
    c.test_unit().set_fault("start-fails-1.1.0", false);
    let out = c.push("1.1.0", &opts()).unwrap();
    assert!(
        matches!(&out, Outcome::Updated { to, .. } if to == "1.1.0"),
        "{out:?}"
    );
    c.assert_settled("1.1.0");
}
