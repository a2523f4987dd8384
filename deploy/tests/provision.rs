//! `provision` against loopback units: the layout, user, key, unit file, power mode and the
//! verifier land on a fresh unit; an incompatible unit is refused with nothing changed.

use crate::common;

use common::{TestSetup, unit};
use trident_deploy::inventory::PowerMode;
use trident_deploy::provision::provision;

#[test]
fn a_fresh_unit_gets_its_layout_key_service_power_mode_and_verifier() {
    let t = TestSetup::new(&["reef-01", "reef-02"]);
    let mut u = unit(&t.fleet, "reef-01");
    u.power_mode = PowerMode::FiveWatt;
    let done = provision(&t.ssh, &u, &t.package, &t.public_key).unwrap();
    assert!(!done.before.provisioned && done.after.provisioned);
    // doctor ran with the verifier on the unit (a loopback unit is no Jetson).
    assert_eq!(
        done.doctor.as_deref(),
        Some("Jetson elements: none; no power sensor"),
        "{:?}",
        done.doctor
    );
    let tu = t.fleet.unit("reef-01");
    for dir in ["releases", "data", "engines", "incoming"] {
        assert!(tu.path(&format!("/opt/trident/{dir}")).is_dir(), "{dir}");
    }
    assert_eq!(
        std::fs::read_to_string(tu.path("/opt/trident/trusted.pub")).unwrap(),
        std::fs::read_to_string(&t.public_key)
            .unwrap()
            .trim_end()
            .to_string()
            + "\n"
    );
    assert_eq!(
        std::fs::read(tu.path("/opt/trident/bin/trident-edge")).unwrap(),
        std::fs::read(trident_e2e::host_runtime()).unwrap()
    );
    assert!(
        tu.path("/etc/systemd/system/trident-edge.service")
            .is_file()
    );
    let systemctl = tu.calls("systemctl");
    assert!(
        systemctl.contains(&"daemon-reload".to_string()),
        "{systemctl:?}"
    );
    assert!(
        systemctl.iter().any(|c| c.starts_with("enable")),
        "{systemctl:?}"
    );
    assert_eq!(tu.calls("nvpmodel"), ["-m 1"]);
    // A 5 W unit runs the package's 5 W profile (the unit's ExecStart reads unit.env).
    assert_eq!(
        std::fs::read_to_string(tu.path("/opt/trident/unit.env")).unwrap(),
        "TRIDENT_PROFILE=nano-5w\n"
    );
    assert!(tu.calls("useradd").iter().any(|c| c.ends_with("trident")));
    // The other unit was not touched.
    assert!(t.fleet.unit("reef-02").calls("systemctl").is_empty());

    // Provisioning again is harmless (the user exists, files are replaced atomically).
    provision(&t.ssh, &u, &t.package, &t.public_key).unwrap();
    assert_eq!(tu.calls("useradd").len(), 1);
}

#[test]
fn an_incompatible_unit_is_refused_before_anything_changes() {
    let t = TestSetup::new(&["old-01"]);
    let tu = t.fleet.unit("old-01");
    tu.set_l4t("# R32 (release), REVISION: 5.1, GCID: 27362550, BOARD: t210ref, EABI: aarch64, DATE: Wed Mar 10 22:24:17 UTC 2021");
    let u = unit(&t.fleet, "old-01");
    let e = provision(&t.ssh, &u, &t.package, &t.public_key)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("old-01") && e.contains("4.5") && e.contains("4.6"),
        "{e}"
    );
    assert!(!tu.path("/opt/trident").exists());
    assert!(tu.calls("systemctl").is_empty() && tu.calls("nvpmodel").is_empty());
}

