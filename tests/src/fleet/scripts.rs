//! The fake system tools installed in a test unit's `R/bin/`: POSIX `sh` scripts with the unit's
//! root `R` written in. Each appends its argv as one line to `R/var/log/fake-<tool>.log` and, when
//! the fault `fail-<tool>` is set, then exits 1 without doing anything else.

/// `(file name, script)` for every fake tool of the unit rooted at `root`.
pub(super) fn all(root: &str) -> Vec<(&'static str, String)> {
    [
        ("systemctl", SYSTEMCTL),
        ("nvpmodel", NVPMODEL),
        ("df", DF),
        ("useradd", USERADD),
        ("usermod", USERMOD),
        ("id", ID),
        ("chown", CHOWN),
        ("runuser", RUNUSER),
    ]
    .into_iter()
    .map(|(tool, body)| (tool, format!("{}{body}", prelude(root, tool))))
    .collect()
}

fn prelude(root: &str, tool: &str) -> String {
    format!(
        r#"#!/bin/sh
# Fake `{tool}` of a trident fleet test unit (tests/src/fleet.rs).
R='{root}'
T="$R/etc/trident-test"
mkdir -p "$R/var/log"
printf '%s\n' "$*" >> "$R/var/log/fake-{tool}.log"
if [ -e "$T/faults/fail-{tool}" ]; then
    echo "{tool}: injected fault fail-{tool}" >&2
    exit 1
fi
"#
    )
}

const SYSTEMCTL: &str = r#"
PIDFILE="$R/run/trident-edge.pid"

# Alive: the process exists and is not a zombie (nothing may reap an orphan in a container).
alive() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    case "$st" in '' | Z | X | x) return 1 ;; esac
    return 0
}

service_pid() { cat "$PIDFILE" 2>/dev/null; }

stop_service() {
    pid=$(service_pid)
    if alive "$pid"; then
        kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        i=0
        while alive "$pid" && [ "$i" -lt 100 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        if alive "$pid"; then
            kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$PIDFILE"
}

start_service() {
    if [ -e "$T/faults/start-fails" ]; then
        echo "Job for trident-edge.service failed because the control process exited with error code." >&2
        echo "See \"systemctl status trident-edge.service\" and \"journalctl -xeu trident-edge.service\" for details." >&2
        return 1
    fi
    port=$(cat "$T/health_port")
    C="$R/opt/trident/current"
    # `unhealthy`: any release; `unhealthy-<version>`: only that release (a bad update whose
    # rollback target is fine). The camera cannot be opened: /healthz answers 503 while the
    # runtime starts, then nothing once it has exited with the error.
    release=$(basename "$(readlink "$C" 2>/dev/null || echo none)")
    # The unit's camera: `etc/trident-test/source` (a URI, looped when it is a file) or the
    # runtime's synthetic test pattern.
    source=test://
    loop=
    if [ -s "$T/source" ]; then source=$(cat "$T/source") loop=--loop-files; fi
    if [ -e "$T/faults/unhealthy" ] || [ -e "$T/faults/unhealthy-$release" ]; then
        source=file:///nonexistent/camera-unplugged.avi loop=
    fi
    set -- "$C/bin/trident-edge" run --package "$C" --profile "$C/profiles/nano-10w.yaml" --source "$source"
    # The backends of the real unit file: on this machine TensorRT does not load, so the models
    # fall back to tract and say why, as on a unit without TensorRT.
    set -- "$@" --width 320 --height 240 --backend tensorrt,tract --http "127.0.0.1:$port" \
        --stale-after 10s $loop --out "$R/opt/trident/data"
    mkdir -p "$R/run"
    # systemd's WorkingDirectory=/opt/trident/data
    if [ -d "$R/opt/trident/data" ]; then cd "$R/opt/trident/data"; else cd /; fi
    # Detached (own session, no descriptor of the SSH session), its pid written by itself.
    RUST_LOG=info TRIDENT_ENGINE_CACHE="$R/opt/trident/engines" \
        setsid nohup sh -c 'echo $$ > "$0.new" && mv -f "$0.new" "$0" && exec "$@"' "$PIDFILE" "$@" \
        > "$R/var/log/trident-edge.log" 2>&1 < /dev/null &
    i=0
    while [ ! -s "$PIDFILE" ] && [ "$i" -lt 250 ]; do
        sleep 0.02
        i=$((i + 1))
    done
    return 0
}

quiet=
now=
verb=
units=
for a in "$@"; do
    case "$a" in
        -q | --quiet) quiet=1 ;;
        --now) now=1 ;;
        -*) ;;
        *)
            if [ -z "$verb" ]; then verb=$a; else units="$units ${a%.service}"; fi
            ;;
    esac
done
say() { [ -n "$quiet" ] || echo "$@"; }

mkdir -p "$T/enabled"
rc=0
case "$verb" in
    start | restart | try-restart | reload-or-restart)
        for u in $units; do
            if [ "$u" = trident-edge ]; then
                stop_service
                start_service || rc=1
            fi
        done
        ;;
    stop)
        for u in $units; do
            if [ "$u" = trident-edge ]; then stop_service; fi
        done
        ;;
    is-active)
        for u in $units; do
            if [ "$u" = trident-edge ] && alive "$(service_pid)"; then
                say active
            else
                say inactive
                rc=3
            fi
        done
        ;;
    status)
        for u in $units; do
            if [ "$u" = trident-edge ] && alive "$(service_pid)"; then
                say "* $u.service - fake ($R)"
                say "     Active: active (running)"
                say "   Main PID: $(service_pid)"
            else
                say "* $u.service - fake ($R)"
                say "     Active: inactive (dead)"
                rc=3
            fi
        done
        ;;
    enable)
        for u in $units; do
            : > "$T/enabled/$u"
            if [ -n "$now" ] && [ "$u" = trident-edge ]; then
                stop_service
                start_service || rc=1
            fi
        done
        ;;
    disable)
        for u in $units; do
            rm -f "$T/enabled/$u"
            if [ -n "$now" ] && [ "$u" = trident-edge ]; then stop_service; fi
        done
        ;;
    is-enabled)
        for u in $units; do
            if [ -e "$T/enabled/$u" ]; then say enabled; else
                say disabled
                rc=1
            fi
        done
        ;;
    *) ;; # daemon-reload, reset-failed, …: recorded only
