//! The remote half of a deploy: POSIX sh (coreutils 8.28 and util-linux as on JetPack's Ubuntu
//! 18.04) run as root on the unit, and the start guard installed there.
//!
//! What the unit keeps under `/opt/trident`:
//! - `current` → `releases/<version>`, switched by one rename;
//! - `deploy-journal` (`state=switching|committed|rolling-back|rolled-back`, `target`,
//!   `previous`, `failed`, `switched_at`), written before each switch so an interrupted deploy
//!   can be finished or undone by comparing it with `current`;
//! - `history`: `<good|failed|pending> <version>` lines in the order things happened — what
//!   `rollback` and pruning go by, because mtimes follow a clock that many Nanos (no RTC battery)
//!   set to 1970 at boot until NTP answers;
//! - `start-attempts` (`<version> <n>`): starts of `current` since it last reached READY, kept by
//!   the guard below.
//!
//! Every file that decides what runs is written durably: to a temporary name, fsynced, renamed,
//! and its folder fsynced — a power cut leaves the old content or the new, never a mix.

/// Shell functions every script below starts with (`T` is set by the script first); the Mender
/// Update Module starts with them too.
pub(crate) const LIB: &str = r#"
# durable FILE TEXT: FILE holds TEXT after a power cut, or what it held before.
durable() {
  printf '%s' "$2" > "$1.tmp"
  sync "$1.tmp"
  mv -f "$1.tmp" "$1"
  sync "$(dirname "$1")"
}
current() { if [ -L "$T/current" ]; then basename "$(readlink "$T/current")"; fi; }
# switch_to VERSION: `current` → releases/VERSION, and the rename on the disk.
switch_to() {
  ln -sfn "releases/$1" "$T/current.new"
  mv -Tf "$T/current.new" "$T/current"
  sync "$T"
}
# history_set STATUS VERSION: VERSION's line moves to the end with STATUS (the newest event).
history_set() {
  h=$(awk -v v="$2" '$2 != v' "$T/history" 2>/dev/null | tail -n 63 || true)
  if [ -n "$h" ]; then h="$h
"; fi
  durable "$T/history" "$h$1 $2
"
}
history_drop() {
  h=$(awk -v v="$1" '$2 != v' "$T/history" 2>/dev/null || true)
  if [ -n "$h" ]; then h="$h
"; fi
  durable "$T/history" "$h"
}
# last_good [EXCEPT]: the newest release that passed its gate and is still on the unit.
last_good() {
  [ -r "$T/history" ] || return 0
  tac "$T/history" | while read -r s v; do
    if [ "$s" = good ] && [ "$v" != "${1:-}" ] && [ -d "$T/releases/$v" ]; then echo "$v"; break; fi
  done
}
# A unit deployed before the history existed: what runs there passed its gate then.
init_history() {
  if [ ! -e "$T/history" ]; then
    c=$(current)
    if [ -n "$c" ]; then durable "$T/history" "good $c
"; else durable "$T/history" ""; fi
  fi
}
# restart: a deploy's restarts are deliberate. systemd's start limit (5 starts in 10 s) is
# there for crash loops; a push, its rollback and a manual rollback within 10 s would hit it
# and be refused ("start of the service was attempted too often").
restart() {
  systemctl reset-failed trident-edge 2>/dev/null || true
  systemctl restart trident-edge
}
# stop_here POINT: fault injection for tests — the deploy dies here, as a killed one would.
stop_here() { if [ "$STOP" = "$1" ]; then echo "stopped after $1 (fault injection)" >&2; exit 86; fi; }
"#;

/// The script `body` with [`LIB`] before it.
fn with_lib(body: &str) -> String {
    format!("{LIB}{body}")
}

/// `$1` root, `$2` the uploaded package, `$3` its version (from the manifest this host verified),
/// `$4` the guard's text, `$5` (optional) a version the package must not be older than — the
/// Update Module's downgrade check, made by the unit's verifier. Installs into `releases/$3` with
/// the unit's verifier (signature, every sha256, the unit's facts); the unit checks itself that
/// the verified manifest names `$3`. Prints `current` when that release already runs, else
/// `installed`.
pub fn verify_install() -> String {
    with_lib(
        r#"set -eu
R="$1"; T="$R/opt/trident"; PKG="$2"; V="$3"; DEST="$T/releases/$V"
G="$T/bin/trident-guard"
if [ ! -f "$G" ] || [ "$(cat "$G")" != "$4" ]; then
  printf '%s\n' "$4" > "$G.tmp"; chmod 755 "$G.tmp"; sync "$G.tmp"; mv -f "$G.tmp" "$G"; sync "$T/bin"
fi
if [ -e "$DEST" ]; then
  if [ "$(current)" = "$V" ]; then echo current; exit 0; fi
  rm -rf "$DEST"
fi
if [ -n "${5:-}" ]; then set -- --not-older-than "$5"; else set --; fi
if ! "$T/bin/trident-edge" verify "$PKG" --pubkey "$T/trusted.pub" --install "$DEST" --system-root "$R" "$@" > "$T/incoming/verify.log" 2>&1; then
  rm -f "$PKG" "$PKG.minisig"
  grep -v '^ *$' "$T/incoming/verify.log" | tail -n 2 >&2
  exit 1
fi
# `<package>: verified — <name> <version> for …`: the version the unit's verifier read.
got=$(sed -n 's/^.*: verified — [^ ]* \([^ ]*\) for .*$/\1/p' "$T/incoming/verify.log" | head -n 1)
if [ "$got" != "$V" ]; then
  rm -rf "$DEST"
  echo "the verified manifest says version ${got:-?}, not $V: not installed" >&2
  exit 1
fi
echo installed
"#,
    )
}

