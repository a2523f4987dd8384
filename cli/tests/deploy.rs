//! `trident deploy` through the binary against loopback units (the test fleet of
//! `trident-e2e`: real sshd, fake systemctl/nvpmodel, real trident-edge): provision, push in
//! waves, status as table and JSON, a failing canary (exit 1, rollback shown by status, the
//! other unit untouched), rollback, and bad input (exit 2, nothing touched).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{s, stderr, stdout};
use trident_e2e::fleet::TestFleet;

const UNITS: [&str; 2] = ["reef-01", "reef-02"];

struct Setup {
    dir: tempfile::TempDir,
    fleet: TestFleet,
    inventory: PathBuf,
    secret: PathBuf,
}

impl Setup {
    fn deploy(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_trident"))
            .arg("deploy")
            .arg("--inventory")
            .arg(&self.inventory)
            .args(args)
            .env("TRIDENT_STATE_DIR", self.dir.path().join("state"))
            .env_remove("TRIDENT_SIGN_KEY")
            .output()
            .expect("run trident")
    }

    /// A signed package of `version` built by `trident export --package`.
    fn package(&self, version: &str) -> PathBuf {
        let inputs = self.dir.path().join(format!("inputs-{version}"));
        std::fs::create_dir_all(&inputs).unwrap();
        let config = trident_e2e::host_release_inputs(&inputs);
        let out = self.dir.path().join("dist");
        let o = Command::new(env!("CARGO_BIN_EXE_trident"))
            .args([
                "export",
                "--package",
                "--config",
                s(&config),
                "--out",
                s(&out),
            ])
            .args(["--sign-key", s(&self.secret), "--release-version", version])
            .env_remove("TRIDENT_SIGN_KEY")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        out.join(format!("trident-{version}-test.tar.zst"))
    }
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&dir.path().join("fleet"), &UNITS);
    let keys = dir.path().join("keys");
    let o = Command::new(env!("CARGO_BIN_EXE_trident"))
        .args(["package", "keygen", "--out", s(&keys), "--unencrypted"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut text = format!(
        "trusted_key: keys/trident.pub\nkeep_releases: 2\nwaves: {{canary: 1, max_parallel: 2}}\nhealth: {{timeout_s: 20}}\nssh: {{config: {}}}\nunits:\n",
        fleet.ssh_config().display()
    );
    for (i, name) in UNITS.iter().enumerate() {
        let u = fleet.unit(name);
        text.push_str(&format!(
            "  - name: {name}\n    host: {name}\n    tags: [{}]\n    root: {}\n    health_addr: 127.0.0.1:{}\n",
            if i == 0 { "north" } else { "south" },
            u.root.display(),
            u.health_port
        ));
    }
    let inventory = dir.path().join("fleet.yaml");
    std::fs::write(&inventory, text).unwrap();
    Setup {
        secret: keys.join("trident.key"),
        dir,
        fleet,
        inventory,
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn find<'a>(v: &'a serde_json::Value, unit: &str) -> &'a serde_json::Value {
    v.as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == unit)
        .unwrap()
}