esac
exit $rc
"#;

const NVPMODEL: &str = r#"
mode_file="$R/var/lib/nvpmodel/status"
case "$1" in
    -m)
        case "$2" in
            0 | 1) ;;
            *)
                echo "NVPM ERROR: invalid power mode '$2' (0: MAXN, 1: 5W)" >&2
                exit 1
                ;;
        esac
        mkdir -p "$R/var/lib/nvpmodel"
        printf '%s\n' "$2" > "$mode_file"
        # The real tool chatters on stdout when it sets a mode (L4T R32.x); a script that takes
        # stdout for its result must not see it.
        echo "NVPM WARN: Golden image context is already created"
        echo "NVPM WARN: patching tpc_pg_mask: (0x1:0x4)"
        ;;
    -q)
        n=$(cat "$mode_file" 2>/dev/null)
        n=${n:-0}
        case "$n" in 0) m=MAXN ;; 1) m=5W ;; *) m="MODE_$n" ;; esac
        echo "NV Power Mode: $m"
        echo "$n"
        ;;
    *)
        echo "usage: nvpmodel -m MODE | -q" >&2
        exit 1
        ;;
esac
"#;

const DF: &str = r#"
avail=$(cat "$T/df_avail_kb" 2>/dev/null)
avail=${avail:-10485760}
blocks=31000000
used=$((blocks - avail))
[ "$used" -ge 0 ] || used=0
cap=$(((used * 100 + blocks - 1) / blocks))
header=
rc=0
line() {
    if [ -z "$header" ]; then
        echo "Filesystem     1024-blocks      Used Available Capacity Mounted on"
        header=1
    fi
    printf '%-14s %11s %9s %9s %7s%% %s\n' /dev/mmcblk0p1 "$blocks" "$used" "$avail" "$cap" /
}
paths=0
for a in "$@"; do
    case "$a" in
        -*) ;;
        *)
            paths=1
            if [ -e "$a" ]; then line; else
                echo "df: $a: No such file or directory" >&2
                rc=1
            fi
            ;;
    esac
done
[ "$paths" = 1 ] || line
exit $rc
"#;

const USERADD: &str = r#"
user=
for a in "$@"; do case "$a" in -*) ;; *) user=$a ;; esac; done
if [ -z "$user" ]; then
    echo "Usage: useradd [options] LOGIN" >&2
    exit 2
fi
if [ -e "$T/user-$user" ]; then
    echo "useradd: user '$user' already exists" >&2
    exit 9
fi
mkdir -p "$T"
: > "$T/user-$user"
"#;

const USERMOD: &str = r#"
user=
for a in "$@"; do case "$a" in -*) ;; *) user=$a ;; esac; done
if [ -z "$user" ] || [ ! -e "$T/user-$user" ]; then
    echo "usermod: user '$user' does not exist" >&2
    exit 6
fi
"#;

/// `id USER` for the users `useradd` made (uid/gid 998, also in group video); `id` of root or
/// of the caller is the real one.
const ID: &str = r#"
user=
u=
g=
G=
n=
for a in "$@"; do
    case "$a" in
        --user) u=1 ;;
        --group) g=1 ;;
        --groups) G=1 ;;
        --name) n=1 ;;
        --*) ;;
        -*)
            case "$a" in *u*) u=1 ;; esac
            case "$a" in *g*) g=1 ;; esac
            case "$a" in *G*) G=1 ;; esac
            case "$a" in *n*) n=1 ;; esac
            ;;
        *) user=$a ;;
    esac
done
case "$user" in '' | root | 0) exec /usr/bin/id "$@" ;; esac
if [ ! -e "$T/user-$user" ]; then
    echo "id: '$user': no such user" >&2
    exit 1
fi
if [ -n "$u" ]; then
    if [ -n "$n" ]; then echo "$user"; else echo 998; fi
elif [ -n "$G" ]; then
    if [ -n "$n" ]; then echo "$user video"; else echo "998 44"; fi
elif [ -n "$g" ]; then
    if [ -n "$n" ]; then echo "$user"; else echo 998; fi
else
    echo "uid=998($user) gid=998($user) groups=998($user),44(video)"
fi
"#;

/// Ownership is recorded, not changed (the files under R stay root's).
const CHOWN: &str = "exit 0\n";

/// util-linux `runuser -u USER -- COMMAND…`: refuses another form and a user that does not exist
/// (as the real one does), then runs the command as the test's own user (recorded above).
const RUNUSER: &str = r#"
if [ "$1" != -u ] || [ -z "$2" ] || [ "$3" != -- ] || [ -z "$4" ]; then
    echo "runuser: expected -u USER -- COMMAND (got: $*)" >&2
    exit 1
fi
if [ ! -e "$T/user-$2" ]; then
    echo "runuser: user $2 does not exist" >&2
    exit 1
fi
shift 3
exec "$@"
"#;
