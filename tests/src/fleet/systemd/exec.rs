//! How the stand-in runs a command of the unit: the environment systemd builds, `$VAR` /
//! `${VAR}` expansion, the mapping of the unit's paths into `R`, the test overrides of the
//! runtime's hardware options, the faults, and the service's process group.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal};

use super::unit_file::UnitFile;

/// The unit's trees: a path below one of these is always the unit's (under `R`), whether or not
/// it exists there yet.
const UNIT_TREES: &[&str] = &[
    "/opt", "/etc", "/var", "/run", "/tmp", "/home", "/root", "/srv", "/mnt", "/media",
];

/// What every command of one test unit shares.
pub(crate) struct Ctx {
    /// The unit's root `R`.
    pub root: PathBuf,
    /// The fleet's name of the unit (`reef-01`): `TRIDENT_TEST_UNIT`.
    pub name: String,
    /// The datagram socket `NOTIFY_SOCKET` names.
    pub notify_socket: PathBuf,
}

impl Ctx {
    pub fn test_file(&self, name: &str) -> PathBuf {
        self.root.join("etc/trident-test").join(name)
    }

    pub fn fault(&self, name: &str) -> bool {
        self.test_file("faults").join(name).exists()
    }
}

/// An absolute path of the unit as a path on this machine: `R` + the path when it lies in one of
/// the unit's trees (`/opt`, `/etc`, `/var`, `/run`, `/tmp`, …) or exists under `R` (`/bin/systemctl`:
/// the fake), else the machine's own (`/bin/sh`, `/usr/bin/env`, `/dev/null`). A path already
/// under `R` is kept.
pub(crate) fn map_path(root: &Path, p: &str) -> String {
    let r = root.to_string_lossy();
    if !p.starts_with('/') || p.starts_with(&format!("{r}/")) || p == r {
        return p.to_string();
    }
    let mapped = root.join(p.trim_start_matches('/'));
    let in_tree = UNIT_TREES
        .iter()
        .any(|t| p == *t || p.starts_with(&format!("{t}/")));
    if in_tree || mapped.exists() {
        mapped.to_string_lossy().into_owned()
    } else {
        p.to_string()
    }
}

/// `Environment=` then `EnvironmentFile=` (read now, as systemd reads them at each start; their
/// values override `Environment=`'s), absolute-path values mapped into `R`. `Err`: a missing
/// file that is not optional (systemd: result `resources`).
pub(crate) fn unit_environment(
    ctx: &Ctx,
    unit: &UnitFile,
) -> Result<Vec<(String, String)>, String> {
    let mut env = unit.environment.clone();
    for (path, optional) in &unit.environment_files {
        let host = map_path(&ctx.root, path);
        let text = match fs::read_to_string(&host) {
            Ok(t) => t,
            Err(_) if *optional => continue,
            Err(e) => return Err(format!("Failed to load environment files: {path}: {e}")),
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("{path}: not an assignment: {line:?}"));
            };
            let (k, v) = (k.trim(), v.trim());
            let v = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
                .unwrap_or(v);
            env.retain(|(e, _)| e != k);
            env.push((k.to_string(), v.to_string()));
        }
    }
    for (_, v) in &mut env {
        *v = map_path(&ctx.root, v);
    }
    Ok(env)
}

/// The whole environment of a command, merged as systemd 237 does (later wins): the manager's
/// `PATH`, the service's `NOTIFY_SOCKET`/`WATCHDOG_USEC`/`INVOCATION_ID`, the unit's variables;
/// then the harness's markers (`TRIDENT_TEST_ROOT` finds every process of the unit at teardown).
pub(crate) fn full_environment(
    ctx: &Ctx,
    unit_env: &[(String, String)],
    invocation: &str,
    watchdog: Option<Duration>,
) -> Vec<(String, String)> {
    let r = ctx.root.display();
    let mut env = vec![
        (
            "PATH".into(),
            format!("{r}/bin:/usr/local/bin:/usr/bin:/bin"),
        ),
        (
            "NOTIFY_SOCKET".into(),
            ctx.notify_socket.display().to_string(),
        ),
        ("INVOCATION_ID".into(), invocation.to_string()),
    ];
    if let Some(w) = watchdog {
        env.push(("WATCHDOG_USEC".into(), w.as_micros().to_string()));
    }
    for (k, v) in unit_env.iter().cloned().chain([
        ("TRIDENT_TEST_ROOT".to_string(), r.to_string()),
        ("TRIDENT_TEST_UNIT".to_string(), ctx.name.clone()),
    ]) {
        env.retain(|(e, _)| *e != k);
        env.push((k, v));
    }
    env
}

