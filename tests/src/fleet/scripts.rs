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
        ("sync", SYNC),
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
# Readable and appendable by root and by an unprivileged session alike (fleet/login.rs).
(umask 0; printf '%s\n' "$*" >> "$R/var/log/fake-{tool}.log")
if [ -e "$T/faults/fail-{tool}" ]; then
    echo "{tool}: injected fault fail-{tool}" >&2
    exit 1
fi
"#
    )
}

/// A thin client of the unit's systemd stand-in (`fleet/systemd.rs`, protocol in its module
/// docs): the manager decides everything; this script only carries the request and the answer,
/// and fails clearly when no manager answers.
const SYSTEMCTL: &str = r#"
D="$R/run/fake-systemd"
CTL="$D/control"
gone() {
    echo "systemctl (fleet stand-in): $1; is the TestFleet that owns $R still running?" >&2
    exit 1
}
[ -p "$CTL" ] || gone "no fake systemd manager ($CTL is missing)"
for a in "$@"; do
    case "$a" in
        *"
"* | *"$(printf '\037')"*)
            echo "systemctl (fleet stand-in): an argument with a newline or \\037 cannot be sent" >&2
            exit 1
            ;;
    esac
done
id="$$.$(date +%s%N)"
fifo="$D/reply.$id"
answer="$D/reply.$id.txt"
trap 'rm -f "$fifo" "$answer"' EXIT
trap 'exit 130' INT TERM HUP
mkfifo -m 600 "$fifo" || gone "cannot make the reply FIFO $fifo"
request=$fifo
for a in "$@"; do request="$request$(printf '\037')$a"; done
# The manager holds the control FIFO open: this open does not wait unless the manager is gone.
timeout 5 sh -c 'printf "%s\n" "$1" > "$2"' sh "$request" "$CTL" ||
    gone "the fake systemd manager takes no requests (no reader on $CTL within 5 s)"
cat "$fifo" > "$answer" &
reader=$!
i=0
while [ ! -s "$answer" ]; do
    i=$((i + 1))
    if [ "$i" -gt 200 ]; then
        kill "$reader" 2>/dev/null
        gone "no answer from the fake systemd manager within 10 s"
    fi
    sleep 0.05
done
# Blocks until the job settles (start: READY=1 or failure) and the manager closes the FIFO.
wait "$reader"
rc=
while IFS= read -r line; do
    case "$line" in
        "1 "*) printf '%s\n' "${line#1 }" ;;
        "2 "*) printf '%s\n' "${line#2 }" >&2 ;;
        "rc "*) rc=${line#rc } ;;
    esac
done < "$answer"
[ -n "$rc" ] || gone "the fake systemd manager went away before answering"
exit "$rc"
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

/// coreutils `sync [FILE…]`, recorded (an empty line is a full sync): tests assert what a deploy
/// flushed, and in which order.
const SYNC: &str = "exec /bin/sync \"$@\"\n";
