//! `trident deploy provision|push|status|rollback`: the fleet commands over trident-deploy.
//! Progress goes to stderr (one bar per unit); tables, JSON and the summary go to stdout. A
//! command exits 1 when any unit failed, 2 on bad input (inventory, selection, package).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use trident_deploy::inventory::{Fleet, Selection, Unit};
use trident_deploy::mender_module::ModuleSettings;
use trident_deploy::provision::{ProvisionKit, Provisioned, provision_with};
use trident_deploy::push::{Outcome, PushOptions, Report};
use trident_deploy::rollout::{self, RolloutOptions, UnitReport, UnitResult, Wave};
use trident_deploy::ssh::Ssh;
use trident_deploy::status::{self, Health, LastSeen, UnitStatus};
use trident_package::signature::PublicKey;
use trident_package::verify::{VerifyOptions, verify_package};

use crate::cli::{DeployArgs, DeployCommand, ProvisionArgs, PushArgs, RollbackArgs, StatusArgs};
use crate::ui;

pub fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let fleet = Fleet::load(&args.inventory)?;
    let ssh = Ssh {
        config: fleet.ssh_config.clone(),
        ..Default::default()
    }
    .share_connections()?;
    match args.command {
        DeployCommand::Provision(a) => provision_units(&fleet, &ssh, a),
        DeployCommand::Push(a) => push(&fleet, &ssh, a),
        DeployCommand::Status(a) => show_status(&fleet, &ssh, a),
        DeployCommand::Rollback(a) => roll_back(&fleet, &ssh, a),
    }
}

/// `$TRIDENT_STATE_DIR`, else `$XDG_STATE_HOME/trident`, else `~/.local/state/trident`.
fn state_dir() -> PathBuf {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("TRIDENT_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("trident")))
        .or_else(|| env("HOME").map(|h| h.join(".local/state/trident")))
        .unwrap_or_else(|| PathBuf::from(".trident-state"))
}

/// Opens the last-seen record, lets `update` read and change it, and saves it. Last-seen is a
/// convenience: failing to keep it is a warning, never a failed command.
fn with_last_seen(update: impl FnOnce(&mut LastSeen)) {
    let path = state_dir().join("last-seen.json");
    let result = LastSeen::open(&path).and_then(|mut record| {
        update(&mut record);
        record.save()
    });
    if let Err(e) = result {
        tracing::warn!("cannot keep the last-seen record: {e}");
    }
}

/// Records that `units` answered just now.
fn seen(units: impl IntoIterator<Item = String>) {
    let now = status::unix_now();
    with_last_seen(|record| {
        for u in units {
            record.record(&u, now);
        }
    });
}

fn trusted_key(fleet: &Fleet) -> anyhow::Result<PublicKey> {
    PublicKey::from_file(&fleet.trusted_key).with_context(|| {
        format!(
            "{}: trusted_key {}",
            fleet.path.display(),
            fleet.trusted_key.display()
        )
    })
}

fn provision_units(fleet: &Fleet, ssh: &Ssh, a: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let units = fleet.select(&Selection {
        units: a.names,
        tags: a.tags,
    })?;
    // Verified and unpacked once, before any unit is touched: a package the units would
    // refuse stops here.
    let kit = Arc::new(
        ProvisionKit::prepare(&a.package, &fleet.trusted_key)
            .with_context(|| format!("{} is not a package the fleet trusts", a.package.display()))?
            .with_module_settings(ModuleSettings {
                health_timeout_s: fleet.health.timeout_s,
                min_frames: fleet.health.min_frames,
                keep_releases: fleet.keep_releases,
                ..ModuleSettings::default()
            }),
    );
    let bars = MultiProgress::new();
    let ssh = ssh.clone();
    let parallel = a.max_parallel.unwrap_or(fleet.waves.max_parallel);
    let wait = a.wait;
    let results = rollout::each_unit(&units, parallel, move |u| {
        let bar = bars.add(spinner(&u.name));
        bar.set_message("provisioning");
        let r = provision_with(&ssh, u, &kit, wait);
        bar.finish_with_message(match &r {
            Ok(_) => "provisioned".to_string(),
            Err(e) => format!("FAILED: {e}"),
        });
        r
    })?;

    let mut rows = Vec::new();
    let mut failed = 0;
    let mut answered = Vec::new();
    for (u, r) in units.iter().zip(&results) {
        match r {
            Ok(p) => {
                answered.push(u.name.clone());
                rows.push(facts_row(u, p));
                for w in &p.warnings {
                    eprintln!("warning: {}: {w}", u.name);
                }
            }
            Err(e) => {
                failed += 1;
                if !e.is_unreachable() {
                    answered.push(u.name.clone());
                }
                let mut row = vec![u.name.clone()];
                row.extend(std::iter::repeat_n("-".to_string(), 7));
                row.push(format!("FAILED: {e}"));
                rows.push(row);
            }
        }
    }
    seen(answered);
    print!(
        "{}",
        ui::text_table(
            &[
                "unit",
                "arch",
                "L4T",
                "JetPack",
                "TensorRT",
                "GStreamer",
                "disk free",
                "memory",
                "result"
            ],
            &rows
        )
    );
    finish(failed, units.len(), "provisioned")
}

fn facts_row(u: &Unit, p: &Provisioned) -> Vec<String> {
    let f = &p.before;
    let d = f.device.as_ref();
    let opt = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".into());
    vec![
        u.name.clone(),
        f.arch.clone(),
        opt(d.and_then(|d| d.l4t.as_ref())),
        opt(d.and_then(|d| d.jetpack.as_ref())),
        opt(d.and_then(|d| d.tensorrt.as_ref())),
        opt(f.gstreamer.as_ref()),
        f.disk_avail_kb
            .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "-".into()),
        f.mem_total_kb
            .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "-".into()),
        match &p.doctor {
            Some(d) => format!("provisioned ({}); doctor: {d}", u.power_mode.label()),
            None => format!("provisioned ({})", u.power_mode.label()),
        },
    ]
}

