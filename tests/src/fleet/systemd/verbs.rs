//! `systemctl`'s verbs and options as the stand-in answers them, with systemctl 237's messages
//! and exit statuses (`start` of an unknown unit: 5; `is-active` not active: 3; …).

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Reply;
use super::service::{Service, Sub};
use super::start::log_tail;
use super::unit_file::{self, LoadError, REMOTE_PATH, UNIT};

#[derive(Default)]
struct Options {
    quiet: bool,
    no_block: bool,
    now: bool,
    value: bool,
    properties: Vec<String>,
    lines: usize,
    no_reload: bool,
}

/// Answers one `systemctl ARGS…` (the argv the fake script got).
pub(crate) fn dispatch(svc: &mut Service, mut reply: Reply, args: &[String]) {
    let mut o = Options {
        lines: 10,
        ..Options::default()
    };
    let mut verb: Option<&str> = None;
    let mut units: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut takes = |name: &str, inline: Option<&str>| -> Option<String> {
            inline
                .map(str::to_string)
                .or_else(|| it.next().cloned())
                .or_else(|| {
                    reply.err(format!("systemctl: option '{name}' requires an argument"));
                    None
                })
        };
        match a.as_str() {
            "-q" | "--quiet" => o.quiet = true,
            "--no-block" => o.no_block = true,
            "--now" => o.now = true,
            "--value" => o.value = true,
            "--no-reload" => o.no_reload = true,
            "--no-pager" | "--system" | "-l" | "--full" | "--no-legend" | "--no-ask-password" => {}
            "-p" | "--property" => match takes(a, None) {
                Some(p) => o.properties.extend(p.split(',').map(String::from)),
                None => return reply.finish(1),
            },
            "-n" | "--lines" => match takes(a, None).and_then(|n| n.parse().ok()) {
                Some(n) => o.lines = n,
                None => return reply.finish(1),
            },
            s if s.starts_with("--property=") => o
                .properties
                .extend(s["--property=".len()..].split(',').map(String::from)),
            s if s.starts_with("-p") && s.len() > 2 => {
                o.properties.extend(s[2..].split(',').map(String::from))
            }
            s if s.starts_with("--lines=") => match s["--lines=".len()..].parse() {
                Ok(n) => o.lines = n,
                Err(_) => {
                    reply.err(format!("Failed to parse lines '{s}'"));
                    return reply.finish(1);
                }
            },
            s if s.starts_with('-') => {
                reply.err(format!("systemctl: unrecognized option '{s}'"));
                return reply.finish(1);
            }
            s if verb.is_none() => verb = Some(s),
            s => units.push(if s.contains('.') {
                s.to_string()
            } else {
                format!("{s}.service")
            }),
        }
    }
    let Some(verb) = verb else {
        reply.err("systemctl (fleet stand-in): listing units is not modelled; give a verb");
        return reply.finish(1);
    };
    let needs_units = !matches!(verb, "daemon-reload" | "reset-failed" | "status" | "show");
    if needs_units && units.is_empty() {
        reply.err("Too few arguments.");
        return reply.finish(1);
    }
    units.dedup();
    let privileged = matches!(
        verb,
        "start"
            | "stop"
            | "restart"
            | "try-restart"
            | "reload-or-restart"
            | "enable"
            | "disable"
            | "daemon-reload"
            | "reset-failed"
    );
    if privileged && reply.caller_uid != Some(0) {
        // What polkit answers a non-root caller without an agent (an SSH command).
        let what = match verb {
            "daemon-reload" => "Failed to reload daemon".to_string(),
            "enable" | "disable" => format!("Failed to {verb} unit"),
            "reset-failed" => format!("Failed to reset failed state of unit {UNIT}"),
            _ => format!(
                "Failed to {verb} {}",
                units.first().map_or(UNIT, String::as_str)
            ),
        };
        reply.err(format!("{what}: Interactive authentication required."));
        if !matches!(
            verb,
            "daemon-reload" | "enable" | "disable" | "reset-failed"
        ) {
            reply.err(format!(
                "See system logs and 'systemctl status {}' for details.",
                units.first().map_or(UNIT, String::as_str)
            ));
        }
        return reply.finish(1);
    }
    let ours = units.iter().any(|u| u == UNIT);
    let others: Vec<String> = units.iter().filter(|u| *u != UNIT).cloned().collect();
    match verb {
        "start" | "restart" | "try-restart" | "reload-or-restart" | "stop" => {
            for u in &others {
                let (v, why) = if verb == "stop" {
                    ("stop", "not loaded")
                } else {
                    (verb, "not found")
                };
                reply.err(format!("Failed to {v} {u}: Unit {u} {why}."));
                reply.set_rc(5);
            }
            if !ours {
                return reply.finish(0);
            }
            job(svc, reply, verb, &o)
        }
        "is-active" | "is-failed" => {
            let failed_verb = verb == "is-failed";
            let mut hit = false;
            for u in &units {
                let state = if u == UNIT {
                    svc.state.active()
                } else {
                    "inactive"
                };
                hit |= if failed_verb {
                    state == "failed"
                } else {
                    state == "active"
                };
                if !o.quiet {
                    reply.out(state);
                }
            }
            // systemctl: 0 when at least one of the units is (active | failed).
            reply.finish(if hit {
                0
            } else if failed_verb {
                1
            } else {
                3
            })
        }
        "status" => status(svc, reply, &units, &o),
        "show" => show(svc, reply, &units, &o),
        "enable" | "disable" => enable(svc, reply, verb, &units, &o),
        "is-enabled" => {
            for u in &units {
                match (u == UNIT)
                    .then(|| unit_file::install_targets(&svc.ctx.root))
                    .flatten()
                {
                    None => {
                        reply.err(format!(
                            "Failed to get unit file state for {u}: No such file or directory"
                        ));
                        reply.set_rc(1);
                    }
                    Some(_) if enabled_marker(svc).exists() => {
                        if !o.quiet {
                            reply.out("enabled");
                        }
                    }
                    Some(_) => {
                        if !o.quiet {
                            reply.out("disabled");
                        }
                        reply.set_rc(1);
                    }
                }
            }
            reply.finish(0)
        }
        "daemon-reload" => match svc.reload() {
            Ok(()) => reply.finish(0),
            Err(why) => {
                // systemd 237 reloads and logs the problem; the stand-in says it where the
                // caller sees it and fails.
                reply.err(format!("{UNIT}: bad unit file: {why}"));
                reply.finish(1)
            }
        },
        "reset-failed" => {
            for u in &others {
                reply.err(format!(
                    "Failed to reset failed state of unit {u}: Unit {u} not loaded."
                ));
                reply.set_rc(1);
            }
            if ours || units.is_empty() {
                svc.reset_failed();
            }
            reply.finish(0)
        }
        _ => {
            reply.err(format!("Unknown operation '{verb}'."));
            reply.finish(1)
        }
    }
}