/// The systemd of L4T R32 (Ubuntu 18.04) is 237. Each directive the unit file uses, with the
/// systemd release that introduced it (systemd's NEWS): a directive the Nano's systemd does not
/// know would be ignored there with a warning — and with it what it protects. A directive missing
/// from this table fails the test until someone looks its version up.
const DIRECTIVES_SINCE: &[(&str, u32)] = &[
    ("Description", 1),
    ("After", 1),
    ("Wants", 1),
    ("WantedBy", 1),
    ("Type", 1),
    ("NotifyAccess", 1),
    ("User", 1),
    ("Group", 1),
    ("SupplementaryGroups", 1),
    ("WorkingDirectory", 1),
    ("Environment", 1),
    ("EnvironmentFile", 1),
    ("ExecStart", 1),
    ("ExecStartPre", 1),
    ("ExecStartPost", 1),
    ("Restart", 1),
    ("RestartSec", 1),
    ("TimeoutStartSec", 188),
    ("TimeoutStopSec", 1),
    ("KillSignal", 1),
    ("WatchdogSec", 1),
    ("PrivateTmp", 1),
    ("NoNewPrivileges", 187),
    ("ProtectHome", 214),
    ("ProtectSystem", 214),
    ("ReadWritePaths", 231),
    ("CacheDirectory", 235),
    ("StartLimitIntervalSec", 230),
    ("StartLimitBurst", 230),
];
const NANO_SYSTEMD: u32 = 237;

fn unit_file() -> String {
    let path = trident_e2e::workspace_root().join("deploy/systemd/trident-edge.service");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn the_unit_file_uses_only_what_the_nanos_systemd_knows() {
    let text = unit_file();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue; // a continuation line of ExecStart
        };
        // Exec prefixes: "-" is as old as systemd; "+" (full privileges) came in 231.
        if key.starts_with("Exec") {
            let prefixes: String = value.chars().take_while(|c| "-+!@:".contains(*c)).collect();
            assert!(
                prefixes.chars().all(|c| "-+".contains(c)),
                "{key}: prefix {prefixes:?} is newer than systemd 237 or not checked here"
            );
            const PLUS_SINCE: u32 = 231;
            assert!(!prefixes.contains('+') || PLUS_SINCE <= NANO_SYSTEMD);
        }
        let since = DIRECTIVES_SINCE
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key}: which systemd release introduced it? Add it above"));
        assert!(
            since.1 <= NANO_SYSTEMD,
            "{key} needs systemd {}; the Nano has {NANO_SYSTEMD}",
            since.1
        );
    }
    // What JetPack needs of it: the camera's socket in the real /tmp, a writable registry cache.
    assert!(
        text.contains("PrivateTmp=no"),
        "nvargus-daemon's /tmp/argus_socket"
    );
    assert!(text.contains("CacheDirectory=trident"));
    assert!(text.contains("GST_REGISTRY=/var/cache/trident/"));
}

/// `systemd-analyze verify` on the unit file, with ExecStart pointed at an executable that exists
/// (verify checks it): no error and no warning, which a typo in a directive would produce.
#[test]
fn systemd_analyze_verifies_the_unit_file() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("systemd-analyze (package systemd; `cargo xtask setup` installs it)");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("trident-edge");
    std::fs::write(&exe, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = unit_file();
    assert!(text.contains("/opt/trident/current/bin/trident-edge"));
    assert!(text.contains("/opt/trident/bin/trident-guard"));
    let file = dir.path().join("trident-edge.service");
    let text = text
        .replace("/opt/trident/bin/trident-guard", exe.to_str().unwrap())
        .replace(
            "/opt/trident/current/bin/trident-edge",
            exe.to_str().unwrap(),
        );
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&file)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about other units (the host's own, e.g. nvargus-daemon.service not found) are not ours.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("trident-edge.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");

    // And it does catch what it should: an unknown directive is reported.
    std::fs::write(&file, text.replace("PrivateTmp=no", "PrivateTmpp=no")).unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn doctor_line_names_the_jetson_elements_and_the_sensor() {
    let json = r#"{"elements": [
        {"element": "nvarguscamerasrc", "present": true, "used_for": ""},
        {"element": "nvvidconv", "present": true, "used_for": ""},
        {"element": "nvjpegdec", "present": false, "used_for": ""},
        {"element": "videoconvert", "present": true, "used_for": ""}],
        "power_sensor": "INA3221 at /sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"}"#;
    assert_eq!(
        trident_deploy::provision::doctor_line(json).as_deref(),
        Some("Jetson elements: nvarguscamerasrc, nvvidconv; INA3221")
    );
    assert_eq!(trident_deploy::provision::doctor_line("not json"), None);
}
