//! Rollouts over several loopback units: canaries go first and a failing canary stops the
//! rollout before any other unit is touched (its rollback shows in `status`); otherwise every
//! unit is updated with at most `max_parallel` in flight.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{TestSetup, unit};
use trident_deploy::inventory::Unit;
use trident_deploy::provision::{ProvisionKit, provision_with};
use trident_deploy::push::{Outcome, PushOptions, Report};
use trident_deploy::rollout::{
    Progress, RolloutOptions, UnitReport, UnitResult, Wave, each_unit, rollout,
};
use trident_deploy::status::{self, Health};

const UNITS: [&str; 3] = ["reef-01", "reef-02", "reef-03"];

fn opts(canary: usize, max_parallel: usize) -> RolloutOptions {
    RolloutOptions {
        canary,
        max_parallel,
        push: PushOptions {
            // A healthy fixture runtime answers within a few seconds; the failing canary
            // costs the whole timeout.
            health_timeout_s: 20,
            keep_releases: 3,
            ..Default::default()
        },
    }
}

fn manifest(t: &TestSetup, pkg: &std::path::Path) -> trident_core::package::Manifest {
    t.manifest(pkg)
}

/// Records when units start and finish, and the most in flight at once.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(Instant, String, &'static str, Wave)>>,
    in_flight: Mutex<(usize, usize)>,
}

impl Progress for Recorder {
    fn started(&self, unit: &Unit, wave: Wave) -> Arc<dyn Report + Send + Sync> {
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), unit.name.clone(), "start", wave));
        let mut f = self.in_flight.lock().unwrap();
        f.0 += 1;
        f.1 = f.1.max(f.0);
        Arc::new(())
    }
    fn finished(&self, report: &UnitReport) {
        if !matches!(report.result, UnitResult::Skipped(_)) {
            self.in_flight.lock().unwrap().0 -= 1;
        }
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), report.unit.clone(), "end", report.wave));
    }
}

