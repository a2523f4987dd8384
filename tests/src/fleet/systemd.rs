//! A systemd stand-in for the fleet's one service, `trident-edge.service`, at least as strict as
//! systemd 237 (Ubuntu 18.04, what JetPack 4.6 runs on the Nano), so that a deploy sees real
//! `Type=notify` behaviour: `systemctl restart` blocks until the runtime says `READY=1` and fails
//! when it dies first; a crashing runtime is restarted after `RestartSec=` and given up on at the
//! start rate limit; a runtime that stops pinging is killed by the watchdog.
//!
//! A [`Manager`] per unit runs on a thread of the process that owns the `TestFleet`. The unit's
//! fake `systemctl` (a POSIX `sh` script in `R/bin`) stays a thin client: it records its argv,
//! makes a reply FIFO under `R/run/fake-systemd/`, writes one request line (the reply FIFO and
//! the arguments, separated by `\x1f`) into the control FIFO `R/run/fake-systemd/control` (which
//! the manager holds open read-write), and prints what comes back: `accepted` at once, then
//! `1 <stdout line>`, `2 <stderr line>` and `rc N`. No reader within 5 s, no `accepted` within
//! 10 s, or the FIFO closed without `rc` (the manager went away): the client fails saying so.
//! Transitions are logged with timestamps in `R/var/log/fake-systemd.log`.
//!
//! Modelled, after systemd 237's `service.c`:
//! - loading `R/etc/systemd/system/trident-edge.service` and `trident-edge.service.d/*.conf` at
//!   manager start and on `daemon-reload` only; a start on a changed file warns as systemctl
//!   does and uses the loaded copy; no file loaded: `start` fails with status 5;
//! - `Type=notify` (others are refused at load), `NotifyAccess=` (none/main/exec/all: the sender
//!   is checked with `SCM_CREDENTIALS`), `READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`;
//! - `ExecStartPre=`/`ExecStart=`/`ExecStartPost=` with `-` (failure ignored) and `+` (recorded
//!   only: everything runs as the test's user), `$VAR`/`${VAR}`/`$$`, `%n %N %p %i %%`,
//!   `$MAINPID` for `ExecStartPost=`; each step finishes before the next;
//! - a clean environment (the unit's variables, `PATH=R/bin:/usr/local/bin:/usr/bin:/bin`,
//!   `NOTIFY_SOCKET`, `INVOCATION_ID`, and `TRIDENT_TEST_ROOT`/`TRIDENT_TEST_UNIT`, which the
//!   fleet's teardown finds processes by), stdin `/dev/null`, output appended to the log;
//! - `Environment=`, `EnvironmentFile=` (`-` optional; read at each start), `WorkingDirectory=`
//!   (missing: status 200/CHDIR), a missing executable (203/EXEC), `CacheDirectory=` (created);
//! - `TimeoutStartSec=`, `TimeoutStopSec=`, `TimeoutSec=`, `KillSignal=` (then SIGKILL), the
//!   start-pre/start/start-post/running/stop-sigterm/stop-sigkill/stop-sigabrt/final-sigterm/
//!   final-sigkill/dead/failed/auto-restart states and results (exit-code, signal, core-dump,
//!   timeout, protocol, watchdog, resources, start-limit-hit);
//! - `Restart=no|always|on-failure`, `RestartSec=`, `NRestarts`, `StartLimitIntervalSec=` /
//!   `StartLimitBurst=` in `[Unit]` (and 237's `[Service]` `StartLimitInterval=`); as in systemd
//!   the limit's window ends after the interval, and `reset-failed` resets it;
//! - `WatchdogSec=` (armed at READY=1; `WATCHDOG_USEC`, `WATCHDOG_PID`; SIGABRT to the group on
//!   expiry, result `watchdog`);
//! - verbs `start stop restart try-restart reload-or-restart is-active is-failed status show
//!   enable disable is-enabled daemon-reload reset-failed` with `--no-block -q --now -p --value`
//!   (`enable`/`disable` reload the manager afterwards, as systemctl 237 does, unless
//!   `--no-reload`); a caller that is not root (the owner of its reply FIFO: the unprivileged
//!   sessions of `fleet/login.rs`) may query, and is refused what polkit would refuse it
//!   ("Interactive authentication required.").
//!
//! Accepted, not modelled (the real unit sets them; the manager's log lists them): `User=`,
//! `Group=`, `SupplementaryGroups=`, `ProtectSystem=`, `ProtectHome=`, `ReadWritePaths=`,
//! `ReadOnlyPaths=`, `NoNewPrivileges=`, `PrivateTmp=`, `PrivateDevices=`, `LimitNOFILE=`,
//! `Nice=`, `UMask=`, `Description=` (shown only), `Documentation=`, `After=`, `Before=`,
//! `Wants=`, `Requires=`, `BindsTo=`, `PartOf=`, `Conflicts=`, `DefaultDependencies=`, `[Install]`
//! `RequiredBy=`/`Alias=`/`Also=` (`WantedBy=` decides whether `enable` enables). Any other key
//! is a load error naming file and line (systemd 237 only warns and ignores it).
//!
//! What the stand-in cannot show: the service runs as the test's user, not `User=trident`, with
//! no sandboxing (so a write that `ProtectSystem=strict` would refuse succeeds here); there are
//! no cgroups: the "control group" is the service's process groups plus every process whose
//! environment carries its `INVOCATION_ID` (a process that clears its environment and leaves its
//! process group escapes `stop`); no journald (output is appended to
//! `R/var/log/trident-edge.log`, `status` shows its tail); no D-Bus, no dependencies or
//! ordering, no other units, no `ExecStop*=`/`ExecReload=`; a unit file created after the last
//! load is "not found" until `daemon-reload` (systemd 237 would load a never-loaded unit on
//! demand); `daemon-reload` of a bad file fails the command (systemd logs it and returns 0).
//!
//! Paths: an absolute word of a command line, `WorkingDirectory=`, an `EnvironmentFile=` path or
//! an environment value is the unit's (`R` prepended) when it lies in `/opt /etc /var /run /tmp
//! /home /root /srv /mnt /media` or exists under `R` (`/bin/systemctl`: the fake); else it is
//! the machine's (`/bin/sh`). Test hardware for `…/trident-edge run …` only (the whole command
//! or the tail a wrapper such as `sh -c` passes on): `--source` becomes the unit's camera,
//! `--http` its health port, and `--width 320 --height 240 --stale-after 10s` are appended (see
//! [`exec::main_command`] and the faults in `fleet.rs`). The main process's pid is kept in
//! `R/run/trident-edge.pid` while it runs.

