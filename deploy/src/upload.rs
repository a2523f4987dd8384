//! Uploads to a unit: `rsync` when both ends have it, else a resumable chunked copy over `ssh`;
//! either way into the same `<path>.part`, checked by SHA-256 before it is renamed, so a part
//! left by either way is resumed by either way.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::quote::quote_all;
use crate::ssh::{Ssh, Transfer, last_line};

/// The oldest rsync used at either end: `--info=progress2` is 3.1.0 (2013), `-s` and
/// `--append-verify` 3.0.0; JetPack 4.6 (Ubuntu 18.04) has 3.1.2.
const RSYNC_MIN: Version = (3, 1, 0);

/// `(major, minor, patch)`.
type Version = (u32, u32, u32);

impl Ssh {
    /// Copies `local` to `remote_path` on the unit, resuming a partial copy left by an earlier
    /// attempt. The file is written as `remote_path.part` and renamed once its whole SHA-256
    /// matches the local one. `progress(bytes_on_the_unit)` is called as bytes go out (at least
    /// at the start and the end). `stop_after` (tests) drops the connection after that many
    /// bytes, as a failing link would.
    ///
    /// [`Ssh::transfer`] picks the way ([`Upload::via`] says which one was taken):
    /// - rsync (`--append-verify`): appends to the part and checks the whole file's checksum,
    ///   sending again what differs when the part was not a prefix of the file;
    /// - the chunked copy: the part is kept when its SHA-256 matches the same prefix here, else
    ///   started over; the rest goes through `ssh` into `cat >>`.
    ///
    /// Both write the same part, so a part left by either one is resumed by either one.
    /// `stop_after` always takes the chunked copy: it cuts the byte stream this process writes
    /// into `ssh`, and rsync's stream is rsync's own, with no place to cut it after N bytes of
    /// the file.
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
        // One round trip: the part's size (a part longer than the file is removed: it cannot be
        // a prefix of it) and the unit's rsync, if any.
        let probe = self.check(unit, "upload", scripts::PROBE, &[&part, &total.to_string()])?;
        let mut lines = probe.lines();
        let have: u64 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        let remote_rsync = lines.next().map(str::trim).unwrap_or("");
        let job = Job {
            unit,
            local,
            remote_path,
            part: &part,
            have: have.min(total),
            total,
            progress,
        };
        if stop_after.is_some() || self.transfer == Transfer::Chunked {
            return self.upload_chunked(&job, stop_after);
        }
        match self.rsync_usable(unit, remote_rsync) {
            Ok(shell) => self.upload_rsync(&job, &shell),
            Err(why) if self.transfer == Transfer::Rsync => {
                Err(Error::remote(&unit.name, "upload", why))
            }
            Err(why) => {
                tracing::debug!(unit = %unit.name, "uploading without rsync: {why}");
                self.upload_chunked(&job, None)
            }
        }
    }

    /// The `-e` command for rsync when both ends have a recent enough rsync, else why not.
    fn rsync_usable(&self, unit: &Unit, remote_version: &str) -> Result<String, String> {
        let Some(local) = local_rsync() else {
            return Err("rsync is not installed locally".into());
        };
        if rsync_version(local).is_none_or(|v| v < RSYNC_MIN) {
            return Err(format!(
                "the local rsync is too old (rsync 3.1 or later is needed): {local}"
            ));
        }
        if remote_version.is_empty() {
            return Err("rsync is not installed on the unit".into());
        }
        if rsync_version(remote_version).is_none_or(|v| v < RSYNC_MIN) {
            return Err(format!(
                "the unit's rsync is too old (rsync 3.1 or later is needed): {remote_version}"
            ));
        }
        self.rsync_shell(unit)
    }

    /// `ssh [-F 'config'] [-p port] -o … -T` as one `rsync -e` string: the options of
    /// [`Ssh::command`]. rsync splits it on spaces and honours quotes, but not backslashes, so
    /// the config path is single-quoted and refused (`Err`) when it holds whitespace, quotes,
    /// backslashes, control characters or is not UTF-8. rsync appends `[-l user] host` and the
    /// remote command.
    fn rsync_shell(&self, unit: &Unit) -> Result<String, String> {
        let mut words = vec!["ssh".to_string()];
        if let Some(config) = &self.config {
            let text = config
                .to_str()
                .filter(|t| {
                    !t.is_empty()
                        && !t.chars().any(|c| {
                            c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '\\')
                        })
                })
                .ok_or_else(|| {
                    format!(
                        "the ssh config path {} cannot be passed to rsync's -e (whitespace, quotes or backslashes)",
                        config.display()
                    )
                })?;
            words.push("-F".into());
            words.push(format!("'{text}'"));
        }
        if let Some(port) = unit.port {
            words.push("-p".into());
            words.push(port.to_string());
        }
        words.extend(self.options());
        Ok(words.join(" "))
    }

    /// The rsync way: `--append-verify` into the part, then the same SHA-256 check and rename
    /// as the chunked copy.
    fn upload_rsync(&self, job: &Job, shell: &str) -> Result<Upload> {
        let Job {
            unit, local, total, ..
        } = *job;
        let rsync_failed = |message: String| Error::remote(&unit.name, "upload", message);
        let want = prefix_sha256(local, total)?;
        let mut have = job.have;
        if have > 0 && have == total {
            // rsync skips a destination that is not shorter than the source: a whole part is
            // either the file (renamed now) or not (FINISH removes it; sent again below).
            match self.finish(job, &want)? {
                None => {
                    (job.progress)(total);
                    return Ok(Upload {
                        resumed_from: total,
                        sent: 0,
                        total,
                        via: Transfer::Rsync,
                    });
                }
                Some(why) => {
                    tracing::debug!(unit = %unit.name, "the whole part left on the unit is not the file, sending it again: {why}");
                    have = 0;
                }
            }
        }
        (job.progress)(have);
        // An absolute source: rsync would take `a:b` for a remote path.
        let source = std::path::absolute(local).map_err(|e| Error::Io {
            action: "cannot read",
            path: local.to_path_buf(),
            source: e,
        })?;
        // The host is `is_host` (no `/`, no leading `-`); an IPv6 address goes in brackets.
        let host = if unit.host.contains(':') {
            format!("[{}]", unit.host)
        } else {
            unit.host.clone()
        };
        let dest = match &unit.user {
            Some(user) => format!("{user}@{host}:{}", job.part),
            None => format!("{host}:{}", job.part),
        };
        let mut c = Command::new("rsync");
        c.args([
            // The remote path travels in rsync's protocol, not through the unit's shell.
            "-s",
            // Append to the part in place; verify the whole file's checksum (kept data
            // included) and, when it differs, send the file again as a delta against the part.
            "--inplace",
            "--append-verify",
            // Keep what arrived when the transfer is cut (`--inplace` alone does too).
            "--partial",
            // Numbers as plain digits: progress lines and the stats are parsed below.
            "--no-human-readable",
            "--info=progress2",
            "--stats",
            "-e",
            shell,
        ])
        // The unit's rsync writes into root's /opt/trident: as root, or through `sudo -n`.
        .arg(format!("--rsync-path={} rsync", crate::ssh::AS_ROOT))
        .arg(&source)
        .arg(&dest)
        // With `--partial` it would move the part into a folder of its own.
        .env_remove("RSYNC_PARTIAL_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| rsync_failed(format!("cannot start rsync: {e}")))?;
        let mut stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut stats = RsyncStats::default();
        let mut shown = have;
        {
            let mut stdout = child.stdout.take().expect("piped");
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            // Progress lines end in `\r`, the stats in `\n`.
            loop {
                let n = match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                for &b in &buf[..n] {
                    if b == b'\r' || b == b'\n' {
                        if let Some(at) = stats.line(&String::from_utf8_lossy(&line))
                            && at.min(total) > shown
                        {
                            shown = at.min(total);
                            (job.progress)(shown);
                        }
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| rsync_failed(format!("rsync: {e}")))?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            // rsync ends with `rsync error: … (code N)`, after `connection unexpectedly
            // closed` when the other end went away; the cause (ssh's or the unit's message)
            // comes before them.
            let lines: Vec<&str> = errors
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let cause = [
                |l: &str| {
                    !l.starts_with("rsync error:") && !l.contains("connection unexpectedly closed")
                },
                |l: &str| !l.starts_with("rsync error:"),
                |_: &str| true,
            ]
            .iter()
            .find_map(|keep| lines.iter().rev().find(|l| keep(l)))
            .copied()
            .unwrap_or("no message");
            return Err(rsync_failed(format!(
                "rsync failed ({status}): {cause}; the next push resumes"
            )));
        }
        if let Some(why) = self.finish(job, &want)? {
            return Err(rsync_failed(why));
        }
        if shown < total {
            (job.progress)(total);
        }
        // A second transfer of the file: the part was not a prefix of it and was corrected
        // (nothing of it kept as it was).
        let resumed_from = if stats.transfers.is_some_and(|t| t > 1) {
            0
        } else {
            have
        };
        Ok(Upload {
            resumed_from,
            sent: stats.literal.unwrap_or(total - resumed_from),
            total,
            via: Transfer::Rsync,
        })
    }

    /// The chunked way: keep the part when its SHA-256 matches the same prefix here (else start
    /// over), append the rest through `ssh` into `cat >>`, then check and rename.
    fn upload_chunked(&self, job: &Job, stop_after: Option<u64>) -> Result<Upload> {
        let Job {
            unit,
            local,
            total,
            have,
            ..
        } = *job;
        let part = job.part;
        let mut offset = 0;
        if have > 0 && have <= total {
            let remote_sha = self.check(
                unit,
                "upload",
                scripts::PREFIX_SHA256,
                &[part, &have.to_string()],
            )?;
            if remote_sha.trim() == prefix_sha256(local, have)? {
                offset = have;
            }
        }
        (job.progress)(offset);
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
            "{} sh -c {} sh {}",
            crate::ssh::AS_ROOT,
            crate::quote::quote(scripts::APPEND_FROM),
            quote_all(&[part, &offset.to_string()])
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
            (job.progress)(sent);
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
        if let Some(why) = self.finish(job, &want)? {
            return Err(Error::remote(&unit.name, "upload", why));
        }
        Ok(Upload {
            resumed_from: offset,
            sent: sent - offset,
            total,
            via: Transfer::Chunked,
        })
    }

    /// Renames the part into place when its SHA-256 is `want`; else it is removed and the
    /// reason returned.
    fn finish(&self, job: &Job, want: &str) -> Result<Option<String>> {
        let got = self.check(
            job.unit,
            "upload",
            scripts::FINISH,
            &[job.part, job.remote_path, want],
        )?;
        let got = got.trim();
        Ok((got != "ok").then(|| got.to_string()))
    }
}

/// One upload's inputs, for its two ways.
struct Job<'a> {
    unit: &'a Unit,
    local: &'a Path,
    remote_path: &'a str,
    part: &'a str,
    /// Bytes of the part on the unit before this upload (at most `total`).
    have: u64,
    total: u64,
    progress: &'a dyn Fn(u64),
}

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Bytes already on the unit from an earlier attempt, kept.
    pub resumed_from: u64,
    /// Bytes of the file sent this time. With rsync, the literal data of its stats: after a part
    /// that failed verification, what its second pass had to send on top of the first.
    pub sent: u64,
    pub total: u64,
    /// The way it went: [`Transfer::Rsync`] or [`Transfer::Chunked`].
    pub via: Transfer,
}

