//! A unit whose SSH user is not root, as on a Nano flashed with a normal user: its sessions run
//! as uid/gid 65534 (`setpriv`, from sshd's `ForceCommand`), so everything under the unit's root
//! `R` (root's, 0755) is read-only to them, as `/opt` is to a user on a real unit — a deploy step
//! that forgets `sudo` fails with "Permission denied". `R/bin/sudo` is a setuid-root stand-in
//! (tests/standin/sudo/sudo.c) that refuses without the unit's NOPASSWD rule.
//!
//! What it cannot show: a real user account (uid 65534 has no passwd entry of its own name on
//! every system: `nobody`), PAM, sudoers syntax.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::TestUnit;

/// The uid and gid the sessions of an unprivileged unit run as.
pub const UNPRIVILEGED_UID: u32 = 65534;

/// The marker in the unit's folder that makes [`TestUnit::write_sshd_config`] drop privileges.
pub(super) const MARKER: &str = "unprivileged";

/// The `ForceCommand` of an unprivileged unit: the client's command, run by `sh` as 65534 from
/// `/` (its home, root's, is closed to it).
pub(super) fn force_command() -> String {
    format!(
        "ForceCommand cd / && exec setpriv --reuid={UNPRIVILEGED_UID} --regid={UNPRIVILEGED_UID} --clear-groups /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n"
    )
}

impl TestUnit {
    /// From now on this unit's SSH sessions run unprivileged; with `passwordless_sudo`, its
    /// `sudo -n` works (the rule a field engineer adds to /etc/sudoers.d), else it asks for a
    /// password. Restarts the unit's sshd; panics when this machine cannot do it (no `setpriv`,
    /// no `cc`, or a filesystem that ignores setuid bits).
    pub fn login_unprivileged(&self, passwordless_sudo: bool) {
        let rule = self.root.join("etc/trident-test/sudo-nopasswd");
        if passwordless_sudo {
            fs::write(&rule, "").unwrap();
        } else if rule.exists() {
            fs::remove_file(&rule).unwrap();
        }
        let sudo = self.root.join("bin/sudo");
        if !sudo.exists() {
            build_sudo(&self.root, &sudo);
        }
        open_the_way(&self.root);
        // The fake tools record their calls; an unprivileged caller must still be recorded.
        let logs = self.root.join("var/log");
        fs::set_permissions(&logs, fs::Permissions::from_mode(0o1777)).unwrap();
        for log in fs::read_dir(&logs).unwrap().flatten() {
            if log.file_name().to_string_lossy().starts_with("fake-") {
                fs::set_permissions(log.path(), fs::Permissions::from_mode(0o666)).unwrap();
            }
        }
        fs::write(self.dir.join(MARKER), "").unwrap();
        self.restart_sshd();
        let uid = self.ssh(&["id", "-u"]);
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            UNPRIVILEGED_UID.to_string(),
            "{}: the sessions did not drop to {UNPRIVILEGED_UID}: {}",
            self.name,
            String::from_utf8_lossy(&uid.stderr)
        );
        if passwordless_sudo {
            let root = self.ssh(&["sudo", "-n", "id", "-u"]);
            assert_eq!(
                String::from_utf8_lossy(&root.stdout).trim(),
                "0",
                "{}: the sudo stand-in did not become root (a nosuid filesystem?): {}",
                self.name,
                String::from_utf8_lossy(&root.stderr)
            );
        }
    }

    fn restart_sshd(&self) {
        let host_key = self.dir.join("../../ssh/host_ed25519");
        let authorized_keys = self.dir.join("../../ssh/authorized_keys");
        self.write_sshd_config(&host_key, &authorized_keys);
        self.stop_sshd(false);
        self.spawn_sshd();
        if let Err(log) = self.wait_ready() {
            panic!("sshd of {} did not start again: {log}", self.name);
        }
    }
}

/// Compiles the stand-in with the unit's root written in; setuid root.
fn build_sudo(root: &Path, out: &Path) {
    let source = crate::workspace_root().join("tests/standin/sudo/sudo.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(out)
        .arg(format!("-DUNIT_ROOT=\"{}\"", root.display()))
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} ({e}): a C compiler builds the sudo stand-in"));
    assert!(status.success(), "{cc} failed on {}", source.display());
    let chown = Command::new("chown").arg("0:0").arg(out).status().unwrap();
    assert!(chown.success(), "chown root {}", out.display());
    fs::set_permissions(out, fs::Permissions::from_mode(0o4755)).unwrap();
}

/// Lets other users reach `R` (search, not read) through the private folders the test made.
fn open_the_way(root: &Path) {
    let mut dir = Some(root);
    while let Some(d) = dir {
        let meta = fs::metadata(d).unwrap();
        let mode = meta.permissions().mode();
        if mode & 0o001 != 0 && d != root {
            break;
        }
        fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o111)).unwrap();
        dir = d.parent();
    }
}
