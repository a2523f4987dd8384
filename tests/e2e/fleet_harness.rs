//! The fleet harness (`trident_e2e::fleet`) itself: real sshd per fake Nano unit on loopback, the
//! remote root prefix, the fake system tools, the systemd stand-in and the service it runs (the
//! host's real `trident-edge` from a real package, under the repository's unit file), unit
//! outages and teardown.
//!
//! These tests fail (they do not skip) where OpenSSH is missing: `cargo xtask setup` installs
//! openssh-server. The first test that needs a release builds a package for this machine
//! (tens of seconds) and keeps it in cargo's test scratch folder for the next runs.

use std::fs;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trident_e2e::fleet::TestFleet;

mod support;
mod systemd;

use support::*;

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
