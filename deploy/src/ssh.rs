//! The transport: the system OpenSSH client.
//!
//! `ssh` honours `~/.ssh/config` (or the inventory's `ssh.config`), agents, jump hosts and
//! `known_hosts`; `StrictHostKeyChecking=yes` is forced on the command line (a `Host *` block of
//! the user's cannot turn it off) and `BatchMode` makes a missing key or an unknown host an
//! error instead of a prompt. A remote step is a constant script of this crate sent on stdin to
//! `sh -s`, its values passed as quoted positional parameters — nothing a unit name, path or
//! version holds can become shell syntax. The script is wrapped in a function called on its last
//! line with a count of its arguments, so a script cut short in transit does nothing.
//!
//! Every step that changes the unit runs as root: directly when the SSH user is root, else
//! through `sudo -n` (never a prompt; a user without passwordless sudo is refused at the first
//! step, and [`crate::unit_facts`] reports it before anything runs). Reading facts runs as the
//! SSH user.
//!
//! Uploads ([`Ssh::upload`], in [`crate::upload`]) go with `rsync` when both ends have it, else
//! as a resumable chunked copy over `ssh`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::quote::{is_host, quote_all};

pub use crate::upload::Upload;

/// How to reach units.
#[derive(Clone, Debug, Default)]
pub struct Ssh {
    /// `ssh -F FILE` instead of the user's configuration.
    pub config: Option<PathBuf>,
    /// How [`Ssh::upload`] moves files.
    pub transfer: Transfer,
    /// Connection sharing, when on ([`Ssh::share_connections`]).
    pub shared: Option<Arc<ControlDir>>,
}

/// The folder of OpenSSH control sockets (`ControlMaster`) of one trident command: the first
/// command to a unit opens a connection that the later ones reuse, so a push costs one key
/// exchange per unit instead of one per step (a dozen) — on a slow radio link and on a small
/// host running many pushes at once alike. Dropping it closes the shared connections.
#[derive(Debug)]
pub struct ControlDir {
    dir: tempfile::TempDir,
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for socket in entries.flatten() {
            // With a literal ControlPath, `-O exit` reaches that master whatever the host word.
            let _ = Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", socket.path().display()))
                .args(["-O", "exit", "trident-control"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// How [`Ssh::upload`] moves a file to a unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transfer {
    /// `rsync` when this machine and the unit both have rsync 3.1 or later (and the ssh config
    /// path can be handed to rsync's `-e`), else the chunked copy.
    #[default]
    Auto,
    /// `rsync` over the same `ssh` options; an error when either end lacks it.
    Rsync,
    /// The chunked copy: `ssh` + `sh` + coreutils on the unit, nothing else.
    Chunked,
}

/// What a remote script printed.
#[derive(Clone, Debug)]
pub struct Remote {
    pub stdout: String,
    pub stderr: String,
    pub status: Option<i32>,
}

impl Remote {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }
}

/// `ssh` exits 255 when the connection itself failed (refused, timed out, dropped, host key).
pub(crate) const SSH_CONNECTION_FAILED: i32 = 255;

/// The options of every connection, after `-F` and `-p`. No prompts; give up on an unanswering
/// host after 10 s and notice a dead link within ~15 s (a unit out of radio range must not stall
/// a rollout); no terminal. Plain words: [`Ssh::rsync_shell`] joins them with spaces.
pub(crate) const SSH_OPTIONS: [&str; 11] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
    "-T",
];

impl Ssh {
    /// Shares one connection per unit between this `Ssh`'s commands (and its clones') until the
    /// last of them is dropped.
    pub fn share_connections(mut self) -> Result<Self> {
        // A control socket's path must fit in sun_path (108 bytes): a short folder, `%C` (a
        // 40-character hash of host, port and user) inside it.
        let short = |dir: &std::path::Path| dir.as_os_str().len() <= 40;
        let base = std::env::temp_dir();
        let base = if short(&base) {
            base
        } else {
            PathBuf::from("/tmp")
        };
        let dir = tempfile::Builder::new()
            .prefix("trident-ssh-")
            .tempdir_in(&base)
            .map_err(|e| Error::Io {
                action: "cannot create a folder for SSH control sockets in",
                path: base.clone(),
                source: e,
            })?;
        self.shared = Some(Arc::new(ControlDir { dir }));
        Ok(self)
    }

    /// The `-o` options of every connection, after `-F` and `-p`: [`SSH_OPTIONS`], plus the
    /// connection sharing ones when on. Plain words (the control folder is ours).
    pub fn options(&self) -> Vec<String> {
        let mut words: Vec<String> = SSH_OPTIONS.iter().map(|w| w.to_string()).collect();
        if let Some(shared) = &self.shared {
            words.extend([
                "-o".into(),
                "ControlMaster=auto".into(),
                "-o".into(),
                format!("ControlPath={}/%C", shared.dir.path().display()),
                // Kept while the command runs; closed by ControlDir's drop, or after a minute
                // idle if this process is killed.
                "-o".into(),
                "ControlPersist=60".into(),
            ]);
        }
        words
    }

    /// `ssh [-F config] [-p port] -o … -- [user@]host`.
    pub fn command(&self, unit: &Unit) -> Command {
        debug_assert!(is_host(&unit.host));
        let mut c = Command::new("ssh");
        if let Some(config) = &self.config {
            c.arg("-F").arg(config);
        }
        if let Some(port) = unit.port {
            c.arg("-p").arg(port.to_string());
        }
        c.args(self.options());
        c.arg("--");
        match &unit.user {
            Some(user) => c.arg(format!("{user}@{}", unit.host)),
            None => c.arg(&unit.host),
        };
        c
    }