#[test]
fn provision_push_status_rollback_through_the_cli() {
    let t = setup();
    let p1 = t.package("1.0.0");

    let o = t.deploy(&["provision", "--all", "--package", s(&p1)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let table = stdout(&o);
    for name in UNITS {
        assert!(table.contains(name), "{table}");
    }
    assert!(table.contains("provisioned (MAXN (10 W))"), "{table}");
    assert!(
        table.contains("doctor: Jetson elements: none; no power sensor"),
        "{table}"
    );
    // The facts read from the unit: JetPack from the L4T release file, TensorRT and GStreamer
    // from dpkg.
    assert!(
        table.contains("32.7.1") && table.contains("4.6.1") && table.contains("8.2.1"),
        "{table}"
    );
    assert!(table.contains("1.14.5"), "{table}");
    assert!(
        stderr(&o).contains("2 of 2 unit(s) provisioned"),
        "{}",
        stderr(&o)
    );

    let o = t.deploy(&["push", s(&p1), "--all"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let summary = stdout(&o);
    assert_eq!(summary.matches("installed 1.0.0").count(), 2, "{summary}");
    assert!(summary.contains("canary"), "{summary}");

    let o = t.deploy(&["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    for name in UNITS {
        let u = find(&v, name);
        assert_eq!(u["release"], "1.0.0", "{u}");
        assert_eq!(u["health"], "ok", "{u}");
        assert_eq!(u["power_mode"], "MAXN", "{u}");
        assert!(u["fps"].is_number() && u["level"].is_number(), "{u}");
        assert!(
            u["frames"].is_u64() && u["detections"].is_u64(),
            "the runtime's counts reach status: {u}"
        );
        // The unit asks for tensorrt first and has none: each model's fallback is reported.
        let fallbacks = u["fallbacks"].as_array().expect("fallbacks");
        assert_eq!(fallbacks.len(), 3, "{u}");
        assert!(
            fallbacks
                .iter()
                .all(|f| f.as_str().is_some_and(|f| f.contains("tensorrt"))),
            "{u}"
        );
        // Each model's backend and precision, as the runtime's /healthz reports them.
        let backends = u["backends"].as_array().expect("backends");
        assert_eq!(backends.len(), 3, "{u}");
        assert!(
            backends.iter().all(|b| b
                .as_str()
                .is_some_and(|b| b.contains('=') && b.contains('/'))),
            "{u}"
        );
        assert!(u["last_seen_utc"].as_str().unwrap().ends_with('Z'), "{u}");
    }

    // 1.1.0 crashes before READY=1 on the canary: under systemd's Type=notify the restart
    // fails; exit 1, back on 1.0.0 there, reef-02 untouched.
    let p2 = t.package("1.1.0");
    t.fleet.unit("reef-01").set_fault("start-fails-1.1.0", true);
    let reef02_calls = t.fleet.unit("reef-02").calls("systemctl").len();
    let o = t.deploy(&["push", s(&p2), "--all", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(find(&v, "reef-01")["result"], "rolled-back");
    assert_eq!(find(&v, "reef-01")["failed_release"], "1.1.0");
    assert!(
        find(&v, "reef-01")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("failed because the control process exited")),
        "{v}"
    );
    assert_eq!(
        t.fleet.unit("reef-01").current_release().as_deref(),
        Some("1.0.0")
    );
    assert_eq!(find(&v, "reef-02")["result"], "skipped");
    assert!(
        stderr(&o).contains("2 of 2 unit(s) FAILED"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        t.fleet.unit("reef-02").calls("systemctl").len(),
        reef02_calls
    );
    let o = t.deploy(&["status"]);
    let table = stdout(&o);
    assert!(o.status.success(), "{table}{}", stderr(&o));
    let line = table.lines().find(|l| l.starts_with("reef-01")).unwrap();
    assert!(
        line.contains("1.0.0") && line.contains("rolled back from 1.1.0"),
        "{table}"
    );
    assert!(line.contains(" ok "), "{table}");
    assert!(
        line.contains("tract/fp32") && line.contains("FALLBACK"),
        "{table}"
    );

    // Fixed; --tag picks one unit, then the rest.
    t.fleet
        .unit("reef-01")
        .set_fault("start-fails-1.1.0", false);
    let o = t.deploy(&["push", s(&p2), "--tag", "south", "--canary", "0"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("updated 1.0.0 → 1.1.0"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("reef-01"), "{}", stdout(&o));
    assert_eq!(
        t.fleet.unit("reef-01").current_release().as_deref(),
        Some("1.0.0")
    );

    // Rollback with the health gate.
    let o = t.deploy(&["rollback", "reef-02"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("reef-02: updated 1.1.0 → 1.0.0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        t.fleet.unit("reef-02").current_release().as_deref(),
        Some("1.0.0")
    );

    bad_input(&t, &p2);

    // An unreachable unit: status still answers for the others, exits 1, and remembers when
    // the unit was last seen.
    t.fleet.stop_unit("reef-02");
    let o = t.deploy(&["status"]);
    assert_eq!(o.status.code(), Some(1));
    let table = stdout(&o);
    let line = table.lines().find(|l| l.starts_with("reef-02")).unwrap();
    assert!(
        line.contains("s ago") && line.contains("cannot reach"),
        "{table}"
    );
    assert!(
        stderr(&o).contains("1 of 2 unit(s) unreachable"),
        "{}",
        stderr(&o)
    );
}

/// Bad inventories, selections and packages exit 2 with the place named, touching no unit.
fn bad_input(t: &Setup, good: &Path) {
    let calls = |t: &Setup| -> Vec<usize> {
        UNITS
            .iter()
            .map(|n| t.fleet.unit(n).calls("systemctl").len())
            .collect()
    };
    let before = calls(t);

    let o = t.deploy(&["push", s(good), "--unit", "reef-09"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no unit `reef-09`"), "{}", stderr(&o));

    let o = t.deploy(&["push", s(good)]);
    assert_eq!(o.status.code(), Some(2), "no selection: {}", stderr(&o));

    // Tampered after signing: the host refuses it before any unit is contacted.
    let tampered = t
        .dir
        .path()
        .join("tampered")
        .join(good.file_name().unwrap());
    std::fs::create_dir_all(tampered.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    std::fs::copy(
        good.with_extension("zst.minisig"),
        tampered.with_extension("zst.minisig"),
    )
    .unwrap();
    let o = t.deploy(&["push", s(&tampered), "--all"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a package the fleet trusts"),
        "{}",
        stderr(&o)
    );

    let broken = t.dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&t.inventory)
        .unwrap()
        .replace("name: reef-02", "name: reef 02");
    std::fs::write(&broken, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_trident"))
        .args(["deploy", "--inventory", s(&broken), "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = std::fs::read_to_string(&broken)
        .unwrap()
        .lines()
        .position(|l| l.contains("reef 02"))
        .unwrap()
        + 1;
    assert!(
        stderr(&o).contains(&format!("broken.yaml:{line}:"))
            && stderr(&o).contains(": units[1].name"),
        "{}",
        stderr(&o)
    );

    assert_eq!(calls(t), before, "bad input touched a unit");
}
