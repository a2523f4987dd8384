//! The unit's scripts run here with `sh` against a folder laid out as `/opt/trident`, with a
//! `systemctl` that records its calls: the on-unit state machine without SSH or a service.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;

struct Unit {
    dir: tempfile::TempDir,
}

impl Unit {
    /// Releases on disk; `current` → `current`; `history` lines as given.
    fn new(releases: &[&str], current: &str, history: &str) -> Unit {
        let dir = tempfile::tempdir().unwrap();
        let u = Unit { dir };
        let t = u.t();
        for r in releases {
            fs::create_dir_all(t.join("releases").join(r).join("bin")).unwrap();
            fs::write(t.join("releases").join(r).join("bin/trident-edge"), r).unwrap();
        }
        fs::create_dir_all(t.join("bin")).unwrap();
        fs::create_dir_all(t.join("incoming")).unwrap();
        std::os::unix::fs::symlink(format!("releases/{current}"), t.join("current")).unwrap();
        if !history.is_empty() {
            fs::write(t.join("history"), history).unwrap();
        }
        fs::create_dir_all(u.dir.path().join("fakebin")).unwrap();
        let systemctl = u.dir.path().join("fakebin/systemctl");
        fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}/systemctl.log\n",
                u.dir.path().display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(t.join("bin/trident-guard"), guard()).unwrap();
        fs::set_permissions(
            t.join("bin/trident-guard"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        u
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn t(&self) -> PathBuf {
        self.dir.path().join("opt/trident")
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("fakebin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn run(&self, script: &str, args: &[&str]) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(self.root())
            .args(args)
            .env("PATH", self.path_env())
            .output()
            .unwrap()
    }

    fn guard(&self, phase: &str) -> Output {
        Command::new(self.t().join("bin/trident-guard"))
            .arg(phase)
            .env("PATH", self.path_env())
            .output()
            .unwrap()
    }

    fn current(&self) -> String {
        fs::read_link(self.t().join("current"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.t().join(file)).unwrap_or_default()
    }

    fn systemctl(&self) -> String {
        fs::read_to_string(self.dir.path().join("systemctl.log")).unwrap_or_default()
    }

    fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.t().join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[test]
fn the_guard_switches_back_after_repeated_failed_starts() {
    let u = Unit::new(&["1.0.0", "1.1.0"], "1.1.0", "good 1.0.0\npending 1.1.0\n");
    for n in 1..=3 {
        assert!(u.guard("starting").status.success());
        assert_eq!(u.read("start-attempts"), format!("1.1.0 {n}\n"));
        assert_eq!(u.current(), "1.1.0", "start {n} is still allowed");
    }
    let out = u.guard("starting");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed to start 3 times in a row"),
        "{out:?}"
    );
    assert_eq!(u.current(), "1.0.0");
    assert_eq!(u.read("history"), "good 1.0.0\nfailed 1.1.0\n");
    assert!(
        u.read("deploy-journal")
            .contains("state=rolled-back\ntarget=1.0.0\nfailed=1.1.0\nby=unit")
    );
    assert_eq!(u.read("start-attempts"), "");
    // The good release reaching READY clears its count.
    assert!(u.guard("starting").status.success());
    assert_eq!(u.read("start-attempts"), "1.0.0 1\n");
    assert!(u.guard("ready").status.success());
    assert!(!u.t().join("start-attempts").exists());
}

#[test]
fn the_guard_leaves_the_decision_to_a_deploy_holding_the_lock() {
    let u = Unit::new(&["1.0.0", "1.1.0"], "1.1.0", "good 1.0.0\npending 1.1.0\n");
    let mut holder = Command::new("flock")
        .arg(u.t().join("deploy.lock"))
        .args(["-c", "sleep 60"])
        .spawn()
        .unwrap();
    // Until the lock file exists and is held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let free = Command::new("flock")
            .args(["-n"])
            .arg(u.t().join("deploy.lock"))
            .arg("true")
            .status()
            .unwrap()
            .success();
        if !free {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "flock never held");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for _ in 0..5 {
        assert!(u.guard("starting").status.success());
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(u.current(), "1.1.0");
    assert_eq!(u.read("history"), "good 1.0.0\npending 1.1.0\n");
}

#[test]
fn the_guard_without_a_good_release_keeps_counting() {
    let u = Unit::new(
        &["1.0.0", "1.1.0"],
        "1.1.0",
        "failed 1.0.0\npending 1.1.0\n",
    );
    for _ in 0..5 {
        assert!(u.guard("starting").status.success());
    }
    assert_eq!(u.current(), "1.1.0");
    assert_eq!(u.read("start-attempts"), "1.1.0 5\n");
}

#[test]
fn commit_prunes_by_the_history_whatever_the_clock_says() {
    let u = Unit::new(
        &["0.9.0", "1.0.0", "1.1.0", "1.2.0"],
        "1.2.0",
        "good 0.9.0\ngood 1.0.0\nfailed 1.1.0\npending 1.2.0\n",
    );
    // The unit booted in 1970 when 1.2.0 was installed: by mtime it is the oldest.
    let t = u.t();
    let set = |r: &str, secs: &str| {
        assert!(
            Command::new("touch")
                .args(["-d", secs])
                .arg(t.join("releases").join(r))
                .status()
                .unwrap()
                .success()
        );
    };
    set("1.2.0", "1970-01-01 00:10");
    set("0.9.0", "2026-12-01 00:00");
    let out = u.run(&commit(), &["1.2.0", "2", ""]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(u.releases(), ["1.0.0", "1.2.0"]);
    assert_eq!(
        u.read("history"),
        "good 0.9.0\ngood 1.0.0\nfailed 1.1.0\ngood 1.2.0\n"
    );
    assert_eq!(u.read("deploy-journal"), "state=committed\ntarget=1.2.0\n");
    assert_eq!(u.read("bin/trident-edge"), "1.2.0");
}

#[test]
fn switch_writes_its_journal_before_the_symlink_and_restarts_last() {
    let u = Unit::new(&["1.0.0", "1.1.0"], "1.0.0", "");
    let out = u.run(&switch(), &["1.1.0", "1.0.0", "journal"]);
    assert_eq!(out.status.code(), Some(86));
    assert!(
        u.read("deploy-journal")
            .starts_with("state=switching\ntarget=1.1.0\nprevious=1.0.0\nswitched_at=")
    );
    assert_eq!(u.current(), "1.0.0");
    // A unit without a history: what ran is recorded good before the new one is pending.
    assert_eq!(u.read("history"), "good 1.0.0\npending 1.1.0\n");
    assert_eq!(u.systemctl(), "");

    let out = u.run(&switch(), &["1.1.0", "1.0.0", "symlink"]);
    assert_eq!(out.status.code(), Some(86));
    assert_eq!(u.current(), "1.1.0");
    assert_eq!(u.systemctl(), "");

    assert!(u.run(&switch(), &["1.1.0", "1.0.0", ""]).status.success());
    assert_eq!(
        u.systemctl(),
        "reset-failed trident-edge\nrestart trident-edge\n"
    );
    let out = u.run(&switch(), &["9.9.9", "1.1.0", ""]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("releases/9.9.9 is not installed"));
}

#[test]
fn a_failed_release_is_never_the_one_rolled_back_to() {
    let u = Unit::new(
        &["1.0.0", "1.1.0", "1.2.0"],
        "1.2.0",
        "good 1.0.0\ngood 1.1.0\ngood 1.2.0\n",
    );
    // 1.2.0 fails its gate: back to 1.1.0, 1.2.0 marked.
    assert!(u.run(&roll_back(), &["1.1.0", "1.2.0"]).status.success());
    assert_eq!(u.current(), "1.1.0");
    assert!(
        u.read("deploy-journal")
            .starts_with("state=rolling-back\ntarget=1.1.0\nfailed=1.2.0\n")
    );
    assert!(u.run(&rolled_back(), &["1.1.0", "1.2.0"]).status.success());
    assert_eq!(u.read("history"), "good 1.0.0\nfailed 1.2.0\ngood 1.1.0\n");
    // A manual rollback now goes to 1.0.0, not to the newer 1.2.0 that failed.
    let out = u.run(&last_good(), &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0");
    // Undoing an interrupted journal: the pending target is forgotten, the journal committed.
    assert!(
        u.run(&switch(), &["1.2.0", "1.1.0", "journal"])
            .status
            .code()
            == Some(86)
    );
    assert!(u.run(&undo_journal(), &["1.1.0"]).status.success());
    assert_eq!(u.read("deploy-journal"), "state=committed\ntarget=1.1.0\n");
    assert!(!u.read("history").contains("1.2.0"));
}
