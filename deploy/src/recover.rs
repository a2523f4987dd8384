//! The steps after a release is installed — switch, gate, commit, rollback — and how a deploy
//! that stopped between them is finished or undone.
//!
//! Recovery compares the journal with what `current` really points at, because the journal is
//! written before the switch: `switching` with `current` still on the old release means the
//! deploy died before its switch (undo: nothing ran); with `current` on the target, after it
//! (finish: restart if needed, gate, then commit or roll back). `rolling-back` is finished the
//! same way towards its target.

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::push::{Outcome, PushOptions, StopAt};
use crate::ssh::Ssh;
use crate::unit_facts::{self, UnitFacts};
use crate::unit_scripts::{self, GATE_STALE_PROCESS};

/// Exit status of a unit script stopped by fault injection.
const STOPPED: i32 = 86;

/// What a release's gate said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Passed,
    Failed(String),
}

/// A switch that did not complete.
pub struct SwitchFailed {
    pub error: Error,
    /// Stopped by fault injection: as a killed deploy, nothing more is done.
    pub stopped: bool,
}

/// Journal, switch and restart towards `target`; `previous` is what to fall back to.
pub fn switch(
    ssh: &Ssh,
    unit: &Unit,
    target: &str,
    previous: &str,
    opts: &PushOptions,
) -> std::result::Result<(), SwitchFailed> {
    let stop = StopAt::word(opts.stop_at);
    let r = ssh
        .script(
            unit,
            "switch",
            &unit_scripts::switch(),
            &[&unit.root, target, previous, stop],
        )
        .map_err(|error| SwitchFailed {
            error,
            stopped: false,
        })?;
    if r.ok() {
        return Ok(());
    }
    // systemctl says why on the first of its two lines ("Job for trident-edge.service failed
    // because …", then "See \"systemctl status …\" … for details.").
    let why = r
        .stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Job for"))
        .or_else(|| crate::ssh::last_line(&r.stderr))
        .unwrap_or("no message")
        .to_string();
    Err(SwitchFailed {
        stopped: r.status == Some(STOPPED),
        error: Error::remote(&unit.name, "switch", why),
    })
}

/// After [`switch`] failed: reads where the unit is and undoes it — `current` back on
/// `previous` with its service running. Ends in [`Outcome::RolledBack`] when the target had
/// been switched to, or the switch's error when nothing had changed.
pub fn after_failed_switch(
    ssh: &Ssh,
    unit: &Unit,
    target: &str,
    previous: &str,
    error: Error,
    opts: &PushOptions,
) -> Result<Outcome> {
    let why = error.to_string();
    let facts = unit_facts::read(ssh, unit)?;
    let journal_target = facts.journal.get("target").map(String::as_str);
    let switching = facts.journal.get("state").map(String::as_str) == Some("switching");
    if !switching || journal_target != Some(target) {
        // Failed before its journal: nothing on the unit changed.
        return Err(error);
    }
    if facts.current.as_deref() != Some(target) {
        ssh.check(
            unit,
            "recover",
            &unit_scripts::undo_journal(),
            &[&unit.root, facts.current.as_deref().unwrap_or("")],
        )?;
        return Err(error);
    }
    if previous.is_empty() {
        return Err(Error::remote(
            &unit.name,
            "switch",
            format!("{why}; the unit has no earlier release to go back to"),
        ));
    }
    roll_back(ssh, unit, previous, target, opts)?;
    Ok(Outcome::RolledBack {
        failed: target.to_string(),
        to: previous.to_string(),
        why: why
            .strip_prefix(&format!("{}: switch: ", unit.name))
            .unwrap_or(&why)
            .to_string(),
    })
}

/// Runs the gate on `version`: `/healthz` ok, reporting `version`, from a process started after
/// the journal's switch time, every model of the active level past `min_frames`.
pub fn gate(ssh: &Ssh, unit: &Unit, version: &str, opts: &PushOptions) -> Result<Gate> {
    Ok(gate_once(ssh, unit, version, opts)?.0)
}