#[test]
fn a_failing_canary_stops_the_rollout_and_a_good_release_reaches_every_unit() {
    let t = TestSetup::new(&UNITS);
    let units: Vec<Unit> = UNITS.iter().map(|n| unit(&t.fleet, n)).collect();
    let kit = ProvisionKit::prepare(&t.package, &t.public_key).unwrap();
    let ssh = t.ssh.clone();
    for r in each_unit(&units, 3, move |u| provision_with(&ssh, u, &kit, None)).unwrap() {
        r.unwrap();
    }

    // 1.0.0 everywhere: one canary, then the other two together.
    let m1 = manifest(&t, &t.package);
    let rec = Arc::new(Recorder::default());
    let reports = rollout(&t.ssh, &units, &t.package, &m1, &opts(1, 2), rec.clone()).unwrap();
    for r in &reports {
        assert!(r.result.succeeded(), "{}: {}", r.unit, r.result.describe());
    }
    assert_eq!(
        reports.iter().map(|r| r.wave).collect::<Vec<_>>(),
        [Wave::Canary, Wave::Main, Wave::Main]
    );
    {
        let events = rec.events.lock().unwrap();
        let canary_end = events
            .iter()
            .find(|e| e.1 == "reef-01" && e.2 == "end")
            .unwrap()
            .0;
        for e in events.iter().filter(|e| e.1 != "reef-01" && e.2 == "start") {
            assert!(e.0 >= canary_end, "{} started before the canary ended", e.1);
        }
        assert_eq!(
            rec.in_flight.lock().unwrap().1,
            2,
            "both main units in flight"
        );
    }
    for n in UNITS {
        assert_eq!(t.fleet.unit(n).current_release().as_deref(), Some("1.0.0"));
    }

    // 1.1.0 fails its health check on the canary: rolled back there, nobody else touched.
    let p2 = t.package_version("1.1.0");
    let m2 = manifest(&t, &p2);
    t.fleet.unit("reef-01").set_fault("unhealthy-1.1.0", true);
    let calls_before: Vec<usize> = UNITS
        .iter()
        .map(|n| t.fleet.unit(n).calls("systemctl").len())
        .collect();
    let reports = rollout(
        &t.ssh,
        &units,
        &p2,
        &m2,
        &opts(1, 2),
        Arc::new(trident_deploy::rollout::Quiet),
    )
    .unwrap();
    assert!(
        matches!(
            &reports[0].result,
            // The runtime exits before READY=1 (no camera): the restart itself fails, as under
            // systemd, and the unit is rolled back without waiting out the gate's timeout.
            UnitResult::Finished(Outcome::RolledBack { failed, to, why })
                if failed == "1.1.0" && to == "1.0.0"
                    && why.contains("Job for trident-edge.service failed because the control process exited")
        ),
        "{}",
        reports[0].result.describe()
    );
    for (i, n) in UNITS.iter().enumerate().skip(1) {
        assert!(
            matches!(&reports[i].result, UnitResult::Skipped(why) if why.contains("reef-01")),
            "{n}: {}",
            reports[i].result.describe()
        );
        let tu = t.fleet.unit(n);
        assert_eq!(tu.calls("systemctl").len(), calls_before[i], "{n} touched");
        assert!(!tu.path("/opt/trident/releases/1.1.0").exists());
        assert!(
            std::fs::read_dir(tu.path("/opt/trident/incoming"))
                .unwrap()
                .next()
                .is_none(),
            "{n}: nothing uploaded"
        );
        assert_eq!(tu.current_release().as_deref(), Some("1.0.0"));
        assert!(tu.service_running());
    }
    // `status` tells the story of the canary.
    let statuses = status::read_all(&t.ssh, &units, 3).unwrap();
    let canary = &statuses[0];
    assert!(canary.reachable, "{:?}", canary.error);
    assert_eq!(canary.release.as_deref(), Some("1.0.0"));
    assert_eq!(canary.deploy_state.as_deref(), Some("rolled-back"));
    assert_eq!(canary.failed_release.as_deref(), Some("1.1.0"));
    assert_eq!(canary.health, Health::Ok, "{:?}", canary.problems);
    assert_eq!(canary.power_mode.as_deref(), Some("MAXN"));
    assert!(canary.level.is_some() && canary.fps.is_some());
    assert!(canary.last_seen.is_some());
    for s in &statuses[1..] {
        assert_eq!(s.deploy_state.as_deref(), Some("committed"), "{}", s.unit);
        assert_eq!(s.health, Health::Ok, "{}: {:?}", s.unit, s.problems);
    }

    // Fixed: the same release goes out, canary first, to all three.
    t.fleet.unit("reef-01").set_fault("unhealthy-1.1.0", false);
    let reports = rollout(
        &t.ssh,
        &units,
        &p2,
        &m2,
        &opts(1, 4),
        Arc::new(trident_deploy::rollout::Quiet),
    )
    .unwrap();
    for r in &reports {
        assert!(
            matches!(&r.result, UnitResult::Finished(Outcome::Updated { to, .. }) if to == "1.1.0"),
            "{}: {}",
            r.unit,
            r.result.describe()
        );
    }

    // An unreachable unit is a status, not an error, and fails only its own push.
    t.fleet.stop_unit("reef-03");
    let s = status::read(&t.ssh, &units[2]);
    assert!(!s.reachable && s.health == Health::Unknown);
    assert!(s.error.unwrap().contains("cannot reach"));
    let p3 = t.package_version("1.2.0");
    let m3 = manifest(&t, &p3);
    let reports = rollout(
        &t.ssh,
        &units,
        &p3,
        &m3,
        &opts(1, 4),
        Arc::new(trident_deploy::rollout::Quiet),
    )
    .unwrap();
    assert!(reports[0].result.succeeded() && reports[1].result.succeeded());
    assert!(
        matches!(&reports[2].result, UnitResult::Failed(e) if e.is_unreachable()),
        "{}",
        reports[2].result.describe()
    );
}