    /// Runs `script` on the unit as root (the SSH user, or `sudo -n`) with `args` as
    /// `$1 $2 …`; `step` names it in errors. A connection failure is an error; the script's own
    /// exit status is returned for the caller to judge.
    pub fn script(
        &self,
        unit: &Unit,
        step: &'static str,
        script: &str,
        args: &[&str],
    ) -> Result<Remote> {
        self.run_script(unit, step, script, args, true)
    }

    /// [`Ssh::script`] as the SSH user, without sudo: for reading what any user may read (the
    /// unit's facts, including whether this user may use sudo at all).
    pub fn script_as_login(
        &self,
        unit: &Unit,
        step: &'static str,
        script: &str,
        args: &[&str],
    ) -> Result<Remote> {
        self.run_script(unit, step, script, args, false)
    }

    fn run_script(
        &self,
        unit: &Unit,
        step: &'static str,
        script: &str,
        args: &[&str],
        as_root: bool,
    ) -> Result<Remote> {
        let mut c = self.command(unit);
        let shell = format!("sh -s -- {}", quote_all(args));
        c.arg(if as_root {
            format!("{AS_ROOT} {shell}")
        } else {
            shell
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| Error::remote(&unit.name, step, format!("cannot start ssh: {e}")))?;
        {
            let mut stdin = child.stdin.take().expect("piped");
            // A script is small; the remote shell reads it all before running.
            let _ = stdin.write_all(whole_or_nothing(script, args.len()).as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::remote(&unit.name, step, format!("ssh: {e}")))?;
        let remote = Remote {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status.code(),
        };
        if remote.status == Some(SSH_CONNECTION_FAILED) || remote.status.is_none() {
            return Err(Error::remote(
                &unit.name,
                step,
                format!(
                    "{}: {}",
                    crate::error::UNREACHABLE,
                    last_line(&remote.stderr).unwrap_or("connection failed")
                ),
            ));
        }
        Ok(remote)
    }

    /// Like [`Ssh::script`], but a non-zero exit is an error carrying the script's last
    /// stderr line.
    pub fn check(
        &self,
        unit: &Unit,
        step: &'static str,
        script: &str,
        args: &[&str],
    ) -> Result<String> {
        let r = self.script(unit, step, script, args)?;
        if r.ok() {
            Ok(r.stdout)
        } else {
            Err(Error::remote(
                &unit.name,
                step,
                last_line(&r.stderr)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("exit status {:?}", r.status)),
            ))
        }
    }
}

/// A remote command prefix that runs the rest of the command line as root: as it is when the
/// SSH user is root, else through `sudo -n` (which fails with "a password is required" instead
/// of prompting). One word for the remote shell, `sh -c '…' sh` followed by the command words.
pub(crate) const AS_ROOT: &str =
    r#"sh -c 'if [ "$(id -u)" = 0 ]; then exec "$@"; fi; exec sudo -n -- "$@"' sh"#;

/// Exit status of a script that arrived cut short (its last line, the call, is missing or has
/// lost arguments).
pub(crate) const TRUNCATED_EXIT: i32 = 97;

/// `script` as the body of a function that the last line calls with `$@`, first checking that
/// all `argc` arguments arrived: `sh -s` runs a script as it reads it, so without this a script
/// cut short in transit would run its first half. Cut anywhere, the function is never defined
/// (a syntax error), never called, or called with no arguments and refuses.
pub(crate) fn whole_or_nothing(script: &str, argc: usize) -> String {
    format!(
        "trident_step() {{\n[ \"$#\" -eq {argc} ] || {{ echo 'trident: this step arrived cut short; nothing was done' >&2; exit {TRUNCATED_EXIT}; }}\n{body}\n}}\ntrident_step \"$@\"\n",
        body = script.trim_end()
    )
}

/// The last non-empty line of a command's output.
pub(crate) fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cut of a wrapped script runs none of it; the whole one runs all of it.
    #[test]
    fn a_script_cut_short_does_nothing() {
        let script = "set -eu\necho first > \"$1/first\"\necho second > \"$1/second\"\n";
        let wrapped = whole_or_nothing(script, 1);
        let run = |text: &str| {
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new("sh")
                .args(["-s", "--"])
                .arg(dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let status = child.wait().unwrap();
            let made: Vec<bool> = ["first", "second"]
                .iter()
                .map(|f| dir.path().join(f).exists())
                .collect();
            (status, made)
        };
        let (status, made) = run(&wrapped);
        assert!(status.success());
        assert_eq!(made, [true, true]);
        for cut in 0..wrapped.len() - 1 {
            let (_, made) = run(&wrapped[..cut]);
            assert_eq!(made, [false, false], "cut at {cut}: {:?}", &wrapped[..cut]);
        }
        // Unwrapped, a cut after the first line runs it: what the wrapper prevents.
        let cut = script.find("echo second").unwrap();
        assert_eq!(run(&script[..cut]).1, [true, false]);
    }

    #[test]
    fn strict_host_key_checking_is_always_on() {
        let words = Ssh::default().options();
        let at = words
            .iter()
            .position(|w| w == "StrictHostKeyChecking=yes")
            .expect("forced");
        assert_eq!(words[at - 1], "-o");
    }
}