/// systemd's expansion of an Exec line: `${VAR}` anywhere in a word (no splitting), a whole
/// word `$VAR` split at whitespace into words, `$$` a literal `$`; unset variables are empty.
/// `$VAR` inside a longer word is left as it is (systemd does not expand it either).
pub(crate) fn expand(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let get = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut out = Vec::new();
    for w in words {
        if let Some(name) = w.strip_prefix('$')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            out.extend(get(name).split_whitespace().map(String::from));
            continue;
        }
        let mut s = String::new();
        let mut rest = w.as_str();
        while let Some(i) = rest.find('$') {
            s.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("$$") {
                s.push('$');
                rest = r;
            } else if let Some((name, r)) = rest.strip_prefix("${").and_then(|r| r.split_once('}'))
            {
                s.push_str(get(name));
                rest = r;
            } else {
                s.push('$');
                rest = &rest[1..];
            }
        }
        s.push_str(rest);
        out.push(s);
    }
    out
}

/// A source that opens and plays but never delivers a frame: every buffer is dropped before the
/// runtime's appsink, so the runtime sends READY=1 and serves `/healthz` with 0 frames.
pub(crate) const NO_FRAMES_SOURCE: &str =
    "gst://videotestsrc is-live=true ! identity drop-probability=1.0";
/// The `unhealthy` faults' camera: the runtime cannot open it and exits with an error.
pub(crate) const UNPLUGGED_SOURCE: &str = "file:///nonexistent/camera-unplugged.avi";

/// The main process's command line (already expanded and mapped) with the faults and, for
/// `…/trident-edge run …` (the whole command or the tail a wrapper passes on), the test
/// hardware: the unit's camera as `--source`, its health port as `--http`, a small capture size
/// and a short staleness limit.
pub(crate) fn main_command(ctx: &Ctx, health_port: u16, mut argv: Vec<String>) -> Vec<String> {
    // Each service fault also comes per release (`<fault>-<release>`: only while `current` is
    // that release), to play a bad update whose rollback target is fine.
    let release = fs::read_link(ctx.root.join("opt/trident/current"))
        .ok()
        .and_then(|t| Some(t.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "none".into());
    let fault = |name: &str| ctx.fault(name) || ctx.fault(&format!("{name}-{release}"));
    if fault("start-fails") {
        return vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo 'trident-edge: injected fault start-fails: exiting before READY=1' >&2; exit 1"
                .into(),
        ];
    }
    // The runtime's command line: the whole command, or the arguments a wrapper
    // (`/bin/sh -c '…' /opt/…/trident-edge run …`) hands on.
    let Some(at) = (0..argv.len().saturating_sub(1)).find(|&i| {
        Path::new(&argv[i])
            .file_name()
            .is_some_and(|n| n == "trident-edge")
            && argv[i + 1] == "run"
    }) else {
        return argv;
    };
    let camera = fs::read_to_string(ctx.test_file("source"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let (source, looped) = if fault("unhealthy") {
        (UNPLUGGED_SOURCE.to_string(), false)
    } else if fault("no-frames") {
        (NO_FRAMES_SOURCE.to_string(), false)
    } else if !camera.is_empty() {
        (camera, true)
    } else {
        ("test://".to_string(), false)
    };
    let http = format!("127.0.0.1:{health_port}");
    let mut out: Vec<String> = argv.drain(..at).collect();
    let mut args = argv.drain(..).peekable();
    while let Some(a) = args.next() {
        if a == "--source" || a == "--http" {
            // `--source` takes several values (clap `num_args(1..)`): all give way to the camera.
            while args.peek().is_some_and(|v| !v.starts_with("--")) {
                args.next();
                if a == "--http" {
                    break;
                }
            }
            let value = if a == "--source" { &source } else { &http };
            out.extend([a, value.clone()]);
        } else if a.starts_with("--source=") {
            out.push(format!("--source={source}"));
        } else if a.starts_with("--http=") {
            out.push(format!("--http={http}"));
        } else {
            out.push(a);
        }
    }
    out.extend(["--width", "320", "--height", "240", "--stale-after", "10s"].map(String::from));
    if looped {
        out.push("--loop-files".into());
    }
    out
}

/// How a process ended, with systemd's codes for what failed before the program ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal { signal: i32, core: bool },
}

impl From<ExitStatus> for Exit {
    fn from(s: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(signal)) => Exit::Signal {
                signal,
                core: s.core_dumped(),
            },
            (None, None) => Exit::Code(255),
        }
    }
}