/// [`gate`], also saying whether it failed because the process predates the switch.
fn gate_once(ssh: &Ssh, unit: &Unit, version: &str, opts: &PushOptions) -> Result<(Gate, bool)> {
    let r = ssh.script(
        unit,
        "health",
        unit_scripts::GATE,
        &[
            &unit.root,
            &unit.health_addr.to_string(),
            &opts.health_timeout_s.to_string(),
            version,
            &opts.min_frames.to_string(),
        ],
    )?;
    if r.ok() {
        return Ok((Gate::Passed, false));
    }
    let text = format!("{}{}", r.stdout, r.stderr);
    let why = text
        .trim()
        .lines()
        .last()
        .unwrap_or("no answer")
        .to_string();
    Ok((Gate::Failed(why), r.status == Some(GATE_STALE_PROCESS)))
}

/// The gate, restarting once when what answers predates the switch (a deploy that died between
/// its switch and its restart).
fn gate_finishing(ssh: &Ssh, unit: &Unit, version: &str, opts: &PushOptions) -> Result<Gate> {
    let (first, stale) = gate_once(ssh, unit, version, opts)?;
    if !stale {
        return Ok(first);
    }
    let restarted = ssh.script(unit, "recover", &unit_scripts::restart(), &[&unit.root])?;
    if !restarted.ok() {
        return Ok(Gate::Failed(format!(
            "the restart failed: {}",
            crate::ssh::last_line(&restarted.stderr).unwrap_or("no message")
        )));
    }
    gate(ssh, unit, version, opts)
}

/// Commits `release`: it passed its gate.
pub fn commit(ssh: &Ssh, unit: &Unit, release: &str, opts: &PushOptions) -> Result<()> {
    let r = ssh.script(
        unit,
        "commit",
        &unit_scripts::commit(),
        &[
            &unit.root,
            release,
            &opts.keep_releases.max(2).to_string(),
            StopAt::word(opts.stop_at),
        ],
    )?;
    if r.ok() {
        return Ok(());
    }
    Err(Error::remote(
        &unit.name,
        "commit",
        crate::ssh::last_line(&r.stderr).unwrap_or("no message"),
    ))
}

/// Switches back to `to`, marking `failed` so that no rollback picks it again, and gates `to`.
pub fn roll_back(ssh: &Ssh, unit: &Unit, to: &str, failed: &str, opts: &PushOptions) -> Result<()> {
    let r = ssh.script(
        unit,
        "rollback",
        &unit_scripts::roll_back(),
        &[&unit.root, to, failed],
    )?;
    if !r.ok() {
        return Err(Error::remote(
            &unit.name,
            "rollback",
            format!(
                "back on {to}, but it does not start either: {}",
                crate::ssh::last_line(&r.stderr).unwrap_or("no message")
            ),
        ));
    }
    finish_rollback(ssh, unit, to, failed, opts)
}

fn finish_rollback(
    ssh: &Ssh,
    unit: &Unit,
    to: &str,
    failed: &str,
    opts: &PushOptions,
) -> Result<()> {
    match gate_finishing(ssh, unit, to, opts)? {
        Gate::Passed => ssh
            .check(
                unit,
                "rollback",
                &unit_scripts::rolled_back(),
                &[&unit.root, to, failed],
            )
            .map(drop),
        Gate::Failed(why) => Err(Error::remote(
            &unit.name,
            "rollback",
            format!("back on {to}, but it does not pass its gate either: {why}"),
        )),
    }
}

