//! The fleet harness (`trident_e2e::fleet`) itself: real sshd per fake Nano unit on loopback, the
//! remote root prefix, the fake system tools, the systemd stand-in and the service it runs (the
//! host's real `trident-edge` from a real package, under the repository's unit file), unit
//! outages and teardown.
//!
//! These tests fail (they do not skip) where OpenSSH is missing: `cargo xtask setup` installs
//! openssh-server. The first test that needs a release builds a package for this machine
//! (tens of seconds) and keeps it in cargo's test scratch folder for the next runs.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use trident_e2e::fleet::{TestFleet, TestUnit};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "remote command failed ({}): {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next());
        !matches!(state, Some(Some('Z' | 'X' | 'x')) | None)
    })
}

/// Generous: these waits must hold on a machine twice as slow as the one they were written on.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `systemctl ARGS…` on the unit over SSH. With `DEBUG_FLEET` set, a failing call prints the
/// unit's manager log and service log (the fleet's folder is gone once the test ends).
fn systemctl(unit: &TestUnit, args: &[&str]) -> Output {
    let mut v = vec!["systemctl"];
    v.extend_from_slice(args);
    let out = unit.ssh(&v);
    if std::env::var_os("DEBUG_FLEET").is_some() && !out.status.success() {
        eprintln!(
            "DEBUG {args:?} failed:\n{}\n--- manager\n{}\n--- service\n{}",
            stderr(&out),
            manager_log(unit),
            fs::read_to_string(unit.path("/var/log/trident-edge.log")).unwrap_or_default()
        );
    }
    out
}

/// `systemctl show -p NAME --value trident-edge`.
fn prop(unit: &TestUnit, name: &str) -> String {
    ok(systemctl(
        unit,
        &["show", "-p", name, "--value", "trident-edge"],
    ))
    .trim()
    .to_string()
}

/// `(stdout, exit status)` of `systemctl is-active trident-edge`.
fn is_active(unit: &TestUnit) -> (String, Option<i32>) {
    let out = systemctl(unit, &["is-active", "trident-edge"]);
    (stdout(&out).trim().to_string(), out.status.code())
}

const JOB_FAILED: &str = "Job for trident-edge.service failed because the control process exited with error code.\nSee \"systemctl status trident-edge.service\" and \"journalctl -xe\" for details.\n";