impl Exit {
    /// `code=exited, status=1/FAILURE` as `systemctl status` writes it.
    pub fn shown(&self) -> String {
        match *self {
            Exit::Code(c) => {
                let name = match c {
                    0 => "/SUCCESS",
                    1 => "/FAILURE",
                    200 => "/CHDIR",
                    203 => "/EXEC",
                    _ => "",
                };
                format!("code=exited, status={c}{name}")
            }
            Exit::Signal { signal, core } => format!(
                "code={}, signal={}",
                if core { "dumped" } else { "killed" },
                signal_name(signal)
            ),
        }
    }
}

pub(crate) fn signal_name(n: i32) -> String {
    let name = match n {
        1 => "HUP",
        2 => "INT",
        3 => "QUIT",
        6 => "ABRT",
        9 => "KILL",
        10 => "USR1",
        12 => "USR2",
        13 => "PIPE",
        15 => "TERM",
        _ => return n.to_string(),
    };
    name.into()
}

/// Starts `argv` as systemd would: clean environment, the mapped working directory, output
/// appended to the unit's log, its own process group. What systemd reports from the forked
/// child before exec (status 200/CHDIR, 203/EXEC) is played by a short `sh` that logs systemd's
/// line and exits with that status, so every failure reaches the manager as a process exit.
/// `watchdog_pid`: start through `sh -c 'export WATCHDOG_PID=$$; exec …'`, which keeps the pid
/// (systemd sets `WATCHDOG_PID` in the forked child; std cannot without `pre_exec`).
pub(crate) fn spawn(
    ctx: &Ctx,
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    watchdog_pid: bool,
) -> std::io::Result<Child> {
    let log_path = ctx.root.join("var/log/trident-edge.log");
    fs::create_dir_all(log_path.parent().unwrap())?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let executable =
        fs::metadata(&argv[0]).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let failure = if !cwd.is_dir() {
        Some((
            200,
            "CHDIR",
            format!(
                "Changing to the requested working directory failed: {}: No such file or directory",
                cwd.display()
            ),
        ))
    } else if !executable {
        Some((
            203,
            "EXEC",
            format!(
                "Failed to execute command: {}: No such file or directory",
                argv[0]
            ),
        ))
    } else {
        None
    };
    let mut cmd = match failure {
        Some((code, step, why)) => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "echo \"$1\" >&2; exit \"$2\"", "sh"])
                .arg(format!("trident-edge.service: {why}\ntrident-edge.service: Failed at step {step} spawning {}: No such file or directory", argv[0]))
                .arg(code.to_string())
                .current_dir(&ctx.root);
            c
        }
        None if watchdog_pid => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "export WATCHDOG_PID=$$; exec \"$0\" \"$@\""])
                .args(argv)
                .current_dir(cwd);
            c
        }
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]).current_dir(cwd);
            c
        }
    };
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
}

/// The process exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
    })
}

/// The service's "control group": live processes in one of its process groups, or whose
/// environment carries its `INVOCATION_ID` (so a child that left the process group with
/// `setsid` is still found, as a cgroup would keep it).
pub(crate) fn members(invocation: &str, pgids: &[u32]) -> Vec<u32> {
    let marker = format!("INVOCATION_ID={invocation}");
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != me)
        .filter(|&p| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            let mut f = stat
                .rsplit_once(')')
                .map(|(_, r)| r.split_whitespace())
                .into_iter()
                .flatten();
            let state = f.next().unwrap_or("Z");
            let pgid: u32 = f.nth(1).and_then(|g| g.parse().ok()).unwrap_or(0);
            if matches!(state, "Z" | "X" | "x") {
                return false;
            }
            pgids.contains(&pgid)
                || fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

pub(crate) fn kill(pids: impl IntoIterator<Item = u32>, sig: Signal) {
    for p in pids {
        if let Some(pid) = Pid::from_raw(p as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }
}

/// A fresh `INVOCATION_ID`: 32 hex digits, distinct per start.
pub(crate) fn invocation_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ N.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", next(), next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_lines_expand_like_systemd() {
        let env = vec![
            ("P".to_string(), "nano-5w".to_string()),
            ("ARGS".to_string(), "-a  -b".to_string()),
        ];
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            expand(
                &w(&["/x/${P}.yaml", "$ARGS", "a$P", "$$HOME", "${NOPE}"]),
                &env
            ),
            w(&["/x/nano-5w.yaml", "-a", "-b", "a$P", "$HOME", ""])
        );
    }

    #[test]
    fn unit_paths_map_into_the_root_and_system_paths_do_not() {
        let root = Path::new("/nowhere/R");
        assert_eq!(
            map_path(root, "/opt/trident/data"),
            "/nowhere/R/opt/trident/data"
        );
        assert_eq!(map_path(root, "/bin/sh"), "/bin/sh");
        assert_eq!(map_path(root, "/nowhere/R/opt"), "/nowhere/R/opt");
        assert_eq!(map_path(root, "info"), "info");
    }
}