mod exec;
mod jobs;
mod service;
mod start;
mod syntax;
mod unit_file;
mod verbs;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use exec::{Ctx, Exit};
use service::Service;

/// What the manager thread reacts to.
pub(crate) enum Event {
    /// One `systemctl` call: its reply FIFO and its argv.
    Request(PathBuf, Vec<String>),
    /// A notify datagram and its sender's pid (SCM_CREDENTIALS).
    Notify(Option<u32>, String),
    Exited(u32, Exit),
    Shutdown,
}

/// The lines a `systemctl` call prints (`1`: stdout, `2`: stderr) and its exit status.
type Answer = (Vec<(u8, String)>, i32);

/// The answer to one `systemctl` call, written to the client's FIFO by a thread of its own
/// (so a client that went away never blocks the manager).
pub(crate) struct Reply {
    tx: Option<Sender<Answer>>,
    lines: Vec<(u8, String)>,
    rc: i32,
    /// Who asked: the owner of the reply FIFO the client made (root, or the unprivileged
    /// session user of `fleet/login.rs`); `None` when unknown.
    pub(crate) caller_uid: Option<u32>,
}

impl Reply {
    fn to_client(fifo: PathBuf) -> Reply {
        use std::os::unix::fs::MetadataExt;
        let caller_uid = fs::metadata(&fifo).ok().map(|m| m.uid());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || write_reply(&fifo, rx));
        Reply {
            tx: Some(tx),
            lines: Vec::new(),
            rc: 0,
            caller_uid,
        }
    }

    /// A placeholder for a reply that was parked elsewhere; finishing it sends nothing.
    pub(crate) fn settled() -> Reply {
        Reply {
            tx: None,
            lines: Vec::new(),
            rc: 0,
            caller_uid: None,
        }
    }

    pub(crate) fn out(&mut self, text: impl AsRef<str>) {
        for l in text.as_ref().split('\n') {
            self.lines.push((1, l.to_string()));
        }
    }

    pub(crate) fn err(&mut self, text: impl AsRef<str>) {
        for l in text.as_ref().split('\n') {
            self.lines.push((2, l.to_string()));
        }
    }

    /// The exit status, unless an earlier failure set one.
    pub(crate) fn set_rc(&mut self, rc: i32) {
        if self.rc == 0 {
            self.rc = rc;
        }
    }

    pub(crate) fn finish(mut self, rc: i32) {
        self.set_rc(rc);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((std::mem::take(&mut self.lines), self.rc));
        }
    }
}

