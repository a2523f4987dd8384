//! Pushing a package to one unit: preflight → upload (resumable) → verify and install on the
//! unit → prepare engines → atomic switch of `current` → restart → health gate → commit, or
//! automatic rollback to the previous release.
//!
//! A journal on the unit (`/opt/trident/deploy-journal`, written atomically before the switch)
//! makes an interrupted deploy recoverable: a run that finds `state=switching` health-checks
//! what `current` points at and commits it if healthy, else switches back to `previous`. So a
//! unit always ends on exactly one complete, verified release with its service running.

use std::path::Path;

use trident_core::package::Manifest;

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::ssh::Ssh;
use crate::unit_facts::{self, UnitFacts};

/// Knobs of a push beyond the inventory.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Seconds the restarted runtime has to report healthy.
    pub health_timeout_s: u64,
    /// Releases kept on the unit (current included).
    pub keep_releases: usize,
    /// Fault injection for tests: drop the upload's connection after this many bytes.
    pub drop_upload_after: Option<u64>,
    /// Fault injection for tests: stop right after the switch, as a killed deploy would.
    pub stop_after_switch: bool,
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

const VERIFY_INSTALL: &str = r#"set -eu
R="$1"; T="$R/opt/trident"; PKG="$2"; V="$3"; DEST="$T/releases/$V"
cur=""; if [ -L "$T/current" ]; then cur=$(basename "$(readlink "$T/current")"); fi
if [ -e "$DEST" ]; then
  if [ "$cur" = "$V" ]; then echo current; exit 0; fi
  rm -rf "$DEST"
fi
if ! "$T/bin/trident-edge" verify "$PKG" --pubkey "$T/trusted.pub" --install "$DEST" --system-root "$R" > "$T/incoming/verify.log" 2>&1; then
  rm -f "$PKG" "$PKG.minisig"
  grep -v '^ *$' "$T/incoming/verify.log" | tail -n 2 >&2
  exit 1
fi
echo installed
"#;

/// As the service user: the engines (and a shim built on the unit) must be the service's to read
/// and to rebuild; root-owned files in its cache would make its own rebuild fail.
const PREPARE: &str = r#"set -eu
T="$1/opt/trident"; D="$T/releases/$2"
runuser -u trident -- "$D/bin/trident-edge" prepare --package "$D" --engine-cache "$T/engines" --root "$1/"
"#;

/// `trident-edge doctor` on the new release as the service would run it (its user, its profile):
/// the JSON report on stdout. Its exit status (1 when the profile's first backend cannot load) is
/// the verdict's, not the script's.
const DOCTOR: &str = r#"set -eu
T="$1/opt/trident"; D="$T/releases/$2"
if [ -r "$T/unit.env" ]; then set -a; . "$T/unit.env"; set +a; fi
runuser -u trident -- "$D/bin/trident-edge" doctor --package "$D" --engine-cache "$T/engines" --root "$1/" --json 2>/dev/null || true
"#;

/// `$1` root, `$2` target release, `$3` the release to fall back to ("" for none).
const SWITCH: &str = r#"set -eu
T="$1/opt/trident"
printf 'state=switching\ntarget=%s\nprevious=%s\n' "$2" "$3" > "$T/deploy-journal.tmp"
mv -f "$T/deploy-journal.tmp" "$T/deploy-journal"
ln -sfn "releases/$2" "$T/current.new"
mv -Tf "$T/current.new" "$T/current"
systemctl restart trident-edge
"#;