fn push(fleet: &Fleet, ssh: &Ssh, a: PushArgs) -> anyhow::Result<ExitCode> {
    let units = fleet.select(&Selection {
        units: a.select.units,
        tags: a.select.tags,
    })?;
    // The package is checked here with the fleet's key first: a tampered or foreign package
    // stops before any unit is touched (each unit verifies it again before installing).
    let key = trusted_key(fleet)?;
    let manifest = verify_package(
        &a.package,
        &VerifyOptions {
            public_key: Some(&key),
            ..Default::default()
        },
        None,
    )
    .with_context(|| format!("{} is not a package the fleet trusts", a.package.display()))?
    .manifest;
    let opts = RolloutOptions {
        canary: a.canary.unwrap_or(fleet.waves.canary),
        max_parallel: a.max_parallel.unwrap_or(fleet.waves.max_parallel),
        push: PushOptions {
            health_timeout_s: a.health_timeout.unwrap_or(fleet.health.timeout_s),
            min_frames: fleet.health.min_frames,
            keep_releases: fleet.keep_releases,
            allow_downgrade: a.allow_downgrade,
            lock_wait: a.wait,
            ..Default::default()
        },
    };
    if opts.max_parallel == 0 {
        anyhow::bail!(trident_deploy::Error::inventory(
            "--max-parallel",
            "must be at least 1"
        ));
    }
    let size = std::fs::metadata(&a.package)
        .with_context(|| format!("cannot read {}", a.package.display()))?
        .len();
    tracing::info!(
        "pushing {} {} to {} unit(s): {} canary, {} in flight",
        manifest.name,
        manifest.version,
        units.len(),
        opts.canary.min(units.len()),
        opts.max_parallel
    );
    let progress = Arc::new(Bars {
        bars: MultiProgress::new(),
        size,
        live: Mutex::default(),
    });
    let reports = rollout::rollout(ssh, &units, &a.package, &manifest, &opts, progress)?;
    seen(
        reports
            .iter()
            .filter(|r| match &r.result {
                UnitResult::Finished(_) => true,
                UnitResult::Failed(e) => !e.is_unreachable(),
                UnitResult::Skipped(_) => false,
            })
            .map(|r| r.unit.clone()),
    );
    if a.json {
        let json: Vec<_> = reports.iter().map(report_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|r| {
                vec![
                    r.unit.clone(),
                    r.wave.label().to_string(),
                    format!("{:.1} s", r.elapsed.as_secs_f64()),
                    r.result.describe(),
                ]
            })
            .collect();
        print!(
            "{}",
            ui::text_table(&["unit", "wave", "time", "result"], &rows)
        );
    }
    let failed = reports.iter().filter(|r| !r.result.succeeded()).count();
    finish(
        failed,
        reports.len(),
        &format!("on {} {}", manifest.name, manifest.version),
    )
}

