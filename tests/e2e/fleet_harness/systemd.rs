//! The systemd stand-in against systemd 237's behaviour for a `Type=notify` service: a crash
//! before READY, the start limit, the watchdog, `NotifyAccess=main`, daemon-reload, stop and the
//! working directory, the no-frames fault, an unprivileged caller.

use std::fs;

use std::time::{Duration, Instant};

use trident_e2e::fleet::{TestFleet, TestUnit};

use super::support::*;

#[test]
fn a_crash_before_ready_fails_the_restart_and_systemd_restarts_the_service() {
    let (_tmp, fleet) = fleet_with_release();
    let unit = fleet.unit("reef-01");
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
    let (_tmp, fleet) = fleet_with_release();
    let unit = fleet.unit("reef-01");
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
    let (_tmp, fleet) = fleet_with_release();
    let unit = fleet.unit("reef-01");
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
    let (_tmp, fleet) = fleet_with_release();
    let unit = fleet.unit("reef-01");
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
    let (_tmp, fleet) = fleet_with_release();
    let unit = fleet.unit("reef-01");
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
    let (_tmp, fleet) = fleet_with_release();
    let unit = fleet.unit("reef-01");
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
    let (_tmp, fleet) = fleet_with_release();
    let unit = fleet.unit("reef-01");
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