fn warn_if_changed(svc: &Service, reply: &mut Reply) {
    if svc.need_reload() {
        reply.err(format!(
            "Warning: The unit file, source configuration file or drop-ins of {UNIT} changed on disk. Run 'systemctl daemon-reload' to reload units."
        ));
    }
}

/// start / stop / restart / try-restart of trident-edge.service.
fn job(svc: &mut Service, mut reply: Reply, verb: &str, o: &Options) {
    let verb = if verb == "reload-or-restart" {
        "restart"
    } else {
        verb
    };
    let loaded = svc.unit().is_some();
    let idle = matches!(svc.state, Sub::Dead | Sub::Failed);
    match (&svc.load, verb) {
        (Err(LoadError::NotFound), "stop") if idle => {
            reply.err(format!("Failed to stop {UNIT}: Unit {UNIT} not loaded."));
            return reply.finish(5);
        }
        (Err(LoadError::NotFound), v) if v != "stop" => {
            reply.err(format!("Failed to {verb} {UNIT}: Unit {UNIT} not found."));
            return reply.finish(5);
        }
        (Err(LoadError::Bad(_)), v) if v != "stop" => {
            reply.err(format!(
                "Failed to {verb} {UNIT}: Unit {UNIT} is not loaded properly: Invalid argument.\nSee system logs and 'systemctl status {UNIT}' for details."
            ));
            // systemctl's exit status for org.freedesktop.systemd1.LoadFailed.
            return reply.finish(6);
        }
        _ => {}
    }
    if loaded {
        warn_if_changed(svc, &mut reply);
    }
    match verb {
        "start" => svc.start(reply, o.no_block),
        "stop" => svc.stop(reply, o.no_block),
        "restart" => svc.restart(reply, o.no_block),
        _ => {
            // try-restart: only what is running or starting is restarted.
            if matches!(
                svc.state,
                Sub::Running | Sub::StartPre | Sub::Start | Sub::StartPost
            ) {
                svc.restart(reply, o.no_block)
            } else {
                reply.finish(0)
            }
        }
    }
}

fn enabled_marker(svc: &Service) -> std::path::PathBuf {
    svc.ctx.test_file("enabled").join("trident-edge")
}