/// Finishes or undoes a deploy that an earlier run left half done (the journal says
/// `switching` or `rolling-back`). `None` when there was nothing to do.
pub fn interrupted(
    ssh: &Ssh,
    unit: &Unit,
    facts: &UnitFacts,
    opts: &PushOptions,
) -> Result<Option<Outcome>> {
    let state = facts.journal.get("state").map(String::as_str);
    let target = facts.journal.get("target").cloned().unwrap_or_default();
    let current = facts.current.clone().unwrap_or_default();
    // The next steps are this run's, not the interrupted one's fault injection.
    let opts = &PushOptions {
        stop_at: None,
        ..opts.clone()
    };
    match state {
        Some("switching") => {
            let previous = facts.journal.get("previous").cloned().unwrap_or_default();
            if current == target {
                match gate_finishing(ssh, unit, &target, opts)? {
                    Gate::Passed => {
                        commit(ssh, unit, &target, opts)?;
                        Ok(Some(Outcome::Updated {
                            from: (!previous.is_empty()).then_some(previous),
                            to: target,
                            doctor: None,
                        }))
                    }
                    Gate::Failed(why) if previous.is_empty() => Err(Error::remote(
                        &unit.name,
                        "recover",
                        format!(
                            "an interrupted deploy left {target} failing its gate ({why}) and there is no release to go back to"
                        ),
                    )),
                    Gate::Failed(why) => {
                        roll_back(ssh, unit, &previous, &target, opts)?;
                        Ok(Some(Outcome::RolledBack {
                            failed: target,
                            to: previous,
                            why,
                        }))
                    }
                }
            } else if current == previous {
                tracing::info!(unit = %unit.name, "a deploy of {target} stopped before its switch; undone");
                ssh.check(
                    unit,
                    "recover",
                    &unit_scripts::undo_journal(),
                    &[&unit.root, &current],
                )?;
                Ok(Some(Outcome::AlreadyCurrent(current)))
            } else {
                Err(Error::remote(
                    &unit.name,
                    "recover",
                    format!(
                        "the journal says switching from {previous} to {target}, but current is {}: fix by hand (docs/deploy.md)",
                        if current.is_empty() {
                            "missing"
                        } else {
                            &current
                        }
                    ),
                ))
            }
        }
        Some("rolling-back") => {
            let failed = facts.journal.get("failed").cloned().unwrap_or_default();
            if current != target {
                roll_back(ssh, unit, &target, &failed, opts)?;
            } else {
                finish_rollback(ssh, unit, &target, &failed, opts)?;
            }
            Ok(Some(Outcome::RolledBack {
                failed,
                to: target,
                why: "an interrupted rollback was finished".into(),
            }))
        }
        _ => Ok(None),
    }
}

/// `trident deploy rollback`: back to the newest release that passed its gate (never one that
/// failed), with the same gate; a target that fails it is marked failed and the unit goes back
/// to the release it ran.
pub fn rollback(ssh: &Ssh, unit: &Unit, opts: &PushOptions) -> Result<Outcome> {
    unit_facts::read(ssh, unit)?.require_root(&unit.name)?;
    let _lock = ssh.lock(unit, &crate::lock::holder("rollback"), opts.lock_wait)?;
    let mut facts = unit_facts::read(ssh, unit)?;
    if interrupted(ssh, unit, &facts, opts)?.is_some() {
        facts = unit_facts::read(ssh, unit)?;
    }
    let current = facts
        .current
        .clone()
        .ok_or_else(|| Error::remote(&unit.name, "rollback", "no current release"))?;
    let target = ssh
        .check(unit, "rollback", &unit_scripts::last_good(), &[&unit.root])?
        .trim()
        .to_string();
    if target.is_empty() {
        return Err(Error::remote(
            &unit.name,
            "rollback",
            format!(
                "no release before {current} that passed its gate is on the unit (history: {})",
                history_line(&facts)
            ),
        ));
    }
    if let Err(failed) = switch(ssh, unit, &target, &current, opts) {
        if failed.stopped {
            return Err(failed.error);
        }
        return after_failed_switch(ssh, unit, &target, &current, failed.error, opts);
    }
    match gate(ssh, unit, &target, opts)? {
        Gate::Passed => {
            commit(ssh, unit, &target, opts)?;
            Ok(Outcome::Updated {
                from: Some(current),
                to: target,
                doctor: None,
            })
        }
        Gate::Failed(why) => {
            roll_back(ssh, unit, &current, &target, opts)?;
            Ok(Outcome::RolledBack {
                failed: target,
                to: current,
                why,
            })
        }
    }
}

/// `good 1.0.0, failed 1.1.0` (oldest first), or `none`.
pub fn history_line(facts: &UnitFacts) -> String {
    if facts.history.is_empty() {
        return "none".into();
    }
    facts
        .history
        .iter()
        .map(|(s, v)| format!("{s} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
