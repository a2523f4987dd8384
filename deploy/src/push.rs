//! Pushing a package to one unit: preflight (facts, root, the unit's lock, an interrupted
//! deploy finished or undone, compatibility, no downgrade) → upload (resumable) → verify and
//! install on the unit → prepare engines → journal, atomic switch of `current`, restart → health
//! gate → commit, or automatic rollback to the release that ran before.
//!
//! Every failure after the journal is written ends in a rollback ([`crate::recover`]), and a
//! deploy killed anywhere is finished or undone by the next one, so a unit always ends on
//! exactly one complete, verified release that passed its gate, its service running.

use std::path::Path;
use std::time::Duration;

use trident_core::package::Manifest;

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::recover::{self, Gate};
use crate::ssh::Ssh;
use crate::unit_facts;
use crate::unit_scripts;

/// Knobs of a push beyond the inventory.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Seconds the restarted runtime has to pass its gate.
    pub health_timeout_s: u64,
    /// Frames each model of the active ladder level must have processed to pass the gate.
    pub min_frames: u64,
    /// Releases kept on the unit (current included).
    pub keep_releases: usize,
    /// Install a package older than the unit's current release.
    pub allow_downgrade: bool,
    /// Wait this long for another deploy's lock on the unit instead of failing at once.
    pub lock_wait: Option<Duration>,
    /// Fault injection for tests: drop the upload's connection after this many bytes.
    pub drop_upload_after: Option<u64>,
    /// Fault injection for tests: the deploy dies at this point, as a killed one would.
    pub stop_at: Option<StopAt>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            health_timeout_s: 90,
            min_frames: 1,
            keep_releases: 3,
            allow_downgrade: false,
            lock_wait: None,
            drop_upload_after: None,
            stop_at: None,
        }
    }
}

/// Where a test kills a deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// The journal says `switching`; `current` has not moved.
    Journal,
    /// `current` points at the new release; the service was not restarted.
    Symlink,
    /// The service was restarted; no gate yet.
    Restart,
    /// The history says good; the journal still says `switching`.
    Commit,
}

impl StopAt {
    /// The word the unit's scripts stop at.
    pub(crate) fn word(stop: Option<StopAt>) -> &'static str {
        match stop {
            None => "",
            Some(StopAt::Journal) => "journal",
            Some(StopAt::Symlink) => "symlink",
            Some(StopAt::Restart) => "restart",
            Some(StopAt::Commit) => "commit",
        }
    }
}

/// How a unit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Switched to the package's release and healthy; `doctor` is `trident-edge doctor`'s verdict
    /// on the unit (which backend runs, or why the profile's first one does not).
    Updated {
        from: Option<String>,
        to: String,
        doctor: Option<String>,
    },
    /// Already running this release.
    AlreadyCurrent(String),
    /// The new release failed its health check; the unit is back on `to`.
    RolledBack {
        failed: String,
        to: String,
        why: String,
    },
}

/// Progress of one unit, for the caller's display.
pub trait Report {
    fn step(&self, step: &str);
    fn uploaded(&self, sent: u64, total: u64);
}

impl Report for () {
    fn step(&self, _: &str) {}
    fn uploaded(&self, _: u64, _: u64) {}
}

