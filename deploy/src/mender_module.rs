//! The `trident` Update Module for Mender (Update Module protocol v3): what a unit does when a
//! Mender server, or `mender install` on the unit, delivers a trident artifact
//! (`trident package mender`).
//!
//! The module runs the very scripts `trident deploy` runs over SSH ([`crate::unit_scripts`]),
//! embedded verbatim, so both tools share the unit's lock, journal, release history and start
//! guard, and either can take over from the other:
//!
//! | Mender state        | on the unit                                                        |
//! |---------------------|--------------------------------------------------------------------|
//! | `ArtifactInstall`   | lock; finish an interrupted deploy; `trident-edge verify --install` with the unit's trusted key (never skipped; older than `current` refused unless the artifact allows it); `prepare` as the service user; journal, switch, restart (a release that dies before READY fails here) |
//! | `ArtifactCommit`    | lock; the health gate `trident deploy` uses (`/healthz` ok, this version, a process started after the switch, frames on every model); then commit (history `good`, verifier updated, old releases pruned) |
//! | `SupportsRollback`  | `Yes`                                                              |
//! | `ArtifactRollback`  | lock; back to the release that ran before (the failed one marked so no rollback picks it), gated the same way |
//! | `ArtifactFailure`   | lock; the failed release's folder removed: one complete, verified release stays, the one `current` names |
//! | `NeedsArtifactReboot` | `No`: a trident release is an application update                 |
//!
//! Every other state (`Download`, `Cleanup`, a newer client's additions) does nothing and
//! succeeds, as the protocol asks. A failing `ArtifactInstall` or `ArtifactCommit` makes Mender
//! call `ArtifactRollback`, then `ArtifactFailure`.

use std::net::SocketAddr;

use crate::inventory::{HealthGate, UnitDefaults};
use crate::push::PushOptions;
use crate::quote::quote;
use crate::unit_scripts;

/// Where Mender looks for Update Modules (fixed in the client, not configurable).
pub const MODULE_PATH: &str = "/usr/share/mender/modules/v3/trident";

/// The settings file the module reads on the unit (written by `trident deploy provision`).
pub const SETTINGS_PATH: &str = "/opt/trident/update-module.env";

/// What the module's gate and commit use, as `trident deploy push` takes them from the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSettings {
    /// Where the unit's runtime serves `/healthz`.
    pub health_addr: SocketAddr,
    /// Seconds the restarted runtime has to pass its gate.
    pub health_timeout_s: u64,
    /// Frames each model of the active level must have processed.
    pub min_frames: u64,
    /// Releases kept on the unit (current included).
    pub keep_releases: usize,
    /// Seconds a Mender step waits for a `trident deploy` that holds the unit's lock.
    pub lock_wait_s: u64,
}

/// The inventory's defaults, as `trident deploy push` uses them.
impl Default for ModuleSettings {
    fn default() -> Self {
        let push = PushOptions::default();
        let gate = HealthGate::default();
        ModuleSettings {
            health_addr: UnitDefaults::default().health_addr,
            health_timeout_s: gate.timeout_s,
            min_frames: gate.min_frames,
            keep_releases: push.keep_releases,
            lock_wait_s: 600,
        }
    }
}

impl ModuleSettings {
    /// The text of [`SETTINGS_PATH`]: sh assignments of plain numbers and an address.
    pub fn env_text(&self) -> String {
        format!(
            "# Written by `trident deploy provision`; read by {MODULE_PATH}.\n{}",
            self.assignments()
        )
    }

    /// `NAME=value` lines, also the module's own defaults.
    fn assignments(&self) -> String {
        format!(
            "HEALTH_ADDR={}\nHEALTH_TIMEOUT_S={}\nMIN_FRAMES={}\nKEEP_RELEASES={}\nLOCK_WAIT_S={}\n",
            self.health_addr,
            self.health_timeout_s,
            self.min_frames,
            self.keep_releases.max(2),
            self.lock_wait_s
        )
    }
}