/// `$1` root, `$2` health address, `$3` seconds. Polls `/healthz` until it answers ok; gives
/// up at the deadline, or at once when the service is no longer running (crashed at start, or
/// systemd gave up restarting it): no point waiting out the timeout for a dead process.
const HEALTH: &str = r#"set -u
E="$1/opt/trident/current/bin/trident-edge"
deadline=$(( $(date +%s) + $3 ))
while :; do
  if out=$("$E" health --addr "$2" 2>&1); then printf '%s\n' "$out"; exit 0; fi
  out=$(printf '%s' "$out" | tr '\n' ' ')
  state=$(systemctl is-active trident-edge 2>/dev/null || true)
  case "$state" in
    failed | inactive)
      printf 'the service is %s (it exited); last answer: %s\n' "$state" "$out" >&2
      exit 1 ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    printf 'not healthy within %ss: %s\n' "$3" "$out" >&2
    exit 1
  fi
  sleep 0.25
done
"#;

/// `$1` root, `$2` release, `$3` releases to keep.
const COMMIT: &str = r#"set -eu
T="$1/opt/trident"
cp -f "$T/releases/$2/bin/trident-edge" "$T/bin/trident-edge.new"
mv -f "$T/bin/trident-edge.new" "$T/bin/trident-edge"
printf 'state=committed\ntarget=%s\n' "$2" > "$T/deploy-journal.tmp"
mv -f "$T/deploy-journal.tmp" "$T/deploy-journal"
# Everything in incoming/ is now either installed or stale.
find "$T/incoming" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
ls -1t "$T/releases" | tail -n "+$(($3 + 1))" | while read -r old; do
  [ "$old" = "$2" ] || rm -rf "$T/releases/$old"
done
"#;

/// `$1` root, `$2` release to go back to, `$3` the failed release.
const ROLLBACK: &str = r#"set -eu
T="$1/opt/trident"
ln -sfn "releases/$2" "$T/current.new"
mv -Tf "$T/current.new" "$T/current"
printf 'state=rolled-back\ntarget=%s\nfailed=%s\n' "$2" "$3" > "$T/deploy-journal.tmp"
mv -f "$T/deploy-journal.tmp" "$T/deploy-journal"
systemctl restart trident-edge
"#;

/// Health-checks `current`; true when it answered ok within the timeout.
pub fn healthy(ssh: &Ssh, unit: &Unit, timeout_s: u64) -> Result<(bool, String)> {
    let r = ssh.script(
        unit,
        "health",
        HEALTH,
        &[
            &unit.root,
            &unit.health_addr.to_string(),
            &timeout_s.to_string(),
        ],
    )?;
    let text = format!("{}{}", r.stdout, r.stderr);
    Ok((r.ok(), text.trim().lines().last().unwrap_or("").to_string()))
}

/// Finishes a deploy a previous run left between switch and commit (the journal says
/// `switching`): commits `current` if healthy, else switches back. Returns what happened, or
/// `None` when there was nothing to resolve.
pub fn resolve_interrupted(
    ssh: &Ssh,
    unit: &Unit,
    facts: &UnitFacts,
    opts: &PushOptions,
) -> Result<Option<Outcome>> {
    if facts.journal.get("state").map(String::as_str) != Some("switching") {
        return Ok(None);
    }
    let target = facts.journal.get("target").cloned().unwrap_or_default();
    let previous = facts.journal.get("previous").cloned().unwrap_or_default();
    let (ok, why) = healthy(ssh, unit, opts.health_timeout_s)?;
    if ok {
        commit(ssh, unit, &target, opts.keep_releases)?;
        return Ok(Some(Outcome::Updated {
            from: (!previous.is_empty()).then_some(previous),
            to: target,
            doctor: None,
        }));
    }
    if previous.is_empty() {
        return Err(Error::remote(
            &unit.name,
            "recover",
            format!(
                "an interrupted deploy left {target} unhealthy ({why}) and there is no release to go back to"
            ),
        ));
    }
    roll_back(ssh, unit, &previous, &target, opts)?;
    Ok(Some(Outcome::RolledBack {
        failed: target,
        to: previous,
        why,
    }))
}

fn commit(ssh: &Ssh, unit: &Unit, release: &str, keep: usize) -> Result<()> {
    ssh.check(
        unit,
        "commit",
        COMMIT,
        &[&unit.root, release, &keep.to_string()],
    )
    .map(drop)
}