/// Pushes `package` (with its `.minisig` beside it) to one unit.
pub fn push_unit(
    ssh: &Ssh,
    unit: &Unit,
    package: &Path,
    manifest: &Manifest,
    opts: &PushOptions,
    report: &dyn Report,
) -> Result<Outcome> {
    report.step("preflight");
    let version = manifest.version.clone();
    unit_facts::read(ssh, unit)?.require_root(&unit.name)?;
    let _lock = ssh.lock(
        unit,
        &crate::lock::holder(&format!("push {version}")),
        opts.lock_wait,
    )?;
    // Read again under the lock: a deploy that held it may have changed everything.
    let mut facts = unit_facts::read(ssh, unit)?;
    if recover::interrupted(ssh, unit, &facts, opts)?.is_some() {
        facts = unit_facts::read(ssh, unit)?;
    }
    if !facts.provisioned {
        return Err(Error::remote(
            &unit.name,
            "preflight",
            "not provisioned (no /opt/trident layout, trusted key or verifier): run `trident deploy provision` first",
        ));
    }
    let device = facts.device.clone().expect("read sets device facts");
    trident_package::facts::check(manifest, &device).map_err(|e| Error::Incompatible {
        unit: unit.name.clone(),
        message: e.to_string(),
    })?;
    let profile = format!("profiles/{}.yaml", unit.power_mode.profile());
    if !manifest.profiles.contains(&profile) {
        return Err(Error::Incompatible {
            unit: unit.name.clone(),
            message: format!(
                "the package has no {profile} for this unit's power mode {} (it has: {})",
                unit.power_mode.label(),
                manifest.profiles.join(", ")
            ),
        });
    }
    if facts.current.as_deref() == Some(version.as_str()) {
        return Ok(Outcome::AlreadyCurrent(version));
    }
    if let Some(current) = &facts.current
        && !opts.allow_downgrade
    {
        check_not_older(&unit.name, &version, current)?;
    }
    let size = std::fs::metadata(package)
        .map_err(|e| Error::Io {
            action: "cannot read",
            path: package.to_path_buf(),
            source: e,
        })?
        .len();
    // The archive, its unpacked release and slack for the engines prepare builds.
    let needed_kb = size.saturating_mul(3) / 1024 + 64 * 1024;
    match facts.disk_avail_kb {
        Some(avail) if avail < needed_kb => {
            return Err(Error::remote(
                &unit.name,
                "preflight",
                format!(
                    "not enough disk: {:.0} MiB free under {}, {:.0} MiB needed; nothing changed",
                    avail as f64 / 1024.0,
                    unit.remote("/opt"),
                    needed_kb as f64 / 1024.0
                ),
            ));
        }
        _ => {}
    }

    report.step("upload");
    let name = package
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let remote_pkg = unit.remote(&format!("/opt/trident/incoming/{name}"));
    let signature = trident_package::verify::signature_path(package);
    ssh.upload(
        unit,
        package,
        &remote_pkg,
        &|sent| report.uploaded(sent, size),
        opts.drop_upload_after,
    )?;
    if signature.is_file() {
        ssh.upload(
            unit,
            &signature,
            &format!("{remote_pkg}.minisig"),
            &|_| {},
            None,
        )?;
    }

    report.step("verify");
    let installed = ssh.check(
        unit,
        "verify",
        &unit_scripts::verify_install(),
        &[&unit.root, &remote_pkg, &version, &unit_scripts::guard()],
    )?;
    if installed.trim() == "current" {
        return Ok(Outcome::AlreadyCurrent(version));
    }

    report.step("prepare");
    ssh.check(
        unit,
        "prepare",
        unit_scripts::PREPARE,
        &[&unit.root, &version],
    )?;
    report.step("doctor");
    let doctor = ssh
        .check(
            unit,
            "doctor",
            unit_scripts::DOCTOR,
            &[&unit.root, &version],
        )
        .ok()
        .and_then(|json| {
            let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
            v["verdict"].as_str().map(str::to_string)
        });

    report.step("switch");
    let previous = facts.current.clone().unwrap_or_default();
    if let Err(failed) = recover::switch(ssh, unit, &version, &previous, opts) {
        if failed.stopped {
            return Err(failed.error);
        }
        // The restart failed (under systemd: the release died before READY=1), or the
        // connection did: whatever the journal and `current` say was done is undone.
        report.step("rollback");
        return recover::after_failed_switch(ssh, unit, &version, &previous, failed.error, opts);
    }

    report.step("health");
    match recover::gate(ssh, unit, &version, opts)? {
        Gate::Passed => {
            report.step("commit");
            recover::commit(ssh, unit, &version, opts)?;
            Ok(Outcome::Updated {
                from: facts.current,
                to: version,
                doctor,
            })
        }
        Gate::Failed(why) => {
            if previous.is_empty() {
                return Err(Error::remote(
                    &unit.name,
                    "health",
                    format!(
                        "{version} did not pass its gate ({why}) and the unit has no earlier release"
                    ),
                ));
            }
            report.step("rollback");
            recover::roll_back(ssh, unit, &previous, &version, opts)?;
            Ok(Outcome::RolledBack {
                failed: version,
                to: previous,
                why,
            })
        }
    }
}

/// Refuses `version` when it is older than `current` (semantic versions; anything else cannot be
/// ordered and is refused too, naming both).
fn check_not_older(unit: &str, version: &str, current: &str) -> Result<()> {
    trident_package::release_order::check_not_older(version, current).map_err(|why| {
        Error::Incompatible {
            unit: unit.to_string(),
            message: format!("{why}; pass --allow-downgrade to install it anyway"),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn older_and_unorderable_versions_are_refused() {
        let check = |v, c| super::check_not_older("reef-01", v, c);
        assert!(check("1.1.0", "1.0.0").is_ok());
        assert!(check("1.10.0", "1.9.3").is_ok());
        assert!(check("2.0.0", "2.0.0-rc.1").is_ok());
        let e = check("1.0.0", "1.1.0").unwrap_err().to_string();
        assert!(
            e.contains("older than the running 1.1.0") && e.contains("--allow-downgrade"),
            "{e}"
        );
        assert!(check("2.0.0-rc.1", "2.0.0").is_err());
        assert!(
            check("nightly", "1.0.0")
                .unwrap_err()
                .to_string()
                .contains("not semantic")
        );
    }
}