/// As the service user: the engines (and a shim built on the unit) must be the service's to read
/// and to rebuild; root-owned files in its cache would make its own rebuild fail.
pub const PREPARE: &str = r#"set -eu
T="$1/opt/trident"; D="$T/releases/$2"
runuser -u trident -- "$D/bin/trident-edge" prepare --package "$D" --engine-cache "$T/engines" --root "$1/"
"#;

/// `trident-edge doctor` on the new release as the service would run it (its user, its profile):
/// the JSON report on stdout. Its exit status (1 when the profile's first backend cannot load) is
/// the verdict's, not the script's.
pub const DOCTOR: &str = r#"set -eu
T="$1/opt/trident"; D="$T/releases/$2"
if [ -r "$T/unit.env" ]; then set -a; . "$T/unit.env"; set +a; fi
runuser -u trident -- "$D/bin/trident-edge" doctor --package "$D" --engine-cache "$T/engines" --root "$1/" --json 2>/dev/null || true
"#;

/// `$1` root, `$2` target release, `$3` the release to fall back to ("" for none), `$4` where to
/// stop (tests). Journal first (durable), then the switch (durable), then the restart: under
/// systemd a `Type=notify` restart waits for READY=1 and fails when the release dies first.
pub fn switch() -> String {
    with_lib(
        r#"set -eu
T="$1/opt/trident"; STOP="$4"
[ -d "$T/releases/$2" ] || { echo "releases/$2 is not installed" >&2; exit 1; }
init_history
history_set pending "$2"
rm -f "$T/start-attempts"
durable "$T/deploy-journal" "state=switching
target=$2
previous=$3
switched_at=$(date +%s)
"
stop_here journal
switch_to "$2"
sync
stop_here symlink
restart
stop_here restart
"#,
    )
}

/// `$1` root, `$2` health address, `$3` seconds, `$4` the version that must answer, `$5` frames
/// each model of the active level must have processed. Passes when `/healthz` is ok, reports
/// `$4`, from a process started after the journal's `switched_at`, with the frames. Fails at once
/// when the service has stopped, or when what answers started before the switch and nothing is
/// restarting it (`systemctl` is not activating it): that process will never be the new one.
pub const GATE: &str = r#"set -u
T="$1/opt/trident"
E="$T/releases/$4/bin/trident-edge"
[ -x "$E" ] || E="$T/bin/trident-edge"
since=$(sed -n 's/^switched_at=//p' "$T/deploy-journal" 2>/dev/null | head -n 1)
since=${since:-0}
deadline=$(( $(date +%s) + $3 ))
while :; do
  if out=$("$E" health --addr "$2" --expect-version "$4" --started-after "$since" --min-frames "$5" 2>&1); then
    printf '%s\n' "$out"; exit 0
  fi
  out=$(printf '%s' "$out" | tr '\n' ' ')
  state=$(systemctl is-active trident-edge 2>/dev/null || true)
  case "$state" in
    failed | inactive)
      printf 'the service is %s (it exited); last answer: %s\n' "$state" "$out" >&2
      exit 1 ;;
    active)
      case "$out" in
        *"before the switch"*)
          printf 'the running process started before the switch and nothing restarts it: %s\n' "$out" >&2
          exit 3 ;;
      esac ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    printf 'not healthy within %ss: %s\n' "$3" "$out" >&2
    exit 1
  fi
  sleep 0.25
done
"#;

/// Exit status of [`GATE`] when the process that answers predates the switch.
pub const GATE_STALE_PROCESS: i32 = 3;