fn enable(svc: &mut Service, mut reply: Reply, verb: &str, units: &[String], o: &Options) {
    let wants = "/etc/systemd/system/multi-user.target.wants/trident-edge.service";
    for u in units {
        let targets = (u == UNIT)
            .then(|| unit_file::install_targets(&svc.ctx.root))
            .flatten();
        let Some(targets) = targets else {
            reply.err(format!(
                "Failed to {verb} unit: Unit file {u} does not exist."
            ));
            return reply.finish(1);
        };
        let marker = enabled_marker(svc);
        if verb == "enable" {
            if targets.is_empty() {
                reply.err(
                    "The unit files have no installation config (WantedBy, RequiredBy, Also, Alias\n\
                     settings in the [Install] section, and DefaultInstance for template units).\n\
                     This means they are not meant to be enabled using systemctl.",
                );
                continue;
            }
            if !marker.exists() {
                let _ = fs::create_dir_all(marker.parent().unwrap());
                let _ = fs::write(&marker, "");
                reply.err(format!("Created symlink {wants} → {REMOTE_PATH}."));
            }
        } else if marker.exists() {
            let _ = fs::remove_file(&marker);
            reply.err(format!("Removed {wants}."));
        }
    }
    // systemctl 237 reloads the manager after enable/disable (unless --no-reload).
    if !o.no_reload
        && let Err(why) = svc.reload()
    {
        reply.err(format!("{UNIT}: bad unit file: {why}"));
        return reply.finish(1);
    }
    if !o.now {
        return reply.finish(0);
    }
    if verb == "enable" {
        job(svc, reply, "start", o)
    } else {
        job(svc, reply, "stop", o)
    }
}

/// `Sat 2025-12-06 21:53:00 UTC`.
fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    format!(
        "{wd} {y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn ago(t: SystemTime) -> String {
    let s = t.elapsed().unwrap_or_default().as_secs();
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}min {}s ago", s / 60, s % 60),
        _ => format!("{}h {}min ago", s / 3600, s % 3600 / 60),
    }
}

fn status(svc: &Service, mut reply: Reply, units: &[String], o: &Options) {
    let units: Vec<String> = if units.is_empty() {
        vec![UNIT.to_string()]
    } else {
        units.to_vec()
    };
    for u in &units {
        if u != UNIT {
            reply.err(format!("Unit {u} could not be found."));
            reply.set_rc(4);
            continue;
        }
        let unit = svc.unit();
        let dot = match svc.state.active() {
            "active" => "●",
            "failed" => "●",
            _ => "○",
        };
        let enabled = if enabled_marker(svc).exists() {
            "enabled"
        } else {
            "disabled"
        };
        match (&svc.load, unit) {
            (_, Some(unit)) => {
                reply.out(format!("{dot} {UNIT} - {}", unit.description));
                reply.out(format!(
                    "   Loaded: loaded ({REMOTE_PATH}; {enabled}; vendor preset: enabled)"
                ));
                if !unit.dropins.is_empty() {
                    reply.out(format!("  Drop-In: {REMOTE_PATH}.d"));
                    let names: Vec<String> = unit
                        .dropins
                        .iter()
                        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
                        .collect();
                    reply.out(format!("           └─{}", names.join(", ")));
                }
            }
            (Err(LoadError::Bad(why)), None) => {
                reply.out(format!("{dot} {UNIT}"));
                reply.out(format!(
                    "   Loaded: error (Reason: Invalid argument): {why}"
                ));
            }
            _ => {
                reply.out(format!("{dot} {UNIT}"));
                reply.out("   Loaded: not-found (Reason: No such file or directory)");
            }
        }
        let result = match svc.state {
            Sub::Failed | Sub::AutoRestart => format!(" (Result: {})", svc.result.name()),
            _ => String::new(),
        };
        let since = svc
            .since
            .map(|t| format!(" since {}; {}", timestamp(t), ago(t)))
            .unwrap_or_default();
        reply.out(format!(
            "   Active: {} ({}){result}{since}",
            svc.state.active(),
            svc.state.name()
        ));
        match (svc.main, svc.main_exit) {
            (Some(pid), _) => reply.out(format!(" Main PID: {pid} (trident-edge)")),
            (None, Some((pid, exit))) => reply.out(format!(" Main PID: {pid} ({})", exit.shown())),
            _ => {}
        }
        if let Some(s) = &svc.status_text {
            reply.out(format!("   Status: \"{s}\""));
        }
        if o.lines > 0 {
            reply.out("");
            for l in log_tail(&svc.ctx, o.lines) {
                reply.out(l);
            }
        }
        if svc.unit().is_some() {
            warn_if_changed(svc, &mut reply);
        }
        if svc.state != Sub::Running {
            reply.set_rc(3);
        }
    }
    reply.finish(0)
}