fn write_reply(fifo: &Path, rx: Receiver<Answer>) {
    // The client opens its end for reading after sending the request; until then a
    // non-blocking open for writing fails (ENXIO), so it is retried for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let mut file = loop {
        if !fs::metadata(fifo).is_ok_and(|m| m.file_type().is_fifo()) {
            return;
        }
        match OpenOptions::new()
            .write(true)
            .custom_flags(nonblock)
            .open(fifo)
        {
            Ok(f) => break f,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return,
        }
    };
    if let Ok(flags) = rustix::fs::fcntl_getfl(&file) {
        let _ = rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK);
    }
    if file.write_all(b"accepted\n").is_err() {
        return;
    }
    // Until the job settles; a dropped sender (the manager stopped) closes without `rc`.
    if let Ok((lines, rc)) = rx.recv() {
        let mut text = String::new();
        for (fd, l) in lines {
            text.push_str(&format!("{fd} {l}\n"));
        }
        text.push_str(&format!("rc {rc}\n"));
        let _ = file.write_all(text.as_bytes());
    }
}

/// `R/var/log/fake-systemd.log`: one timestamped line per transition and decision.
#[derive(Clone)]
pub(crate) struct StateLog {
    path: PathBuf,
}

impl StateLog {
    pub(crate) fn write(&self, line: impl AsRef<str>) {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(
                f,
                "{}.{:03} trident-edge.service: {}",
                t.as_secs(),
                t.subsec_millis(),
                line.as_ref()
            );
        }
    }
}

/// The stand-in systemd of one fleet unit; stopping it (drop) stops its service.
pub(crate) struct Manager {
    events: Sender<Event>,
    thread: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    quit: Arc<AtomicBool>,
    control: File,
    control_path: PathBuf,
    /// The notify socket: under `R`, or under the temporary folder when that path is too long
    /// for a socket address; removed at the end.
    socket: PathBuf,
}

/// The longest path a `sockaddr_un` holds (108 bytes with the terminating NUL).
const SUN_PATH_MAX: usize = 107;

impl Manager {
    /// Starts the manager of the unit rooted at `root` (`name` as in the fleet; its service
    /// serves `/healthz` on `health_port`), with the unit file loaded if there is one.
    pub(crate) fn start(root: &Path, name: &str, health_port: u16) -> Manager {
        use std::os::unix::fs::PermissionsExt;
        let dir = root.join("run/fake-systemd");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(root.join("var/log")).unwrap();
        let control_path = dir.join("control");
        let _ = fs::remove_file(&control_path);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &control_path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", control_path.display()));
        // Anyone may ask, as anyone may talk to systemd over D-Bus: an unprivileged session
        // makes its reply FIFO here (sticky, like /tmp) and is refused what needs root.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::set_permissions(&control_path, fs::Permissions::from_mode(0o666)).unwrap();
        // Read-write: the manager is always a writer too, so clients never see EOF and a
        // client's open for writing never waits.
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&control_path)
            .unwrap();