/// The module for a unit whose root prefix is `root` (`/` on a unit; a folder in tests).
pub fn update_module(root: &str) -> String {
    let scripts = [
        ("S_VERIFY", unit_scripts::verify_install()),
        ("S_PREPARE", unit_scripts::PREPARE.to_string()),
        ("S_SWITCH", unit_scripts::switch()),
        ("S_GATE", unit_scripts::GATE.to_string()),
        ("S_RESTART", unit_scripts::restart()),
        ("S_COMMIT", unit_scripts::commit()),
        ("S_ROLL_BACK", unit_scripts::roll_back()),
        ("S_ROLLED_BACK", unit_scripts::rolled_back()),
        ("S_UNDO", unit_scripts::undo_journal()),
        ("GUARD", unit_scripts::guard()),
    ];
    let mut text = format!(
        "#!/bin/sh\n\
         # trident: Mender Update Module (protocol v3), installed by `trident deploy provision`.\n\
         # Runs the on-unit steps of `trident deploy` for Mender's states; see docs/mender.md.\n\
         set -u\n\
         R={}\n",
        quote(root)
    );
    text.push_str("T=\"$R/opt/trident\"\nSTATE=\"${1:-}\"\nFILES=\"${2:-}\"\n");
    // Provision writes the inventory's settings; these defaults serve until it has.
    text.push_str(&ModuleSettings::default().assignments());
    text.push_str(HEAD);
    text.push_str(unit_scripts::LIB);
    text.push_str(&format!(
        "GATE_STALE_PROCESS={}\n",
        unit_scripts::GATE_STALE_PROCESS
    ));
    for (name, script) in scripts {
        text.push_str(&format!("{name}={}\n", quote(&script)));
    }
    text.push_str(BODY);
    text
}

/// The settings file and the module's own helpers; [`unit_scripts::LIB`] (`current`, …) and
/// the step scripts, as variables, follow.
const HEAD: &str = r#"if [ -r "$T/update-module.env" ]; then . "$T/update-module.env"; fi
say() { printf 'trident: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
# step NAME SCRIPT ARGS…: one of `trident deploy`'s unit scripts, as it runs them.
step() { _n=$1; _s=$2; shift 2; sh -c "$_s" "trident-$_n" "$@"; }
journal() { sed -n "s/^$1=//p" "$T/deploy-journal" 2>/dev/null | head -n 1; }
# meta KEY: a value of the artifact's meta-data (flat JSON written by `trident package mender`).
meta() {
  tr -d '\n' < "$FILES/header/meta-data" |
    sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([A-Za-z0-9._+-]*\)\"\{0,1\}.*/\1/p"
}
plain() {
  case "$2" in
    "" | .* | -* | *[!A-Za-z0-9._+-]*) die "the artifact's $1 \"$2\" is not a plain name" ;;
  esac
}
# lock: the unit's deploy lock, as `trident deploy` and the start guard take it, held until
# this state's process exits.
lock() {
  [ -d "$T" ] || die "$T is missing: provision the unit first (trident deploy provision)"
  exec 9>>"$T/deploy.lock"
  if ! flock -n 9; then
    holder=$(cat "$T/deploy.lock.owner" 2>/dev/null || echo "another deploy")
    say "waiting up to ${LOCK_WAIT_S}s for the unit's deploy lock, held by $holder"
    flock -w "$LOCK_WAIT_S" 9 || die "the unit's deploy lock is still held by $holder"
  fi
  printf 'mender %s %s since %s (unit clock)\n' "$STATE" "$(cat "$FILES/header/artifact_name" 2>/dev/null)" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$T/deploy.lock.owner"
}
"#;