/// `$1` root, `$2` release, `$3` releases to keep, `$4` where to stop (tests). The release
/// passed its gate: its verifier becomes the unit's, the history records it good, the journal
/// says committed; then what is neither current nor among the newest good ones is removed.
pub fn commit() -> String {
    with_lib(
        r#"set -eu
T="$1/opt/trident"; STOP="$4"
cp -f "$T/releases/$2/bin/trident-edge" "$T/bin/trident-edge.new"
sync "$T/bin/trident-edge.new"
mv -f "$T/bin/trident-edge.new" "$T/bin/trident-edge"
init_history
history_set good "$2"
stop_here commit
durable "$T/deploy-journal" "state=committed
target=$2
"
rm -f "$T/start-attempts"
# Everything in incoming/ is now either installed or stale.
find "$T/incoming" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
keep=$( { echo "$2"; tac "$T/history" | awk -v c="$2" '$1 == "good" && $2 != c { print $2 }' | head -n "$(($3 - 1))"; } )
for d in "$T/releases"/*; do
  [ -e "$d" ] || continue
  v=$(basename "$d")
  printf '%s\n' "$keep" | grep -qxF "$v" || rm -rf "$d"
done
sync
"#,
    )
}

/// `$1` root, `$2` release to go back to, `$3` the release that failed ("" when none did). The
/// failed one is marked so no rollback ever picks it; journal, switch, restart as in [`switch`].
pub fn roll_back() -> String {
    with_lib(
        r#"set -eu
T="$1/opt/trident"
[ -d "$T/releases/$2" ] || { echo "releases/$2 is not on the unit" >&2; exit 1; }
init_history
if [ -n "$3" ]; then history_set failed "$3"; fi
durable "$T/deploy-journal" "state=rolling-back
target=$2
failed=$3
switched_at=$(date +%s)
"
switch_to "$2"
sync
restart
"#,
    )
}

/// `$1` root, `$2` the release rolled back to, `$3` the failed one: it answered its gate.
pub fn rolled_back() -> String {
    with_lib(
        r#"set -eu
T="$1/opt/trident"
history_set good "$2"
durable "$T/deploy-journal" "state=rolled-back
target=$2
failed=$3
"
"#,
    )
}

/// `$1` root, `$2` the release `current` still points at. Undoes a deploy killed between its
/// journal and its switch: nothing changed but the journal (and the history's `pending` line).
pub fn undo_journal() -> String {
    with_lib(
        r#"set -eu
T="$1/opt/trident"
target=$(sed -n 's/^target=//p' "$T/deploy-journal" 2>/dev/null | head -n 1)
if [ -n "$target" ] && [ "$target" != "$2" ]; then history_drop "$target"; fi
durable "$T/deploy-journal" "state=committed
target=$2
"
systemctl is-active --quiet trident-edge || restart
"#,
    )
}

/// `$1` root: restarts the service (a deploy killed between its switch and its restart).
pub fn restart() -> String {
    with_lib(
        r#"set -eu
restart
"#,
    )
}

/// `$1` root: the newest good release other than `current`, for `rollback`.
pub fn last_good() -> String {
    with_lib(
        r#"set -eu
T="$1/opt/trident"
init_history
last_good "$(current)"
"#,
    )
}

/// The start guard, `/opt/trident/bin/trident-guard`, run by the unit file as root before each
/// start (`starting`) and after READY (`ready`). A release that fails to reach READY
/// `TRIDENT_GUARD_MAX_FAILS` times in a row (default 3; the unit restarts it every RestartSec) is
/// switched back to the newest release that passed its gate — on the unit, without the host:
/// the host may be gone (a deploy killed after the switch, a unit out of radio range). In the
/// spirit of RAUC's and Mender's boot counting. It leaves the decision to a deploy that holds
/// the lock, and never fails the start itself.
pub fn guard() -> String {
    format!(
        "#!/bin/sh\n# trident-guard: installed by `trident deploy`; see docs/deploy.md.\nset -u\n\
         T=$(cd \"$(dirname \"$0\")/..\" && pwd -P)\n{LIB}{GUARD}"
    )
}

const GUARD: &str = r#"
MAX=${TRIDENT_GUARD_MAX_FAILS:-3}
cur=$(current)
[ -n "$cur" ] || exit 0
case "${1:-}" in
  ready)
    rm -f "$T/start-attempts"; sync "$T"; exit 0 ;;
  starting) ;;
  *) echo "usage: trident-guard starting|ready" >&2; exit 0 ;;
esac
n=0
if read -r v c < "$T/start-attempts" 2>/dev/null && [ "$v" = "$cur" ]; then n=$c; fi
# Starts of this release that did not reach READY, this one not counted.
if [ "$n" -lt "$MAX" ]; then durable "$T/start-attempts" "$cur $((n + 1))
"; exit 0; fi
exec 9>>"$T/deploy.lock"
if ! flock -n 9; then
  echo "trident-guard: $cur failed to start $n times; a deploy holds the lock and decides" >&2
  exit 0
fi
good=$(last_good "$cur")
if [ -z "$good" ]; then
  echo "trident-guard: $cur failed to start $n times and no release that passed its gate is left" >&2
  durable "$T/start-attempts" "$cur $((n + 1))
"
  exit 0
fi
history_set failed "$cur"
durable "$T/deploy-journal" "state=rolled-back
target=$good
failed=$cur
by=unit
"
switch_to "$good"
rm -f "$T/start-attempts"
sync
echo "trident-guard: $cur failed to start $n times in a row; switched back to $good" >&2
exit 0
"#;

#[cfg(test)]
mod tests;