/// What rsync's stdout said (`--info=progress2 --stats --no-human-readable`).
#[derive(Default)]
struct RsyncStats {
    /// `Literal data: N bytes`: bytes of the file sent (not matched on the unit).
    literal: Option<u64>,
    /// `Number of regular files transferred: N`: 2 when the first pass failed verification.
    transfers: Option<u64>,
}

impl RsyncStats {
    /// Takes one line; returns the bytes a progress line says the unit has (the existing part
    /// included; a second pass counts on past the file's size).
    fn line(&mut self, line: &str) -> Option<u64> {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Literal data:") {
            self.literal = leading_number(rest);
        } else if let Some(rest) = line.strip_prefix("Number of regular files transferred:") {
            self.transfers = leading_number(rest);
        } else {
            // `   3145728  100%   95.12MB/s    0:00:00 (xfr#1, to-chk=0/1)`
            let mut words = line.split_whitespace();
            let bytes = words.next()?;
            if words.next()?.ends_with('%') {
                return leading_number(bytes);
            }
        }
        None
    }
}

/// The first word as a number, digit-group commas allowed.
fn leading_number(text: &str) -> Option<u64> {
    let word = text.split_whitespace().next()?;
    if !word.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    word.chars()
        .filter(|&c| c != ',')
        .collect::<String>()
        .parse()
        .ok()
}