/// Properties in the order `systemctl show` prints them (D-Bus order: the service's, then the
/// unit's), whatever order `-p` named them in.
const PROPERTIES: &[&str] = &[
    "Type",
    "Restart",
    "NotifyAccess",
    "RestartUSec",
    "TimeoutStartUSec",
    "TimeoutStopUSec",
    "WatchdogUSec",
    "MainPID",
    "StatusText",
    "Result",
    "NRestarts",
    "ExecMainStartTimestamp",
    "ExecMainPID",
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "FragmentPath",
    "DropInPaths",
    "UnitFileState",
    "InvocationID",
    "NeedDaemonReload",
];

fn property(svc: &Service, name: &str, unit_name: &str) -> String {
    use super::syntax::format_timespan as span;
    let ours = unit_name == UNIT;
    let unit = svc.unit().filter(|_| ours);
    match name {
        "Id" => unit_name.to_string(),
        "LoadState" => match (&svc.load, ours) {
            (Ok(_), true) => "loaded".into(),
            (Err(LoadError::Bad(_)), true) => "error".into(),
            _ => "not-found".into(),
        },
        "ActiveState" if ours => svc.state.active().into(),
        "ActiveState" => "inactive".into(),
        "SubState" if ours => svc.state.name().into(),
        "SubState" => "dead".into(),
        "MainPID" => svc.main.filter(|_| ours).unwrap_or(0).to_string(),
        "ExecMainPID" => svc
            .main_exit
            .map(|(p, _)| p)
            .or(svc.main)
            .filter(|_| ours)
            .unwrap_or(0)
            .to_string(),
        "NRestarts" => if ours { svc.n_restarts } else { 0 }.to_string(),
        "Result" => if ours { svc.result.name() } else { "success" }.into(),
        "ExecMainStartTimestamp" => svc
            .main_started
            .filter(|_| ours)
            .map(timestamp)
            .unwrap_or_default(),
        "StatusText" => svc.status_text.clone().filter(|_| ours).unwrap_or_default(),
        "InvocationID" => {
            if ours {
                svc.invocation.clone()
            } else {
                String::new()
            }
        }
        "FragmentPath" => unit.map(|_| REMOTE_PATH.to_string()).unwrap_or_default(),
        "DropInPaths" => unit
            .map(|u| {
                u.dropins
                    .iter()
                    .map(|d| {
                        format!(
                            "{REMOTE_PATH}.d/{}",
                            d.file_name().unwrap().to_string_lossy()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        "NeedDaemonReload" => if ours && svc.need_reload() {
            "yes"
        } else {
            "no"
        }
        .into(),
        "UnitFileState" if ours && unit_file::install_targets(&svc.ctx.root).is_some() => {
            if enabled_marker(svc).exists() {
                "enabled"
            } else {
                "disabled"
            }
            .into()
        }
        "UnitFileState" => String::new(),
        "Type" => unit.map(|_| "notify").unwrap_or("simple").into(),
        "Restart" => unit
            .map(|u| {
                format!("{:?}", u.restart)
                    .to_lowercase()
                    .replace("onfailure", "on-failure")
            })
            .unwrap_or_else(|| "no".into()),
        "NotifyAccess" => unit
            .map(|u| format!("{:?}", u.notify_access).to_lowercase())
            .unwrap_or_else(|| "none".into()),
        "RestartUSec" => span(unit.map(|u| u.restart_sec)),
        "TimeoutStartUSec" => unit
            .map(|u| span(u.timeout_start))
            .unwrap_or_else(|| "1min 30s".into()),
        "TimeoutStopUSec" => unit
            .map(|u| span(u.timeout_stop))
            .unwrap_or_else(|| "1min 30s".into()),
        "WatchdogUSec" => span(Some(unit.and_then(|u| u.watchdog).unwrap_or_default())),
        _ => String::new(),
    }
}

fn show(svc: &Service, mut reply: Reply, units: &[String], o: &Options) {
    let units: Vec<String> = if units.is_empty() {
        vec![UNIT.to_string()]
    } else {
        units.to_vec()
    };
    for (i, u) in units.iter().enumerate() {
        if i > 0 {
            reply.out("");
        }
        for p in PROPERTIES {
            if !o.properties.is_empty() && !o.properties.iter().any(|q| q == p) {
                continue;
            }
            let v = property(svc, p, u);
            if o.value {
                reply.out(v);
            } else {
                reply.out(format!("{p}={v}"));
            }
        }
    }
    reply.finish(0)
}
