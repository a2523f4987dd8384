//! `provision` against loopback units: the layout, user, key, unit file, power mode and the
//! verifier land on a fresh unit; an incompatible unit is refused with nothing changed.

mod common;

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
