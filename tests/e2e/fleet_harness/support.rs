//! What the harness tests share: running `systemctl` on a unit, its properties, the release
//! package they install, process and log helpers.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use trident_e2e::fleet::{TestFleet, TestUnit};

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
pub fn ok(out: Output) -> String {
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
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next());
        !matches!(state, Some(Some('Z' | 'X' | 'x')) | None)
    })
}

/// Generous: these waits must hold on a machine twice as slow as the one they were written on.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `systemctl ARGS…` on the unit over SSH. With `DEBUG_FLEET` set, a failing call prints the
/// unit's manager log and service log (the fleet's folder is gone once the test ends).
pub fn systemctl(unit: &TestUnit, args: &[&str]) -> Output {
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
pub fn prop(unit: &TestUnit, name: &str) -> String {
    ok(systemctl(
        unit,
        &["show", "-p", name, "--value", "trident-edge"],
    ))
    .trim()
    .to_string()
}

/// `(stdout, exit status)` of `systemctl is-active trident-edge`.
pub fn is_active(unit: &TestUnit) -> (String, Option<i32>) {
    let out = systemctl(unit, &["is-active", "trident-edge"]);
    (stdout(&out).trim().to_string(), out.status.code())
}

pub const JOB_FAILED: &str = "Job for trident-edge.service failed because the control process exited with error code.\nSee \"systemctl status trident-edge.service\" and \"journalctl -xe\" for details.\n";

/// A package for this machine (the host's `trident-edge`, fixture models, the repository's
/// profiles), unsigned. Building one takes tens of seconds (most of it compressing the debug
/// runtime), so it is built once and kept in cargo's test scratch folder, keyed by what goes
/// into it; a stale one is replaced.
pub fn host_package() -> PathBuf {
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
        let release = trident_package::release::ReleaseConfig::load(&config).unwrap();
        let models = release.models.dir.clone().unwrap();
        trident_package::build::build_package(
            &trident_package::build::PackageRequest {
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
pub fn install_release(unit: &TestUnit) {
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

pub fn unit_file(unit: &TestUnit) -> PathBuf {
    unit.path("/etc/systemd/system/trident-edge.service")
}

/// Writes the drop-in `trident-edge.service.d/<name>.conf` (the caller reloads).
pub fn drop_in(unit: &TestUnit, name: &str, text: &str) {
    let dir = unit.path("/etc/systemd/system/trident-edge.service.d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("{name}.conf")), text).unwrap();
}

/// The unit's `ExecStart=` with the runtime wrapped in `sh -c SCRIPT` (`$$` is systemd's
/// escape for `$`): the runtime keeps the unit's arguments.
pub fn wrapped_exec_start(script: &str) -> String {
    let text = fs::read_to_string(
        trident_e2e::workspace_root().join("deploy/systemd/trident-edge.service"),
    )
    .unwrap();
    let start = text.find("ExecStart=").unwrap();
    let end = text[start..].find("\nWatchdogSec").unwrap() + start;
    let line = text[start + "ExecStart=".len()..end].to_string();
    format!("ExecStart=\nExecStart=/bin/sh -c '{script}' {line}\n")
}

pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

pub fn environ(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The fake systemd's log of the unit (transitions, decisions).
pub fn manager_log(unit: &TestUnit) -> String {
    fs::read_to_string(unit.path("/var/log/fake-systemd.log")).unwrap_or_default()
}

/// `GET /healthz` on the unit's health port: `(status code, body)`.
pub fn healthz(unit: &TestUnit) -> Option<(u16, String)> {
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

/// One unit, `reef-01`, with the harness's release installed (not started); the folder holding
/// the fleet goes with the first value.
pub fn fleet_with_release() -> (tempfile::TempDir, TestFleet) {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&tmp.path().join("fleet"), &["reef-01"]);
    install_release(fleet.unit("reef-01"));
    (tmp, fleet)
}