/// A package for this machine (the host's `trident-edge`, fixture models, the repository's
/// profiles), unsigned. Building one takes tens of seconds (most of it compressing the debug
/// runtime), so it is built once and kept in cargo's test scratch folder, keyed by what goes
/// into it; a stale one is replaced.
fn host_package() -> PathBuf {
    static PACKAGE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut cached = PACKAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cached.as_ref() {
        return p.clone();
    }
    let root = trident_e2e::workspace_root();
    let runtime = trident_e2e::host_runtime();
    let meta = fs::metadata(&runtime).unwrap();
    let mut key = format!("{}-{:?}", meta.len(), meta.modified().unwrap());
    for input in [
        "configs/profiles/nano-10w.yaml",
        "configs/profiles/nano-5w.yaml",
        "deploy/systemd/trident-edge.service",
        "tests/fixtures/ultralytics-yolov8t-96.onnx",
    ] {
        key.push_str(&fs::read_to_string(root.join(input)).unwrap_or_else(|_| {
            trident_core::digest::sha256_hex(&fs::read(root.join(input)).unwrap())
        }));
    }
    let key = trident_core::digest::sha256_hex(key.as_bytes())[..16].to_string();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet-harness-package");
    let dir = cache.join(&key);
    let find = |d: &Path| -> Option<PathBuf> {
        fs::read_dir(d.join("dist"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
    };
    if find(&dir).is_none() {
        // Packages of other inputs are stale (a build under way elsewhere is left alone).
        for old in fs::read_dir(&cache).into_iter().flatten().flatten() {
            if !old.file_name().to_string_lossy().contains(".building-") {
                let _ = fs::remove_dir_all(old.path());
            }
        }
        let scratch = cache.join(format!("{key}.building-{}", std::process::id()));
        fs::create_dir_all(&scratch).unwrap();
        let config = trident_e2e::host_release_inputs(&scratch.join("inputs"));
        let release = trident_exporter::release::ReleaseConfig::load(&config).unwrap();
        let models = release.models.dir.clone().unwrap();
        trident_exporter::package::build_package(
            &trident_exporter::package::PackageRequest {
                config: &release,
                models_dir: &models,
                version: "1.0.0",
                git_revision: None,
                signer: None,
                // Thrown away after the test: fast to compress.
                zstd_level: 3,
            },
            &scratch.join("dist"),
        )
        .unwrap();
        // Another test process may have won the race; either package will do.
        if fs::rename(&scratch, &dir).is_err() {
            let _ = fs::remove_dir_all(&scratch);
        }
    }
    let p = find(&dir).expect("the package was just built");
    *cached = Some(p.clone());
    p
}

/// Release 1.0.0 as `trident deploy` leaves it: [`host_package`] installed under
/// `R/opt/trident/releases/1.0.0`, `current` pointing at it, the repository's unit file with
/// `unit.env`, the data and engine folders, and `systemctl daemon-reload`.
fn install_release(unit: &TestUnit) {
    let version = "1.0.0";
    let dest = unit.path(&format!("/opt/trident/releases/{version}"));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    trident_package::verify::verify_package(
        &host_package(),
        &trident_package::verify::VerifyOptions {
            allow_unsigned: true,
            ..Default::default()
        },
        Some(&dest),
    )
    .unwrap();
    let current = unit.path("/opt/trident/current");
    let _ = fs::remove_file(&current);
    symlink(format!("releases/{version}"), current).unwrap();
    for d in ["/opt/trident/data", "/opt/trident/engines"] {
        fs::create_dir_all(unit.path(d)).unwrap();
    }
    fs::write(
        unit.path("/opt/trident/unit.env"),
        "TRIDENT_PROFILE=nano-10w\n",
    )
    .unwrap();
    let repo_unit = trident_e2e::workspace_root().join("deploy/systemd/trident-edge.service");
    fs::copy(repo_unit, unit_file(unit)).unwrap();
    ok(systemctl(unit, &["daemon-reload"]));
}

fn unit_file(unit: &TestUnit) -> PathBuf {
    unit.path("/etc/systemd/system/trident-edge.service")
}

/// Writes the drop-in `trident-edge.service.d/<name>.conf` (the caller reloads).
fn drop_in(unit: &TestUnit, name: &str, text: &str) {
    let dir = unit.path("/etc/systemd/system/trident-edge.service.d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("{name}.conf")), text).unwrap();
}

/// The unit's `ExecStart=` with the runtime wrapped in `sh -c SCRIPT` (`$$` is systemd's
/// escape for `$`): the runtime keeps the unit's arguments.
fn wrapped_exec_start(script: &str) -> String {
    let text = fs::read_to_string(
        trident_e2e::workspace_root().join("deploy/systemd/trident-edge.service"),
    )
    .unwrap();
    let start = text.find("ExecStart=").unwrap();
    let end = text[start..].find("\nWatchdogSec").unwrap() + start;
    let line = text[start + "ExecStart=".len()..end].to_string();
    format!("ExecStart=\nExecStart=/bin/sh -c '{script}' {line}\n")
}

fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn environ(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The fake systemd's log of the unit (transitions, decisions).
fn manager_log(unit: &TestUnit) -> String {
    fs::read_to_string(unit.path("/var/log/fake-systemd.log")).unwrap_or_default()
}

/// `GET /healthz` on the unit's health port: `(status code, body)`.
fn healthz(unit: &TestUnit) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", unit.health_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: unit\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

#[test]
fn units_are_reached_over_ssh_with_their_root_on_path_and_host_keys_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(tmp.path(), &["reef-01", "reef-02"]);
    assert_eq!(fleet.units().len(), 2);
    assert_ne!(fleet.unit("reef-01").port, fleet.unit("reef-02").port);

    for unit in fleet.units() {
        assert_ne!(unit.health_port, unit.port);
        let out =
            ok(unit.ssh(&["echo $TRIDENT_TEST_UNIT; command -v systemctl; id -u; echo $PATH"]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                unit.name.as_str(),
                unit.root.join("bin/systemctl").to_str().unwrap(),
                "0",
                &format!("{}/bin:/usr/local/bin:/usr/bin:/bin", unit.root.display()),
            ],
            "{}",
            unit.name
        );
    }

    // The remote exit status comes back.
    let out = fleet.unit("reef-02").ssh(&["exit 7"]);
    assert_eq!(out.status.code(), Some(7));

    let unit = fleet.unit("reef-01");
    let ssh = |extra: &[&str]| {
        Command::new("ssh")
            .arg("-F")
            .arg(fleet.ssh_config())
            .args(extra)
            .args(["reef-01", "true"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // A known_hosts entry with another key (the client's): refused, host keys are checked.
    let wrong = tmp.path().join("wrong_known_hosts");
    let client_pub = fs::read_to_string(fleet.client_key().with_extension("pub")).unwrap();
    let client_pub: Vec<&str> = client_pub.split_whitespace().take(2).collect();
    fs::write(
        &wrong,
        format!("[127.0.0.1]:{} {}\n", unit.port, client_pub.join(" ")),
    )
    .unwrap();
    let opt = format!("UserKnownHostsFile={}", wrong.display());
    let out = ssh(&["-o", &opt]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");
    // No entry at all: refused too (StrictHostKeyChecking yes, BatchMode).
    let empty = tmp.path().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let opt = format!("UserKnownHostsFile={}", empty.display());
    assert!(!ssh(&["-o", &opt]).status.success());
    // A port where no unit listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(!ssh(&["-p", &closed.to_string()]).status.success());
    assert!(ssh(&[]).status.success());

    // Files go up with rsync over the same config and land under R.
    let src = tmp.path().join("upload");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("bin/payload"), "payload\n").unwrap();
    let dest = unit.path("/opt/trident/releases/9.9.9");
    let status = Command::new("rsync")
        .args(["-a", "--mkpath", "-e"])
        .arg(format!("ssh -F {}", fleet.ssh_config().display()))
        .arg(format!("{}/", src.display()))
        .arg(format!("reef-01:{}/", dest.display()))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(dest.join("bin/payload")).unwrap(),
        "payload\n"
    );
    // And with sftp (the internal-sftp subsystem).
    let out = Command::new("sftp")
        .arg("-F")
        .arg(fleet.ssh_config())
        .arg("-b")
        .arg("-")
        .arg("reef-02")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let r2 = fleet.unit("reef-02").root.display().to_string();
            writeln!(
                c.stdin.take().unwrap(),
                "put {} {r2}/tmp/via-sftp",
                src.join("bin/payload").display()
            )?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fleet.unit("reef-02").path("/tmp/via-sftp").is_file());
}

#[test]
fn fake_tools_record_their_calls_and_play_a_nano() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(tmp.path(), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    let r = unit.root.display().to_string();

    // nvpmodel: MAXN out of the box, then 5W.
    assert_eq!(
        ok(unit.ssh(&["nvpmodel", "-q"])),
        "NV Power Mode: MAXN\n0\n"
    );
    ok(unit.ssh(&["nvpmodel", "-m", "1"]));
    assert_eq!(ok(unit.ssh(&["nvpmodel", "-q"])), "NV Power Mode: 5W\n1\n");
    assert!(!unit.ssh(&["nvpmodel", "-m", "7"]).status.success());
    assert_eq!(
        fs::read_to_string(unit.path("/var/lib/nvpmodel/status")).unwrap(),
        "1\n"
    );
    assert_eq!(unit.calls("nvpmodel"), ["-q", "-m 1", "-q", "-m 7"]);

    // df -Pk: 10 GiB by default, then what the test says; a missing path fails like df.
    let avail = |out: &str| -> u64 {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("Filesystem"), "{out}");
        let f: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(f[1], "31000000", "{out}");
        f[3].parse().unwrap()
    };
    let opt = format!("{r}/opt");
    assert_eq!(avail(&ok(unit.ssh(&["df", "-Pk", &opt]))), 10_485_760);
    unit.set_disk_avail_kb(123_456);
    assert_eq!(avail(&ok(unit.ssh(&["df", "-Pk", &opt]))), 123_456);
    let missing = format!("{r}/opt/trident");
    let out = unit.ssh(&["df", "-Pk", &missing]);
    assert!(!out.status.success());
    assert_eq!(
        unit.calls("df"),
        [
            format!("-Pk {opt}"),
            format!("-Pk {opt}"),
            format!("-Pk {missing}"),
        ]
    );

    // Users: trident does not exist until useradd; root is the real one.
    assert_eq!(unit.ssh(&["id", "trident"]).status.code(), Some(1));
    assert!(
        unit.ssh(&["usermod", "-aG", "video", "trident"])
            .status
            .code()
            == Some(6)
    );
    ok(unit.ssh(&[
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "trident",
    ]));
    assert!(unit.path("/etc/trident-test/user-trident").exists());
    assert_eq!(unit.ssh(&["useradd", "trident"]).status.code(), Some(9));
    assert!(ok(unit.ssh(&["id", "trident"])).starts_with("uid=998(trident)"));
    assert_eq!(ok(unit.ssh(&["id", "-u", "trident"])), "998\n");
    assert_eq!(ok(unit.ssh(&["id", "-u", "root"])), "0\n");
    ok(unit.ssh(&["usermod", "-aG", "video", "trident"]));
    ok(unit.ssh(&["chown", "-R", "trident:trident", &format!("{r}/opt")]));
    assert_eq!(
        unit.calls("usermod"),
        ["-aG video trident", "-aG video trident"]
    );
    assert_eq!(unit.calls("chown"), [format!("-R trident:trident {r}/opt")]);

    // Faults: fail-<tool> records and fails.
    unit.set_fault("fail-chown", true);
    assert_eq!(unit.ssh(&["chown", "x", "y"]).status.code(), Some(1));
    unit.set_fault("fail-chown", false);
    ok(unit.ssh(&["chown", "x", "y"]));
    assert_eq!(unit.calls("chown").len(), 3);
    assert!(!unit.path("/etc/trident-test/faults/fail-chown").exists());

    // Facts: the L4T release and the dpkg database (readable by dpkg-query itself).
    let release = fs::read_to_string(unit.path("/etc/nv_tegra_release")).unwrap();
    assert!(
        release.starts_with("# R32 (release), REVISION: 7.1,"),
        "{release}"
    );
    unit.set_l4t("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023");
    let release = fs::read_to_string(unit.path("/etc/nv_tegra_release")).unwrap();
    assert!(release.starts_with("# R35 (release)"), "{release}");
    let admindir = format!("--admindir={r}/var/lib/dpkg");
    let out = ok(unit.ssh(&[
        "dpkg-query",
        &admindir,
        "-W",
        "-f",
        "'${Package} ${Version} ${Architecture}\\n'",
        "libc6",
        "libnvinfer8",
        "gstreamer1.0-tools",
    ]));
    assert_eq!(
        out,
        "gstreamer1.0-tools 1.14.5-0ubuntu1~18.04.2 amd64\nlibc6 2.36-9+deb12u14 amd64\nlibnvinfer8 8.2.1-1+cuda10.2 amd64\n"
    );

    // systemctl: records; before provisioning there is no unit, as on a fresh Nano.
    ok(unit.ssh(&["systemctl", "daemon-reload"]));
    let out = unit.ssh(&["systemctl", "start", "trident-edge"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        stderr(&out),
        "Failed to start trident-edge.service: Unit trident-edge.service not found.\n"
    );
    let out = unit.ssh(&["systemctl", "enable", "trident-edge"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Unit file trident-edge.service does not exist"));
    // Provisioned: the unit file, then daemon-reload; enable reports its symlink on stderr (and
    // reloads too, as systemctl 237 does).
    fs::copy(
        trident_e2e::workspace_root().join("deploy/systemd/trident-edge.service"),
        unit_file(unit),
    )
    .unwrap();
    let out = unit.ssh(&["systemctl", "start", "trident-edge"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "a unit file is loaded by daemon-reload, not when it appears"
    );
    ok(unit.ssh(&["systemctl", "daemon-reload"]));
    let out = unit.ssh(&["systemctl", "enable", "trident-edge"]);
    assert_eq!(ok(out.clone()), "");
    assert!(
        stderr(&out).starts_with("Created symlink"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ok(unit.ssh(&["systemctl", "is-enabled", "trident-edge"])),
        "enabled\n"
    );
    assert_eq!(is_active(unit), ("inactive".into(), Some(3)));
    let out = unit.ssh(&["systemctl", "is-active", "nvargus-daemon"]);
    assert_eq!(
        (stdout(&out).as_str(), out.status.code()),
        ("inactive\n", Some(3))
    );
    assert_eq!(
        unit.ssh(&["systemctl", "frobnicate", "trident-edge"])
            .status
            .code(),
        Some(1)
    );
    assert!(!unit.service_running());
    // fail-systemctl: recorded, refused before the manager is asked.
    unit.set_fault("fail-systemctl", true);
    assert_eq!(
        unit.ssh(&["systemctl", "daemon-reload"]).status.code(),
        Some(1)
    );
    unit.set_fault("fail-systemctl", false);
    assert_eq!(
        unit.calls("systemctl"),
        [
            "daemon-reload",
            "start trident-edge",
            "enable trident-edge",
            "start trident-edge",
            "daemon-reload",
            "enable trident-edge",
            "is-enabled trident-edge",
            "is-active trident-edge",
            "is-active nvargus-daemon",
            "frobnicate trident-edge",
            "daemon-reload",
        ]
    );
}

#[test]
fn systemctl_runs_the_current_release_and_teardown_leaves_no_process() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01", "reef-02"]);
    let unit = fleet.unit("reef-01");
    assert_eq!(unit.current_release(), None);
    install_release(unit);
    assert_eq!(unit.current_release().as_deref(), Some("1.0.0"));

    // `restart` returns once the runtime said READY=1: active at once, /healthz served.
    ok(systemctl(unit, &["restart", "trident-edge"]));
    assert_eq!(is_active(unit), ("active".into(), Some(0)));
    assert_eq!(prop(unit, "SubState"), "running");
    let first = unit
        .service_pid()
        .expect("the pid file names the main process");
    assert_eq!(prop(unit, "MainPID"), first.to_string());
    assert!(
        manager_log(unit).contains(&format!("READY=1 from {first}")),
        "{}",
        manager_log(unit)
    );
    assert!(
        healthz(unit).is_some(),
        "/healthz answers once the unit is active"
    );

    // The command line of the repository's unit file, the unit's paths under R, the test
    // hardware (camera, health port, capture size) in place of the Nano's.
    let r = |p: &str| unit.path(p).display().to_string();
    let http = format!("127.0.0.1:{}", unit.health_port);
    let expected: Vec<String> = [
        r("/opt/trident/current/bin/trident-edge").as_str(),
        "run",
        "--package",
        &r("/opt/trident/current"),
        "--backend",
        "tensorrt,tract",
        "--profile",
        &r("/opt/trident/current/profiles/nano-10w.yaml"),
        "--source",
        "test://",
        "--out",
        &r("/opt/trident/data"),
        "--http",
        &http,
        "--width",
        "320",
        "--height",
        "240",
        "--stale-after",
        "10s",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(cmdline(first), expected);
    // systemd's clean environment: the unit's variables (paths mapped), the notify protocol's,
    // nothing of the SSH session that asked.
    let env = environ(first);
    for var in [
        "RUST_LOG=info".to_string(),
        "TRIDENT_PROFILE=nano-10w".to_string(),
        format!("TRIDENT_ENGINE_CACHE={}", r("/opt/trident/engines")),
        format!(
            "GST_REGISTRY={}",
            r("/var/cache/trident/gstreamer-registry.bin")
        ),
        "WATCHDOG_USEC=30000000".to_string(),
        format!("WATCHDOG_PID={first}"),
        format!(
            "PATH={}/bin:/usr/local/bin:/usr/bin:/bin",
            unit.root.display()
        ),
    ] {
        assert!(env.contains(&var), "{var} not in {env:?}");
    }
    assert!(
        env.iter().any(|v| v.starts_with("NOTIFY_SOCKET=/")),
        "{env:?}"
    );
    assert!(
        env.iter().any(|v| v.starts_with("INVOCATION_ID=")),
        "{env:?}"
    );
    assert!(
        !env.iter()
            .any(|v| v.starts_with("SSH_") || v.starts_with("HOME=")),
        "{env:?}"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{first}/cwd")).unwrap(),
        unit.path("/opt/trident/data")
    );
    assert!(unit.path("/var/cache/trident").is_dir(), "CacheDirectory=");

    // A restart replaces the process and blocks until the new one is ready.
    ok(systemctl(unit, &["restart", "trident-edge.service"]));
    let second = unit.service_pid().expect("running after a restart");
    assert_ne!(first, second);
    assert!(!alive(first), "the old service process was stopped");
    assert!(manager_log(unit).contains(&format!("READY=1 from {second}")));
    assert_eq!(
        prop(unit, "NRestarts"),
        "0",
        "manual restarts are not counted"
    );

    ok(systemctl(unit, &["stop", "trident-edge"]));
    assert!(!unit.service_running());
    assert!(!alive(second));
    assert_eq!(is_active(unit), ("inactive".into(), Some(3)));
    let status = systemctl(unit, &["status", "trident-edge"]);
    assert_eq!(status.status.code(), Some(3));
    assert!(
        stdout(&status).contains("Active: inactive (dead)"),
        "{}",
        stdout(&status)
    );
    assert_eq!(
        unit.calls("systemctl")
            .iter()
            .filter(|c| !c.starts_with("show") && !c.starts_with("is-active"))
            .cloned()
            .collect::<Vec<_>>(),
        [
            "daemon-reload",
            "restart trident-edge",
            "restart trident-edge.service",
            "stop trident-edge",
            "status trident-edge",
        ]
    );
    // The other unit saw none of it.
    assert!(fleet.unit("reef-02").calls("systemctl").is_empty());

    // enable --now starts (and waits), disable --now stops; with --no-block the start goes on
    // after systemctl returned.
    ok(systemctl(unit, &["enable", "--now", "trident-edge"]));
    assert_eq!(is_active(unit), ("active".into(), Some(0)));
    ok(systemctl(unit, &["disable", "--now", "trident-edge"]));
    assert_eq!(is_active(unit), ("inactive".into(), Some(3)));
    assert_eq!(
        systemctl(unit, &["is-enabled", "trident-edge"])
            .status
            .code(),
        Some(1)
    );
    ok(systemctl(unit, &["--no-block", "start", "trident-edge"]));
    wait_for(
        "the start queued with --no-block",
        Duration::from_secs(120),
        || is_active(unit).0 == "active",
    );

    // An outage: the unit's sshd and its sessions go, the service stays.
    let service = unit.service_pid().unwrap();
    let marker = unit.path("/tmp/in-session");
    let mut session = Command::new("ssh")
        .arg("-F")
        .arg(fleet.ssh_config())
        .arg("reef-01")
        .arg(format!("touch {}; sleep 60", marker.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the session", Duration::from_secs(5), || marker.exists());
    let t = Instant::now();
    fleet.stop_unit("reef-01");
    let status = session.wait().unwrap();
    assert!(!status.success(), "a session in flight drops");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(unit.sshd_pid().is_none());
    let out = unit.ssh(&["true"]);
    assert_eq!(out.status.code(), Some(255), "an unreachable unit");
    assert!(
        alive(service),
        "the service keeps running while the unit is unreachable"
    );
    assert!(ok(fleet.unit("reef-02").ssh(&["echo up"])) == "up\n");
    fleet.start_unit("reef-01");
    assert_eq!(ok(unit.ssh(&["echo $TRIDENT_TEST_UNIT"])), "reef-01\n");

    // Teardown: every sshd and the service are gone.
    let sshds: Vec<u32> = fleet
        .units()
        .iter()
        .map(|u| u.sshd_pid().unwrap())
        .collect();
    let roots: Vec<String> = fleet
        .units()
        .iter()
        .map(|u| u.root.display().to_string())
        .collect();
    drop(fleet);
    for pid in sshds.into_iter().chain([service]) {
        assert!(!alive(pid), "process {pid} outlived the fleet");
    }
    for root in &roots {
        assert!(
            !processes_mentioning(root),
            "a process of {root} outlived the fleet"
        );
    }

    // Without its manager, the unit's systemctl fails and says why instead of hanging: the
    // control FIFO is gone after a clean teardown; a manager that died without cleaning up
    // leaves one that nobody reads.
    let client = Path::new(&roots[0]).join("bin/systemctl");
    let run = || {
        let t = Instant::now();
        let out = Command::new(&client)
            .args(["is-active", "trident-edge"])
            .output()
            .unwrap();
        (out.status.code(), stderr(&out), t.elapsed())
    };
    let (code, err, _) = run();
    assert_eq!(code, Some(1));
    assert!(err.contains("no fake systemd manager"), "{err}");
    let control = Path::new(&roots[0]).join("run/fake-systemd/control");
    assert!(
        Command::new("mkfifo")
            .arg(&control)
            .status()
            .unwrap()
            .success()
    );
    let (code, err, took) = run();
    assert_eq!(code, Some(1));
    assert!(err.contains("takes no requests"), "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
}

/// Whether any live process other than this one has `root` in its command line.
fn processes_mentioning(root: &str) -> bool {
    let me = std::process::id();
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        pid != me
            && alive(pid)
            && fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(root))
    })
}

#[test]
fn a_four_unit_fleet_starts_in_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let fleet = TestFleet::start(tmp.path(), &["reef-01", "reef-02", "reef-03", "reef-04"]);
    let started = t.elapsed();
    let t = Instant::now();
    for unit in fleet.units() {
        assert_eq!(ok(unit.ssh(&["echo $TRIDENT_TEST_UNIT"])).trim(), unit.name);
    }
    let round_trips = t.elapsed();
    let t = Instant::now();
    drop(fleet);
    println!(
        "4-unit fleet: started in {:.2} s, one ssh command per unit {:.0} ms each, torn down in {:.2} s",
        started.as_secs_f64(),
        round_trips.as_secs_f64() * 1000.0 / 4.0,
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn a_crash_before_ready_fails_the_restart_and_systemd_restarts_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    install_release(unit);
    // The unit's RestartSec=5 shortened the way an operator would: a drop-in, then a reload.
    drop_in(unit, "10-restart-sooner", "[Service]\nRestartSec=1\n");
    ok(systemctl(unit, &["daemon-reload"]));
    assert_eq!(prop(unit, "RestartUSec"), "1s");
    ok(systemctl(unit, &["start", "trident-edge"]));
    let first = unit.service_pid().unwrap();

    // The main process exits 1 before READY=1: the job fails with systemd's words.
    unit.set_fault("start-fails", true);
    let out = systemctl(unit, &["restart", "trident-edge"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out), JOB_FAILED);
    assert!(!alive(first));
    // Restart=always: activating (auto-restart) until the hold-off ends, never "failed" between.
    let (state, code) = is_active(unit);
    assert_eq!(code, Some(3));
    assert_eq!(state, "activating", "{}", manager_log(unit));
    let log = fs::read_to_string(unit.path("/var/log/trident-edge.log")).unwrap();
    assert!(log.contains("injected fault start-fails"), "{log}");
    let status = stdout(&systemctl(unit, &["status", "trident-edge"]));
    assert!(
        status.contains("Active: activating (auto-restart) (Result: exit-code)")
            || status.contains("Active: activating (start)"),
        "{status}"
    );

    // Once the runtime can start again, the restart timer brings it back by itself.
    unit.set_fault("start-fails", false);
    wait_for("the automatic restart", Duration::from_secs(120), || {
        is_active(unit).0 == "active"
    });
    let restarted = unit.service_pid().unwrap();
    assert_ne!(restarted, first);
    assert!(prop(unit, "NRestarts").parse::<u32>().unwrap() >= 1);
    assert!(manager_log(unit).contains("Service hold-off time over, scheduling restart."));

    // The `unhealthy` fault: the camera cannot be opened, the runtime exits with its error
    // (after /healthz came up, before READY=1), and the restart job fails the same way.
    unit.set_fault("unhealthy", true);
    let out = systemctl(unit, &["restart", "trident-edge"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (Some(1), JOB_FAILED.to_string())
    );
    let log = fs::read_to_string(unit.path("/var/log/trident-edge.log")).unwrap();
    assert!(log.contains("camera-unplugged.avi"), "{log}");
    // A stop during the hold-off: inactive, and no restart comes after it.
    ok(systemctl(unit, &["stop", "trident-edge"]));
    assert_eq!(is_active(unit), ("inactive".into(), Some(3)));
    unit.set_fault("unhealthy", false);
}

#[test]
fn starting_too_often_hits_the_start_limit_until_reset_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    install_release(unit);
    // Three starts a minute (a window no slow machine outlasts), restarts 100 ms apart.
    drop_in(
        unit,
        "10-limit",
        "[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=3\n[Service]\nRestartSec=100ms\n",
    );
    ok(systemctl(unit, &["daemon-reload"]));
    unit.set_fault("start-fails", true);
    let out = systemctl(unit, &["start", "trident-edge"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (Some(1), JOB_FAILED.to_string())
    );
    // Starts 2 and 3 come from the restart timer; the 4th is refused: failed, no more restarts.
    wait_for("the start limit", Duration::from_secs(120), || {
        is_active(unit).0 == "failed"
    });
    assert_eq!(prop(unit, "Result"), "start-limit-hit");
    assert_eq!(prop(unit, "NRestarts"), "3");
    let starts = |u: &TestUnit| manager_log(u).matches(": main process ").count();
    assert_eq!(starts(unit), 3, "{}", manager_log(unit));
    assert!(manager_log(unit).contains("Start request repeated too quickly."));

    // Fixed or not, a manual start is refused within the window…
    unit.set_fault("start-fails", false);
    let out = systemctl(unit, &["start", "trident-edge"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(
            "Job for trident-edge.service failed because start of the service was attempted too often.\n"
        ),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("systemctl reset-failed trident-edge.service"));
    assert_eq!(starts(unit), 3, "nothing ran");
    // …until reset-failed.
    ok(systemctl(unit, &["reset-failed", "trident-edge"]));
    assert_eq!(is_active(unit), ("inactive".into(), Some(3)));
    ok(systemctl(unit, &["start", "trident-edge"]));
    assert_eq!(is_active(unit), ("active".into(), Some(0)));
    assert_eq!(prop(unit, "NRestarts"), "0");
}

#[test]
fn the_watchdog_kills_a_service_that_stops_pinging() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    install_release(unit);
    // A classic unit mistake: the runtime under `sh -c` (not exec'd). With NotifyAccess=all its
    // READY=1 counts, but WATCHDOG_PID names the shell, so the runtime never pings (as
    // sd_watchdog_enabled() would decide too): the watchdog must kill it.
    drop_in(
        unit,
        "10-wrapped",
        &format!(
            "[Service]\nNotifyAccess=all\nWatchdogSec=1\nRestartSec=1\n{}",
            wrapped_exec_start("\"$$0\" \"$$@\"; exit $$?")
        ),
    );
    ok(systemctl(unit, &["daemon-reload"]));
    ok(systemctl(unit, &["start", "trident-edge"]));
    let shell = unit.service_pid().unwrap();
    assert!(cmdline(shell)[0].ends_with("sh"), "{:?}", cmdline(shell));
    wait_for("the watchdog", Duration::from_secs(60), || {
        manager_log(unit).contains("Watchdog timeout (limit 1s)!")
    });
    wait_for("the watchdog's result", Duration::from_secs(60), || {
        prop(unit, "Result") == "watchdog" || prop(unit, "NRestarts") != "0"
    });
    assert!(!alive(shell), "the main process got SIGABRT");
    assert!(manager_log(unit).contains("stop-sigabrt: sending SIGABRT"));
    // Restart=always applies after a watchdog kill.
    wait_for(
        "the restart after the watchdog",
        Duration::from_secs(60),
        || prop(unit, "NRestarts") != "0",
    );
    ok(systemctl(unit, &["stop", "trident-edge"]));
}

#[test]
fn notify_access_main_ignores_ready_from_a_child() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    install_release(unit);
    // The runtime as a child of the main process: its READY=1 is not the main process's.
    drop_in(
        unit,
        "10-wrapped",
        &format!(
            "[Service]\nTimeoutStartSec=8\n{}",
            wrapped_exec_start("\"$$0\" \"$$@\"; exit $$?")
        ),
    );
    ok(systemctl(unit, &["daemon-reload"]));
    let t = Instant::now();
    let out = systemctl(unit, &["start", "trident-edge"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Job for trident-edge.service failed because a timeout was exceeded.\nSee \"systemctl status trident-edge.service\" and \"journalctl -xe\" for details.\n"
    );
    assert!(t.elapsed() >= Duration::from_secs(8), "{:?}", t.elapsed());
    let log = manager_log(unit);
    assert!(
        log.contains("but reception only permitted for main PID") && log.contains("READY=1"),
        "{log}"
    );
    ok(systemctl(unit, &["stop", "trident-edge"]));

    // NotifyAccess=all: the same child's READY=1 is taken.
    drop_in(unit, "20-all", "[Service]\nNotifyAccess=all\n");
    ok(systemctl(unit, &["daemon-reload"]));
    ok(systemctl(unit, &["start", "trident-edge"]));
    assert_eq!(is_active(unit), ("active".into(), Some(0)));
}

#[test]
fn a_changed_unit_file_is_ignored_until_daemon_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    install_release(unit);
    ok(systemctl(unit, &["start", "trident-edge"]));
    assert_eq!(prop(unit, "NeedDaemonReload"), "no");

    // Start steps added on disk: a failing one that may fail (`-`), one that records where it
    // ran, one after READY=1 that sees $MAINPID.
    drop_in(
        unit,
        "10-steps",
        "[Service]\nExecStartPre=-/bin/false\nExecStartPre=/bin/touch /tmp/pre-ran\n\
         Environment=POST=/tmp/post-ran\n\
         ExecStartPost=/bin/sh -c 'echo \"post: main $$MAINPID\" > \"$$POST\"'\n",
    );
    let pre = unit.path("/tmp/pre-ran");
    let post = unit.path("/tmp/post-ran");
    assert_eq!(prop(unit, "NeedDaemonReload"), "yes");
    let out = systemctl(unit, &["restart", "trident-edge"]);
    assert!(out.status.success());
    assert_eq!(
        stderr(&out),
        "Warning: The unit file, source configuration file or drop-ins of trident-edge.service changed on disk. Run 'systemctl daemon-reload' to reload units.\n"
    );
    assert!(
        !pre.exists() && !post.exists(),
        "the loaded copy ran, not the disk's"
    );

    ok(systemctl(unit, &["daemon-reload"]));
    let out = systemctl(unit, &["restart", "trident-edge"]);
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
    assert!(pre.exists(), "ExecStartPre= ran under R (its /tmp mapped)");
    let main = unit.service_pid().unwrap();
    assert_eq!(
        fs::read_to_string(&post).unwrap(),
        format!("post: main {main}\n"),
        "ExecStartPost= ran after READY=1, before the job returned"
    );

    // A step that fails (no `-`) fails the start; nothing of the runtime started.
    drop_in(unit, "20-fails", "[Service]\nExecStartPre=/bin/false\n");
    ok(systemctl(unit, &["daemon-reload"]));
    let out = systemctl(unit, &["restart", "trident-edge"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (Some(1), JOB_FAILED.to_string())
    );
    assert!(!alive(main));
    ok(systemctl(unit, &["stop", "trident-edge"]));
    fs::remove_file(unit.path("/etc/systemd/system/trident-edge.service.d/20-fails.conf")).unwrap();

    // Stricter than systemd, which warns and ignores: a misspelt key or a key in the wrong
    // section (237 reads StartLimitIntervalSec= in [Unit] only) is a load error.
    drop_in(unit, "30-typo", "[Service]\nStartLimitIntervalSec=5\n");
    let out = systemctl(unit, &["daemon-reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("30-typo.conf:2") && stderr(&out).contains("StartLimitIntervalSec"),
        "{}",
        stderr(&out)
    );
    let out = systemctl(unit, &["start", "trident-edge"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("not loaded properly"));
    fs::remove_file(unit.path("/etc/systemd/system/trident-edge.service.d/30-typo.conf")).unwrap();
    drop_in(unit, "30-type", "[Service]\nType=simple\n");
    assert_eq!(systemctl(unit, &["daemon-reload"]).status.code(), Some(1));
    fs::remove_file(unit.path("/etc/systemd/system/trident-edge.service.d/30-type.conf")).unwrap();

    // No unit file at all: systemd's status 5.
    fs::remove_file(unit_file(unit)).unwrap();
    ok(systemctl(unit, &["daemon-reload"]));
    let out = systemctl(unit, &["start", "trident-edge"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        stderr(&out),
        "Failed to start trident-edge.service: Unit trident-edge.service not found.\n"
    );
}

#[test]
fn stop_kills_the_whole_group_and_a_missing_working_directory_fails_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    install_release(unit);
    // Before exec'ing the runtime, the main process leaves two children: one in its process
    // group, one in a session of its own (a cgroup keeps both; so must the stand-in).
    drop_in(
        unit,
        "10-children",
        &format!(
            "[Service]\nEnvironment=KIDS=/tmp/kids\n{}",
            wrapped_exec_start(
                "sleep 300 & echo $$! > \"$$KIDS\"; setsid sleep 300 & echo $$! >> \"$$KIDS\"; exec \"$$0\" \"$$@\""
            )
        ),
    );
    ok(systemctl(unit, &["daemon-reload"]));
    ok(systemctl(unit, &["start", "trident-edge"]));
    let main = unit.service_pid().unwrap();
    let kids: Vec<u32> = fs::read_to_string(unit.path("/tmp/kids"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.iter().all(|&k| alive(k)));
    ok(systemctl(unit, &["stop", "trident-edge"]));
    // `stop` returned: everything is gone already, and nothing comes back (Restart=always does
    // not apply to a stop).
    for pid in kids.iter().chain([&main]) {
        assert!(!alive(*pid), "{pid} outlived the stop");
    }
    assert_eq!(is_active(unit), ("inactive".into(), Some(3)));
    assert_eq!(prop(unit, "Result"), "success");

    // WorkingDirectory= that does not exist: systemd's 200/CHDIR, the start fails.
    fs::remove_file(unit.path("/etc/systemd/system/trident-edge.service.d/10-children.conf"))
        .unwrap();
    ok(systemctl(unit, &["daemon-reload"]));
    fs::rename(
        unit.path("/opt/trident/data"),
        unit.path("/opt/trident/data.away"),
    )
    .unwrap();
    let out = systemctl(unit, &["start", "trident-edge"]);
    assert_eq!(out.status.code(), Some(1));
    let status = stdout(&systemctl(unit, &["status", "-n", "20", "trident-edge"]));
    assert!(status.contains("status=200/CHDIR"), "{status}");
    ok(systemctl(unit, &["stop", "trident-edge"]));
}

#[test]
fn the_no_frames_fault_serves_healthz_without_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    install_release(unit);
    unit.set_fault("no-frames", true);
    ok(systemctl(unit, &["start", "trident-edge"]));
    let pid = unit.service_pid().unwrap();
    assert!(
        cmdline(pid).iter().any(|a| a.starts_with("gst://")),
        "{:?}",
        cmdline(pid)
    );
    // The runtime said READY=1 (its run loop began) and answers; two seconds on, no frame has
    // arrived.
    let mut last = serde_json::Value::Null;
    wait_for(
        "two seconds of the run loop",
        Duration::from_secs(60),
        || {
            let Some((_, body)) = healthz(unit) else {
                return false;
            };
            last = serde_json::from_str(&body).unwrap_or_default();
            last["uptime_s"].as_f64().is_some_and(|u| u >= 2.0)
        },
    );
    assert_eq!(last["frames"], 0, "{last}");
    assert_eq!(is_active(unit), ("active".into(), Some(0)));
    ok(systemctl(unit, &["stop", "trident-edge"]));
}

#[test]
fn an_unprivileged_session_may_ask_but_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    let unit = fleet.unit("reef-01");
    fs::copy(
        trident_e2e::workspace_root().join("deploy/systemd/trident-edge.service"),
        unit_file(unit),
    )
    .unwrap();
    ok(systemctl(unit, &["daemon-reload"]));
    unit.login_unprivileged(false);
    assert_eq!(is_active(unit), ("inactive".into(), Some(3)));
    let out = systemctl(unit, &["restart", "trident-edge"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Failed to restart trident-edge.service: Interactive authentication required.\nSee system logs and 'systemctl status trident-edge.service' for details.\n"
    );
    assert_eq!(systemctl(unit, &["daemon-reload"]).status.code(), Some(1));
}