/// The states.
const BODY: &str = r#"
# gate VERSION: the health gate; a process older than the switch is restarted once.
gate() {
  step health "$S_GATE" "$R" "$HEALTH_ADDR" "$HEALTH_TIMEOUT_S" "$1" "$MIN_FRAMES" >&2
  rc=$?
  if [ "$rc" = "$GATE_STALE_PROCESS" ]; then
    step restart "$S_RESTART" "$R" >&2 || return 1
    step health "$S_GATE" "$R" "$HEALTH_ADDR" "$HEALTH_TIMEOUT_S" "$1" "$MIN_FRAMES" >&2
    rc=$?
  fi
  return "$rc"
}
# back_to GOOD FAILED: switch back to GOOD, FAILED marked failed, and gate GOOD.
back_to() {
  step rollback "$S_ROLL_BACK" "$R" "$1" "$2" >&2 || die "back on $1, but it does not start either"
  gate "$1" || die "back on $1, but it does not pass its gate either"
  step rollback "$S_ROLLED_BACK" "$R" "$1" "$2" >&2 || die "cannot record the rollback to $1"
  say "back on $1; $2 is marked failed"
}
# A deploy killed half way (by either tool): finished or undone as `trident deploy` would.
recover() {
  state=$(journal state); target=$(journal target); cur=$(current)
  case "$state" in
    switching)
      previous=$(journal previous)
      if [ "$cur" = "$target" ]; then
        if gate "$target"; then
          step commit "$S_COMMIT" "$R" "$target" "$KEEP_RELEASES" "" >&2 || die "cannot commit $target"
          say "an interrupted deploy of $target passed its gate and is committed"
        elif [ -n "$previous" ]; then
          back_to "$previous" "$target"
        else
          die "an interrupted deploy left $target failing its gate and there is no release to go back to"
        fi
      elif [ "$cur" = "$previous" ]; then
        step recover "$S_UNDO" "$R" "$cur" >&2 || die "cannot undo the interrupted deploy of $target"
        say "a deploy of $target stopped before its switch; undone"
      else
        die "the journal says switching from $previous to $target, but current is ${cur:-missing}: fix by hand (docs/deploy.md)"
      fi ;;
    rolling-back)
      failed=$(journal failed)
      if [ "$cur" != "$target" ]; then back_to "$target" "$failed"; else
        gate "$target" || die "back on $target, but it does not pass its gate either"
        step rollback "$S_ROLLED_BACK" "$R" "$target" "$failed" >&2 || die "cannot record the rollback"
      fi ;;
  esac
}

install() {
  lock
  [ -x "$T/bin/trident-edge" ] && [ -r "$T/trusted.pub" ] ||
    die "not provisioned (no verifier or trusted key under $T): run trident deploy provision"
  V=$(meta trident_version); plain version "$V"
  P=$(meta trident_package); plain package "$P"
  down=$(meta trident_allow_downgrade)
  PKG="$FILES/files/$P"
  [ -f "$PKG" ] || die "the artifact carries no $P"
  [ -f "$PKG.minisig" ] || die "the artifact carries no signature $P.minisig; the unit installs signed packages only"
  recover
  prev=$(current)
  printf '%s\n' "$V" > "$FILES/tmp/version"
  printf '%s\n' "$prev" > "$FILES/tmp/previous"
  older=""
  if [ "$down" != true ] && [ -n "$prev" ]; then older=$prev; fi
  out=$(step verify "$S_VERIFY" "$R" "$PKG" "$V" "$GUARD" "$older") || die "$V was not installed"
  if [ "$out" = current ]; then
    echo current > "$FILES/tmp/outcome"
    say "$V already runs; nothing to install"
    return 0
  fi
  say "$V verified and installed; preparing its engines"
  step prepare "$S_PREPARE" "$R" "$V" >&2 || die "prepare failed for $V"
  step switch "$S_SWITCH" "$R" "$V" "$prev" "" >&2 || die "$V did not start (the restart failed)"
  echo switched > "$FILES/tmp/outcome"
  say "switched to $V (from ${prev:-nothing}); the gate runs at ArtifactCommit"
}

commit() {
  lock
  V=$(cat "$FILES/tmp/version" 2>/dev/null || true)
  [ -n "$V" ] || die "no install of this artifact was recorded"
  [ "$(cat "$FILES/tmp/outcome" 2>/dev/null)" = current ] && return 0
  state=$(journal state); target=$(journal target); cur=$(current)
  if [ "$state" = committed ] && [ "$target" = "$V" ] && [ "$cur" = "$V" ]; then
    say "$V was committed already (trident deploy took over)"
    return 0
  fi
  [ "$state" = switching ] && [ "$target" = "$V" ] && [ "$cur" = "$V" ] ||
    die "$V is no longer the release being installed (journal state=$state target=$target, current=${cur:-none}): another deploy or the unit's start guard decided"
  gate "$V" || die "$V did not pass its health gate"
  step commit "$S_COMMIT" "$R" "$V" "$KEEP_RELEASES" "" >&2 || die "cannot commit $V"
  say "$V passed its gate and is committed"
}