        let mut socket = dir.join("notify");
        if socket.as_os_str().len() > SUN_PATH_MAX {
            static N: AtomicU64 = AtomicU64::new(0);
            socket = std::env::temp_dir().join(format!(
                "trident-sd-{}-{}.sock",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
        }
        let _ = fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket)
            .unwrap_or_else(|e| panic!("bind the notify socket {}: {e}", socket.display()));
        rustix::net::sockopt::set_socket_passcred(&notify, true).expect("SO_PASSCRED");
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();

        let (tx, rx) = mpsc::channel();
        let quit = Arc::new(AtomicBool::new(false));
        let readers = vec![
            {
                let (tx, f) = (tx.clone(), control.try_clone().unwrap());
                std::thread::spawn(move || read_requests(f, tx))
            },
            {
                let (tx, quit) = (tx.clone(), Arc::clone(&quit));
                std::thread::spawn(move || read_notifications(notify, tx, quit))
            },
        ];
        let ctx = Ctx {
            root: root.to_path_buf(),
            name: name.to_string(),
            notify_socket: socket.clone(),
        };
        let log = StateLog {
            path: root.join("var/log/fake-systemd.log"),
        };
        log.write(format!("manager up (notify socket {})", socket.display()));
        let events = tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-systemd {name}"))
            .spawn(move || run(Service::new(ctx, health_port, tx, log), rx))
            .unwrap();
        Manager {
            events,
            thread: Some(thread),
            readers,
            quit,
            control,
            control_path,
            socket,
        }
    }

    /// Asks the manager to stop its service and end (see [`stop_all`]).
    fn begin_shutdown(&self) {
        let _ = self.events.send(Event::Shutdown);
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            eprintln!("the fake systemd manager panicked (see R/var/log/fake-systemd.log)");
        }
        self.quit.store(true, Ordering::SeqCst);
        // An empty reply path ends the request reader.
        let _ = self.control.write_all(b"\n");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let _ = fs::remove_file(&self.socket);
        // A client that comes later is told there is no manager (rather than waiting for one).
        let _ = fs::remove_file(&self.control_path);
    }
}

/// Stops every manager (and its service) at once rather than one after the other.
pub(crate) fn stop_all(managers: &mut Vec<Manager>) {
    for m in managers.iter() {
        m.begin_shutdown();
    }
    managers.clear();
}

fn run(mut svc: Service, rx: Receiver<Event>) {
    loop {
        let next = svc.tick();
        let wait = next.map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Event::Request(fifo, args)) => {
                verbs::dispatch(&mut svc, Reply::to_client(fifo), &args)
            }
            Ok(Event::Notify(pid, text)) => svc.notify(pid, &text),
            Ok(Event::Exited(pid, exit)) => svc.exited(pid, exit),
            Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    svc.log
        .write("manager stopping: the service's processes get SIGTERM, then SIGKILL");
    svc.shutdown(Duration::from_secs(3));
}

fn read_requests(fifo: File, tx: Sender<Event>) {
    for line in BufReader::new(fifo).lines() {
        let Ok(line) = line else { return };
        let mut fields = line.split('\x1f');
        let reply = fields.next().unwrap_or_default();
        if reply.is_empty() {
            return;
        }
        let args = fields.map(String::from).collect();
        if tx.send(Event::Request(PathBuf::from(reply), args)).is_err() {
            return;
        }
    }
}

fn read_notifications(sock: UnixDatagram, tx: Sender<Event>, quit: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 4096];
    while !quit.load(Ordering::SeqCst) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let received = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            rustix::net::recvmsg(&sock, &mut iov, &mut cmsg, RecvFlags::empty())
        };
        match received {
            Ok(msg) => {
                let pid = cmsg.drain().find_map(|m| match m {
                    RecvAncillaryMessage::ScmCredentials(c) => {
                        Some(c.pid.as_raw_nonzero().get() as u32)
                    }
                    _ => None,
                });
                let text = String::from_utf8_lossy(&buf[..msg.bytes.min(buf.len())]).into_owned();
                if tx.send(Event::Notify(pid, text)).is_err() {
                    return;
                }
            }
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => {}
            Err(_) => return,
        }
    }
}
