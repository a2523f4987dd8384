//! The transport: the system OpenSSH client.
//!
//! `ssh` honours `~/.ssh/config` (or the inventory's `ssh.config`), agents, jump hosts and
//! `known_hosts`; host key checking stays on and `BatchMode` makes a missing key or an unknown
//! host an error instead of a prompt. A remote step is a constant script of this crate sent on
//! stdin to `sh -s`, its values passed as quoted positional parameters — nothing a unit name,
//! path or version holds can become shell syntax.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::quote::{is_host, quote_all};

/// How to reach units.
#[derive(Clone, Debug, Default)]
pub struct Ssh {
    /// `ssh -F FILE` instead of the user's configuration.
    pub config: Option<PathBuf>,
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
const SSH_CONNECTION_FAILED: i32 = 255;

impl Ssh {
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
        // No prompts; notice a dead link within ~15 s; never fall back to a shell the script
        // did not ask for.
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-T",
        ]);
        c.arg("--");
        match &unit.user {
            Some(user) => c.arg(format!("{user}@{}", unit.host)),
            None => c.arg(&unit.host),
        };
        c
    }

    /// Runs `script` on the unit with `args` as `$1 $2 …`; `step` names it in errors. A
    /// connection failure is an error; the script's own exit status is returned for the caller
    /// to judge.
    pub fn script(
        &self,
        unit: &Unit,
        step: &'static str,
        script: &str,
        args: &[&str],
    ) -> Result<Remote> {
        let mut c = self.command(unit);
        c.arg(format!("sh -s -- {}", quote_all(args)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| Error::remote(&unit.name, step, format!("cannot start ssh: {e}")))?;
        {
            let mut stdin = child.stdin.take().expect("piped");
            // A script is small; the remote shell reads it all before running.
            let _ = stdin.write_all(script.as_bytes());
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
                    "cannot reach the unit over SSH: {}",
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

    /// Copies `local` to `remote_path` on the unit, resuming a partial copy left by an earlier
    /// attempt: the part already there is kept when its SHA-256 matches the same prefix here.
    /// The file is written as `remote_path.part` and renamed once its whole SHA-256 matches.
    /// `progress(sent_so_far)` is called as bytes go out. `stop_after` (tests) drops the
    /// connection after that many bytes, as a failing link would.
    pub fn upload(
        &self,
        unit: &Unit,
        local: &Path,
        remote_path: &str,
        progress: &dyn Fn(u64),
        stop_after: Option<u64>,
    ) -> Result<Upload> {
        let total = std::fs::metadata(local)
            .map_err(|e| Error::Io {
                action: "cannot read",
                path: local.to_path_buf(),
                source: e,
            })?
            .len();
        let part = format!("{remote_path}.part");
        let have: u64 = self
            .check(unit, "upload", scripts::PART_SIZE, &[&part])?
            .trim()
            .parse()
            .unwrap_or(0);
        let mut offset = 0;
        if have > 0 && have <= total {
            let remote_sha = self.check(
                unit,
                "upload",
                scripts::PREFIX_SHA256,
                &[&part, &have.to_string()],
            )?;
            if remote_sha.trim() == prefix_sha256(local, have)? {
                offset = have;
            }
        }
        let mut file = std::fs::File::open(local).map_err(|e| Error::Io {
            action: "cannot read",
            path: local.to_path_buf(),
            source: e,
        })?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::Io {
            action: "cannot read",
            path: local.to_path_buf(),
            source: e,
        })?;
        let mut c = self.command(unit);
        // `sh -c SCRIPT sh PART OFFSET`: stdin carries the data, so the script rides on the
        // command line, its values as positional parameters.
        c.arg(format!(
            "sh -c {} sh {}",
            crate::quote::quote(scripts::APPEND_FROM),
            quote_all(&[part.as_str(), &offset.to_string()])
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| Error::remote(&unit.name, "upload", format!("cannot start ssh: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut sent = offset;
        let mut buf = vec![0u8; 1 << 16];
        let mut dropped = false;
        loop {
            let n = file.read(&mut buf).map_err(|e| Error::Io {
                action: "cannot read",
                path: local.to_path_buf(),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            let n = match stop_after {
                Some(limit) if sent - offset + n as u64 >= limit => {
                    dropped = true;
                    (limit.saturating_sub(sent - offset)) as usize
                }
                _ => n,
            };
            if stdin.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
            progress(sent);
            if dropped {
                let _ = stdin.flush();
                // What a cut link looks like to both ends: the client dies mid-stream.
                std::thread::sleep(std::time::Duration::from_millis(200));
                let _ = child.kill();
                break;
            }
        }
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| Error::remote(&unit.name, "upload", format!("ssh: {e}")))?;
        if dropped || !out.status.success() {
            return Err(Error::remote(
                &unit.name,
                "upload",
                format!(
                    "the connection dropped after {sent} of {total} bytes ({}); the next push resumes",
                    last_line(&String::from_utf8_lossy(&out.stderr)).unwrap_or("killed")
                ),
            ));
        }
        let want = prefix_sha256(local, total)?;
        let got = self.check(
            unit,
            "upload",
            scripts::FINISH,
            &[&part, remote_path, &want],
        )?;
        if got.trim() != "ok" {
            return Err(Error::remote(&unit.name, "upload", got.trim().to_string()));
        }
        Ok(Upload {
            resumed_from: offset,
            sent: sent - offset,
            total,
        })
    }
}

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Bytes already on the unit from an earlier attempt, kept.
    pub resumed_from: u64,
    /// Bytes sent this time.
    pub sent: u64,
    pub total: u64,
}

/// SHA-256 of the first `len` bytes of a file, hex.
fn prefix_sha256(path: &Path, len: u64) -> Result<String> {
    let io = |e| Error::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    trident_core::digest::sha256_reader(file.take(len)).map_err(io)
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// The remote side of an upload (POSIX sh + coreutils, as on JetPack's Ubuntu 18.04).
mod scripts {
    /// `$1`: part file. Prints its size, 0 when absent.
    pub const PART_SIZE: &str = r#"set -eu
if [ -f "$1" ]; then wc -c < "$1"; else echo 0; fi
"#;
    /// `$1`: part file, `$2`: bytes. Prints the SHA-256 of its first `$2` bytes.
    pub const PREFIX_SHA256: &str = r#"set -eu
head -c "$2" "$1" | sha256sum | cut -d' ' -f1
"#;
    /// `sh -c` with `$1` part file and `$2` offset: truncates the part to the offset (a
    /// mismatching prefix restarts from 0), then appends stdin.
    pub const APPEND_FROM: &str = r#"set -eu; part="$1"; off="$2"; mkdir -p "$(dirname "$part")"; if [ "$off" = 0 ]; then : > "$part"; else truncate -s "$off" "$part"; fi; cat >> "$part""#;
    /// `$1` part, `$2` final path, `$3` expected SHA-256: rename when it matches, else remove
    /// the part (it cannot be resumed into the right file) and say so.
    pub const FINISH: &str = r#"set -eu
got=$(sha256sum "$1" | cut -d' ' -f1)
if [ "$got" = "$3" ]; then mv -f "$1" "$2"; echo ok
else rm -f "$1"; echo "the uploaded file's sha256 $got differs from $3: corrupted in transit, removed"; fi
"#;
}