rollback() {
  lock
  V=$(cat "$FILES/tmp/version" 2>/dev/null || true)
  prev=$(cat "$FILES/tmp/previous" 2>/dev/null || true)
  [ -n "$V" ] || return 0
  [ "$(cat "$FILES/tmp/outcome" 2>/dev/null)" = current ] && return 0
  state=$(journal state); target=$(journal target); cur=$(current)
  if [ "$cur" = "$V" ]; then
    [ -n "$prev" ] || die "$V failed and the unit has no earlier release to go back to"
    back_to "$prev" "$V"
  elif [ "$state" = switching ] && [ "$target" = "$V" ]; then
    step recover "$S_UNDO" "$R" "$cur" >&2 || die "cannot undo the switch to $V"
    say "the switch to $V never happened; undone"
  else
    say "nothing to roll back: ${cur:-no release} runs"
  fi
}

failure() {
  lock
  V=$(cat "$FILES/tmp/version" 2>/dev/null || true)
  [ -n "$V" ] || return 0
  # A failed release is never rolled back to: its folder only takes space.
  if [ "$(current)" != "$V" ] && [ -d "$T/releases/$V" ] &&
    ! awk -v v="$V" '$1 == "good" && $2 == v { f = 1 } END { exit !f }' "$T/history" 2>/dev/null; then
    rm -rf "$T/releases/$V"
    sync "$T/releases"
    say "removed releases/$V"
  fi
}

case "$STATE" in
  NeedsArtifactReboot) echo No ;;
  SupportsRollback) echo Yes ;;
  ArtifactInstall) install ;;
  ArtifactCommit) commit ;;
  ArtifactRollback) rollback ;;
  ArtifactFailure) failure ;;
  *) ;;
esac
exit 0
"#;

#[cfg(test)]
mod tests {
    use std::process::Command;

    fn run(module: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
        let o = Command::new("sh").arg(module).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    #[test]
    fn the_module_answers_mender_queries_and_refuses_an_unprovisioned_unit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("unit");
        std::fs::create_dir_all(root.join("opt/trident")).unwrap();
        let module = dir.path().join("trident");
        std::fs::write(&module, super::update_module(root.to_str().unwrap())).unwrap();
        let syntax = Command::new("sh").arg("-n").arg(&module).output().unwrap();
        assert!(
            syntax.status.success(),
            "{}",
            String::from_utf8_lossy(&syntax.stderr)
        );

        assert_eq!(run(&module, &["NeedsArtifactReboot", "x"]).1, "No\n");
        assert_eq!(run(&module, &["SupportsRollback", "x"]).1, "Yes\n");
        // States the module has nothing to do in, and ones a newer client may add, succeed
        // silently as the protocol asks.
        for state in [
            "Download",
            "Cleanup",
            "ArtifactVerifyReboot",
            "SomeFutureState",
        ] {
            assert_eq!(
                run(&module, &[state, "x"]),
                (Some(0), String::new(), String::new())
            );
        }

        // A unit without the verifier and key that provision installs.
        let files = dir.path().join("tree");
        for d in ["header", "files", "tmp"] {
            std::fs::create_dir_all(files.join(d)).unwrap();
        }
        std::fs::write(
            files.join("header/meta-data"),
            r#"{"trident_version": "1.2.0", "trident_package": "trident-1.2.0-x.tar.zst"}"#,
        )
        .unwrap();
        let (code, _, err) = run(&module, &["ArtifactInstall", files.to_str().unwrap()]);
        assert_eq!(code, Some(1));
        assert!(err.contains("trident deploy provision"), "{err}");
    }

    #[test]
    fn settings_are_plain_assignments_with_at_least_two_releases_kept() {
        let s = super::ModuleSettings {
            keep_releases: 1,
            ..Default::default()
        };
        let text = s.env_text();
        assert!(text.contains("HEALTH_ADDR=127.0.0.1:8080\n"), "{text}");
        assert!(text.contains("KEEP_RELEASES=2\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (k, v) = line.split_once('=').unwrap();
            assert!(
                k.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{line}"
            );
            assert!(
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".:_".contains(c)),
                "{line}"
            );
        }
    }
}