fn roll_back(ssh: &Ssh, unit: &Unit, to: &str, failed: &str, opts: &PushOptions) -> Result<()> {
    ssh.check(unit, "rollback", ROLLBACK, &[&unit.root, to, failed])?;
    let (ok, why) = healthy(ssh, unit, opts.health_timeout_s)?;
    if !ok {
        return Err(Error::remote(
            &unit.name,
            "rollback",
            format!("back on {to}, but it is not healthy either: {why}"),
        ));
    }
    Ok(())
}

/// Switches `unit` back to its previous release (`trident deploy rollback`), with the same
/// health gate; a failing previous release is switched back again.
pub fn rollback(ssh: &Ssh, unit: &Unit, opts: &PushOptions) -> Result<Outcome> {
    let facts = unit_facts::read(ssh, unit)?;
    let current = facts
        .current
        .clone()
        .ok_or_else(|| Error::remote(&unit.name, "rollback", "no current release"))?;
    // The newest release on disk other than the current one.
    let previous = ssh
        .check(
            unit,
            "rollback",
            "ls -1t \"$1/opt/trident/releases\"",
            &[&unit.root],
        )?
        .lines()
        .map(str::trim)
        .find(|r| !r.is_empty() && *r != current)
        .map(str::to_string)
        .ok_or_else(|| Error::remote(&unit.name, "rollback", "no previous release on the unit"))?;
    ssh.check(unit, "rollback", SWITCH, &[&unit.root, &previous, &current])?;
    let (ok, why) = healthy(ssh, unit, opts.health_timeout_s)?;
    if ok {
        commit(ssh, unit, &previous, opts.keep_releases.max(2))?;
        return Ok(Outcome::Updated {
            from: Some(current),
            to: previous,
            doctor: None,
        });
    }
    roll_back(ssh, unit, &current, &previous, opts)?;
    Ok(Outcome::RolledBack {
        failed: previous,
        to: current,
        why,
    })
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
    let mut facts = unit_facts::read(ssh, unit)?;
    if resolve_interrupted(ssh, unit, &facts, opts)?.is_some() {
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
    let version = manifest.version.clone();
    if facts.current.as_deref() == Some(version.as_str()) {
        return Ok(Outcome::AlreadyCurrent(version));
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
        VERIFY_INSTALL,
        &[&unit.root, &remote_pkg, &version],
    )?;
    if installed.trim() == "current" {
        return Ok(Outcome::AlreadyCurrent(version));
    }

    report.step("prepare");
    ssh.check(unit, "prepare", PREPARE, &[&unit.root, &version])?;
    report.step("doctor");
    let doctor = ssh
        .check(unit, "doctor", DOCTOR, &[&unit.root, &version])
        .ok()
        .and_then(|json| {
            let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
            v["verdict"].as_str().map(str::to_string)
        });

    report.step("switch");
    let previous = facts.current.clone().unwrap_or_default();
    ssh.check(unit, "switch", SWITCH, &[&unit.root, &version, &previous])?;
    if opts.stop_after_switch {
        return Err(Error::remote(
            &unit.name,
            "switch",
            "stopped after the switch (fault injection)",
        ));
    }

    report.step("health");
    let (ok, why) = healthy(ssh, unit, opts.health_timeout_s)?;
    if ok {
        report.step("commit");
        commit(ssh, unit, &version, opts.keep_releases)?;
        return Ok(Outcome::Updated {
            from: facts.current,
            to: version,
            doctor,
        });
    }
    if previous.is_empty() {
        return Err(Error::remote(
            &unit.name,
            "health",
            format!("{version} is not healthy ({why}) and the unit has no earlier release"),
        ));
    }
    report.step("rollback");
    roll_back(ssh, unit, &previous, &version, opts)?;
    Ok(Outcome::RolledBack {
        failed: version,
        to: previous,
        why,
    })
}