fn report_json(r: &UnitReport) -> serde_json::Value {
    let (result, from, to, failed, detail) = match &r.result {
        UnitResult::Finished(Outcome::Updated { from, to, doctor }) => (
            "updated",
            from.clone(),
            Some(to.clone()),
            None,
            doctor.clone(),
        ),
        UnitResult::Finished(Outcome::AlreadyCurrent(v)) => {
            ("already-current", None, Some(v.clone()), None, None)
        }
        UnitResult::Finished(Outcome::RolledBack { failed, to, why }) => (
            "rolled-back",
            None,
            Some(to.clone()),
            Some(failed.clone()),
            Some(why.clone()),
        ),
        UnitResult::Failed(e) => ("failed", None, None, None, Some(e.to_string())),
        UnitResult::Skipped(why) => ("skipped", None, None, None, Some(why.clone())),
    };
    serde_json::json!({
        "unit": r.unit,
        "wave": r.wave.label(),
        "result": result,
        "from": from,
        "to": to,
        "failed_release": failed,
        "detail": detail,
        "elapsed_s": r.elapsed.as_secs_f64(),
    })
}

fn show_status(fleet: &Fleet, ssh: &Ssh, a: StatusArgs) -> anyhow::Result<ExitCode> {
    let units = fleet.select(&Selection {
        units: a.units,
        tags: a.tags,
    })?;
    let mut statuses = status::read_all(ssh, &units, fleet.waves.max_parallel.max(8))?;
    with_last_seen(|record| {
        for s in &mut statuses {
            match s.last_seen {
                Some(t) => record.record(&s.unit, t),
                None => s.last_seen = record.get(&s.unit),
            }
        }
    });
    if a.json {
        let json: Vec<_> = statuses
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).expect("status serialises");
                v["last_seen_utc"] = s.last_seen.map(status::rfc3339).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let now = status::unix_now();
        let rows: Vec<Vec<String>> = statuses.iter().map(|s| status_row(s, now)).collect();
        print!(
            "{}",
            ui::text_table(
                &[
                    "unit",
                    "release",
                    "health",
                    "fps",
                    "detections",
                    "backend",
                    "level",
                    "power",
                    "last seen",
                    "note"
                ],
                &rows
            )
        );
    }
    // Status reports; it fails only when a unit could not be read at all.
    let unreachable = statuses.iter().filter(|s| !s.reachable).count();
    if unreachable > 0 {
        eprintln!("{unreachable} of {} unit(s) unreachable", statuses.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn status_row(s: &UnitStatus, now: u64) -> Vec<String> {
    let dash = || "-".to_string();
    let note = if let Some(e) = &s.error {
        e.clone()
    } else {
        let mut notes = Vec::new();
        match s.deploy_state.as_deref() {
            Some("rolled-back") => notes.push(format!(
                "rolled back from {}",
                s.failed_release.as_deref().unwrap_or("?")
            )),
            Some("switching" | "rolling-back") if s.locked_by.is_none() => {
                notes.push("deploy interrupted: the next push or rollback finishes it".into())
            }
            _ => {}
        }
        if let Some(who) = &s.locked_by {
            notes.push(format!("deploy in progress: {who}"));
        }
        match s.release_state.as_deref() {
            Some("good") | None => {}
            Some("pending") => notes.push("release not through its gate yet".into()),
            Some(other) => notes.push(format!("release marked {other}")),
        }
        if s.health != Health::Ok {
            notes.extend(s.problems.iter().cloned());
        }
        notes.extend(s.warnings.iter().map(|w| format!("WARNING {w}")));
        // A unit whose profile asks for the GPU and that runs a model on a later backend.
        if let Some(first) = s.fallbacks.first() {
            let more = match s.fallbacks.len() {
                1 => String::new(),
                n => format!(" (and {} more models)", n - 1),
            };
            notes.push(format!("FALLBACK {first}{more}"));
        }
        notes.join("; ")
    };
    vec![
        s.unit.clone(),
        s.release.clone().unwrap_or_else(dash),
        s.health.label().to_string(),
        s.fps.map(|f| format!("{f:.1}")).unwrap_or_else(dash),
        match (s.detections, s.frames) {
            (Some(d), Some(f)) => format!("{d} in {f} frames"),
            (Some(d), None) => d.to_string(),
            _ => dash(),
        },
        backend_cell(&s.backends),
        match (s.level, &s.level_name) {
            (Some(l), Some(n)) => format!("{l} {n}"),
            (Some(l), None) => l.to_string(),
            _ => dash(),
        },
        match (&s.power_mode, s.power_w) {
            (Some(m), Some(w)) => format!("{m} {w:.1} W"),
            (Some(m), None) => m.clone(),
            (None, Some(w)) => format!("{w:.1} W"),
            (None, None) => dash(),
        },
        s.last_seen
            .map(|t| status::ago(t, now))
            .unwrap_or_else(|| "never".into()),
        note,
    ]
}

/// `tensorrt/fp16` when every model runs the same way, else each model's (`balanced=tract/fp32, …`).
fn backend_cell(backends: &[String]) -> String {
    let ways: Vec<&str> = backends
        .iter()
        .map(|b| b.split_once('=').map_or(b.as_str(), |(_, way)| way))
        .collect();
    match ways.first() {
        None => "-".into(),
        Some(first) if ways.iter().all(|w| w == first) => (*first).to_string(),
        Some(_) => backends.join(", "),
    }
}

fn roll_back(fleet: &Fleet, ssh: &Ssh, a: RollbackArgs) -> anyhow::Result<ExitCode> {
    let unit = fleet
        .select(&Selection {
            units: vec![a.unit.clone()],
            tags: vec![],
        })?
        .remove(0);
    let opts = PushOptions {
        health_timeout_s: a.health_timeout.unwrap_or(fleet.health.timeout_s),
        min_frames: fleet.health.min_frames,
        keep_releases: fleet.keep_releases,
        lock_wait: a.wait,
        ..Default::default()
    };
    let bar = spinner(&unit.name);
    bar.set_message("rolling back");
    let result = trident_deploy::recover::rollback(ssh, &unit, &opts);
    bar.finish_and_clear();
    match &result {
        Err(e) if e.is_unreachable() => {}
        _ => seen([unit.name.clone()]),
    }
    let outcome = result?;
    let line = UnitResult::Finished(outcome.clone()).describe();
    println!("{}: {line}", unit.name);
    Ok(match outcome {
        Outcome::Updated { .. } | Outcome::AlreadyCurrent(_) => ExitCode::SUCCESS,
        Outcome::RolledBack { .. } => ExitCode::from(1),
    })
}

/// The closing line; exit 1 when any unit failed.
fn finish(failed: usize, total: usize, what: &str) -> anyhow::Result<ExitCode> {
    if failed == 0 {
        eprintln!("{total} of {total} unit(s) {what}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{failed} of {total} unit(s) FAILED; {} {what}",
            total - failed
        );
        Ok(ExitCode::from(1))
    }
}

fn spinner(unit: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{prefix:<14} {spinner} {elapsed:>4} {wide_msg}")
            .expect("valid template"),
    );
    bar.set_prefix(unit.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One progress bar per unit under a [`MultiProgress`] (hidden when stderr is not a terminal).
struct Bars {
    bars: MultiProgress,
    size: u64,
    live: Mutex<HashMap<String, ProgressBar>>,
}

struct UnitBar(ProgressBar);

impl Report for UnitBar {
    fn step(&self, step: &str) {
        tracing::debug!("{}: {step}", self.0.prefix());
        self.0.set_message(step.to_string());
    }
    fn uploaded(&self, sent: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(sent);
    }
}

impl rollout::Progress for Bars {
    fn started(&self, unit: &Unit, wave: Wave) -> Arc<dyn Report + Send + Sync> {
        let bar = self.bars.add(ProgressBar::new(self.size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:<14} {msg:<10} [{bar:24}] {bytes:>9}/{total_bytes:<9} {elapsed:>4}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(match wave {
            Wave::Canary => format!("{} *", unit.name),
            Wave::Main => unit.name.clone(),
        });
        self.live
            .lock()
            .expect("not poisoned")
            .insert(unit.name.clone(), bar.clone());
        Arc::new(UnitBar(bar))
    }

    fn finished(&self, report: &UnitReport) {
        if let Some(bar) = self.live.lock().expect("not poisoned").remove(&report.unit) {
            bar.finish_and_clear();
        }
        let line = format!("{:<14} {}", report.unit, report.result.describe());
        // Above the live bars, so the record stays when the bars are cleared.
        if self.bars.println(&line).is_err() || self.bars.is_hidden() {
            tracing::info!("{line}");
        }
    }
}