/// The first line of `rsync --version` on this machine; `None` when it cannot be run. Asked
/// once per process.
fn local_rsync() -> Option<&'static str> {
    static LOCAL: OnceLock<Option<String>> = OnceLock::new();
    LOCAL
        .get_or_init(|| {
            let out = Command::new("rsync")
                .arg("--version")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next()?.trim();
            (out.status.success() && !first.is_empty()).then(|| first.to_string())
        })
        .as_deref()
}

/// The version in `rsync  version 3.1.2  protocol version 31` (Samba's rsync only: openrsync
/// and others do not take the same options).
fn rsync_version(line: &str) -> Option<Version> {
    let mut words = line.split_whitespace();
    if words.next()? != "rsync" || words.next()? != "version" {
        return None;
    }
    let mut parts = words.next()?.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    Some((
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    ))
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

/// The remote side of an upload (POSIX sh + coreutils, as on JetPack's Ubuntu 18.04).
mod scripts {
    /// `$1`: part file, `$2`: the file's size. Creates the part's folder, removes a part longer
    /// than `$2`, prints the part's size (0 when absent) and, on a second line, the first line
    /// of `rsync --version` when rsync is on the `PATH` (the one `rsync -e ssh` runs).
    pub const PROBE: &str = r#"set -eu
mkdir -p "$(dirname "$1")"
size=0
if [ -f "$1" ]; then size=$(wc -c < "$1" | tr -d ' '); fi
if [ "$size" -gt "$2" ]; then rm -f "$1"; size=0; fi
echo "$size"
if command -v rsync > /dev/null 2>&1; then rsync --version 2> /dev/null | head -n 1 || true; fi
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_versions_are_read_from_its_first_line() {
        assert_eq!(
            rsync_version("rsync  version 3.1.2  protocol version 31"),
            Some((3, 1, 2))
        );
        assert_eq!(
            rsync_version("rsync  version v3.2.7dev  protocol version 31"),
            None
        );
        assert_eq!(
            rsync_version("rsync  version 3.2.7dev  protocol version 31"),
            Some((3, 2, 7))
        );
        assert_eq!(rsync_version("openrsync: protocol version 29"), None);
        assert_eq!(rsync_version(""), None);
    }

    #[test]
    fn progress_and_stats_lines_are_parsed() {
        let mut s = RsyncStats::default();
        assert_eq!(
            s.line("        1048576  33%   95.12MB/s    0:00:00  "),
            Some(1_048_576)
        );
        assert_eq!(
            s.line("      3,145,728 100%   95.12MB/s    0:00:00 (xfr#1, to-chk=0/1)"),
            Some(3_145_728)
        );
        assert_eq!(s.line("Literal data: 2000000 bytes"), None);
        assert_eq!(s.line("Number of regular files transferred: 2"), None);
        assert_eq!(s.line("Total bytes sent: 2000569"), None);
        assert_eq!(s.line("sent 2000569 bytes  received 35 bytes"), None);
        assert_eq!((s.literal, s.transfers), (Some(2_000_000), Some(2)));
    }

    #[test]
    fn the_rsync_shell_carries_the_ssh_options() {
        let unit = Unit {
            name: "reef-01".into(),
            host: "reef-01".into(),
            port: Some(2222),
            user: None,
            tags: vec![],
            power_mode: crate::inventory::PowerMode::Maxn,
            root: "/".into(),
            health_addr: ([127, 0, 0, 1], 8080).into(),
        };
        let ssh = Ssh {
            config: Some("/etc/trident/ssh_config".into()),
            ..Default::default()
        };
        assert_eq!(
            ssh.rsync_shell(&unit).unwrap(),
            "ssh -F '/etc/trident/ssh_config' -p 2222 -o BatchMode=yes \
             -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -T"
        );
        for bad in ["/a b/config", "/it's", "/a\"b", "/a\\b", "/a\tb", ""] {
            let ssh = Ssh {
                config: Some(bad.into()),
                ..Default::default()
            };
            assert!(ssh.rsync_shell(&unit).is_err(), "{bad:?}");
        }
    }
}
