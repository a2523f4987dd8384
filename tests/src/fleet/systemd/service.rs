//! The service's state machine, after systemd 237's `src/core/service.c` for `Type=notify`:
//! start-pre → start (until `READY=1`) → start-post → running; stop-sigterm → stop-sigkill →
//! final-sigterm → final-sigkill → dead/failed; auto-restart; the start rate limit; the watchdog.

use std::fs;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::Signal;

use super::exec::{self, Ctx, Exit};
use super::unit_file::{self, LoadError, NotifyAccess, Restart, UnitFile};
use super::{Event, Reply, StateLog};

/// systemd's sub-states of a service (those reachable here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Dead,
    Failed,
    StartPre,
    Start,
    StartPost,
    Running,
    StopSigabrt,
    StopSigterm,
    StopSigkill,
    FinalSigterm,
    FinalSigkill,
    AutoRestart,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Dead => "dead",
            Sub::Failed => "failed",
            Sub::StartPre => "start-pre",
            Sub::Start => "start",
            Sub::StartPost => "start-post",
            Sub::Running => "running",
            Sub::StopSigabrt => "stop-sigabrt",
            Sub::StopSigterm => "stop-sigterm",
            Sub::StopSigkill => "stop-sigkill",
            Sub::FinalSigterm => "final-sigterm",
            Sub::FinalSigkill => "final-sigkill",
            Sub::AutoRestart => "auto-restart",
        }
    }

    /// `ActiveState=`.
    pub fn active(self) -> &'static str {
        match self {
            Sub::Dead => "inactive",
            Sub::Failed => "failed",
            Sub::StartPre | Sub::Start | Sub::StartPost | Sub::AutoRestart => "activating",
            Sub::Running => "active",
            _ => "deactivating",
        }
    }

    pub(super) fn stopping(self) -> bool {
        matches!(self, Sub::StopSigabrt | Sub::StopSigterm | Sub::StopSigkill)
    }

    pub(super) fn finalizing(self) -> bool {
        matches!(self, Sub::FinalSigterm | Sub::FinalSigkill)
    }
}

/// `Result=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Resources,
    Protocol,
    Timeout,
    ExitCode,
    Signal,
    CoreDump,
    Watchdog,
    StartLimitHit,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Resources => "resources",
            Outcome::Protocol => "protocol",
            Outcome::Timeout => "timeout",
            Outcome::ExitCode => "exit-code",
            Outcome::Signal => "signal",
            Outcome::CoreDump => "core-dump",
            Outcome::Watchdog => "watchdog",
            Outcome::StartLimitHit => "start-limit-hit",
        }
    }

    /// systemctl 237's explanation of a failed job.
    pub(super) fn explanation(self) -> &'static str {
        match self {
            Outcome::Resources | Outcome::Success => {
                "of unavailable resources or another system error"
            }
            Outcome::Protocol => {
                "the service did not take the steps required by its unit configuration"
            }
            Outcome::Timeout => "a timeout was exceeded",
            Outcome::ExitCode => "the control process exited with error code",
            Outcome::Signal => "a fatal signal was delivered to the control process",
            Outcome::CoreDump => {
                "a fatal signal was delivered causing the control process to dump core"
            }
            Outcome::Watchdog => "the service failed to send watchdog ping",
            Outcome::StartLimitHit => "start of the service was attempted too often",
        }
    }

    /// systemd's `is_clean_exit()` for a daemon: status 0 or SIGHUP/SIGINT/SIGTERM/SIGPIPE.
    pub(super) fn of(exit: Exit) -> Outcome {
        match exit {
            Exit::Code(0) => Outcome::Success,
            Exit::Code(_) => Outcome::ExitCode,
            Exit::Signal {
                signal: 1 | 2 | 13 | 15,
                ..
            } => Outcome::Success,
            Exit::Signal { core: true, .. } => Outcome::CoreDump,
            Exit::Signal { .. } => Outcome::Signal,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Pre(usize),
    Post(usize),
}

pub(super) struct Control {
    pub(super) pid: u32,
    pub(super) phase: Phase,
    pub(super) ignore_failure: bool,
}

/// One unit's service and the `systemctl` jobs waiting on it.
pub(crate) struct Service {
    pub ctx: Ctx,
    pub health_port: u16,
    pub load: Result<UnitFile, LoadError>,
    pub state: Sub,
    pub since: Option<SystemTime>,
    pub result: Outcome,
    pub main: Option<u32>,
    /// The last main process and how it ended (for `status`).
    pub main_exit: Option<(u32, Exit)>,
    pub main_started: Option<SystemTime>,
    pub n_restarts: u32,
    pub status_text: Option<String>,
    pub invocation: String,
    pub(super) control: Option<Control>,
    pub(super) pgids: Vec<u32>,
    pub(super) timer: Option<Instant>,
    pub(super) watchdog_at: Option<Instant>,
    /// The start rate limit: when the current interval began and the starts in it.
    pub(super) limit: (Option<Instant>, u32),
    pub(super) forbid_restart: bool,
    pub(super) start_after_stop: bool,
    pub(super) waiting_start: Vec<Reply>,
    pub(super) waiting_stop: Vec<Reply>,
    pub(super) events: Sender<Event>,
    pub log: StateLog,
}

impl Service {
    pub fn new(ctx: Ctx, health_port: u16, events: Sender<Event>, log: StateLog) -> Service {
        let mut s = Service {
            ctx,
            health_port,
            load: Err(LoadError::NotFound),
            state: Sub::Dead,
            since: None,
            result: Outcome::Success,
            main: None,
            main_exit: None,
            main_started: None,
            n_restarts: 0,
            status_text: None,
            invocation: String::new(),
            control: None,
            pgids: Vec::new(),
            timer: None,
            watchdog_at: None,
            limit: (None, 0),
            forbid_restart: false,
            start_after_stop: false,
            waiting_start: Vec::new(),
            waiting_stop: Vec::new(),
            events,
            log,
        };
        // A bad file at start is in the manager's log and in `status`; nobody asked yet.
        let _ = s.reload();
        s
    }

    /// `daemon-reload`: the unit file and drop-ins as they are now; `Err` names what is wrong.
    pub fn reload(&mut self) -> Result<(), String> {
        self.load = unit_file::load(&self.ctx.root);
        match &self.load {
            Ok(u) => {
                self.log.write(format!(
                    "loaded {} (drop-ins: {:?}; accepted, not modelled: {})",
                    unit_file::REMOTE_PATH,
                    u.dropins,
                    u.not_modelled.join(" ")
                ));
                Ok(())
            }
            Err(LoadError::NotFound) => {
                self.log
                    .write("no unit file: trident-edge.service not found");
                Ok(())
            }
            Err(LoadError::Bad(why)) => {
                self.log.write(format!("load error: {why}"));
                Err(why.clone())
            }
        }
    }

    /// `NeedDaemonReload=`: the file or its drop-ins changed on disk since the load.
    pub fn need_reload(&self) -> bool {
        match &self.load {
            Ok(u) => u.stamps != unit_file::stamps_on_disk(&self.ctx.root),
            Err(_) => false,
        }
    }

    pub fn unit(&self) -> Option<&UnitFile> {
        self.load.as_ref().ok()
    }

    pub(super) fn set_state(&mut self, s: Sub) {
        if s != self.state {
            self.log.write(format!(
                "{} ({}) → {} ({}) result={}",
                self.state.active(),
                self.state.name(),
                s.active(),
                s.name(),
                self.result.name()
            ));
        }
        // `status`'s "since": when the ActiveState last changed.
        if s.active() != self.state.active() || self.since.is_none() {
            self.since = Some(SystemTime::now());
        }
        self.state = s;
        if !matches!(s, Sub::StartPost | Sub::Running) {
            self.watchdog_at = None;
        }
    }

    pub(super) fn fail_with(&mut self, f: Outcome) {
        if self.result == Outcome::Success {
            self.result = f;
        }
    }

    pub(super) fn timeout_start(&self) -> Option<Instant> {
        self.unit()
            .and_then(|u| u.timeout_start)
            .map(|d| Instant::now() + d)
    }

    // ---- events ----

    /// A datagram on the notify socket from `pid` (SCM_CREDENTIALS; `None` when absent).
    pub fn notify(&mut self, pid: Option<u32>, text: &str) {
        let Some(unit) = self.unit() else { return };
        let from_control = self.control.as_ref().map(|c| c.pid);
        let allowed = match (unit.notify_access, pid) {
            (_, None) => false,
            (NotifyAccess::None, _) => false,
            (NotifyAccess::Main, Some(p)) => Some(p) == self.main,
            (NotifyAccess::Exec, Some(p)) => Some(p) == self.main || Some(p) == from_control,
            (NotifyAccess::All, Some(p)) => {
                Some(p) == self.main
                    || Some(p) == from_control
                    || exec::members(&self.invocation, &self.pgids).contains(&p)
            }
        };
        if !allowed {
            self.log.write(format!(
                "Got notification message from PID {}, but reception only permitted for main PID {} \
                 (NotifyAccess={:?}): {:?}",
                pid.map_or("?".into(), |p| p.to_string()),
                self.main.map_or("0".into(), |p| p.to_string()),
                unit.notify_access,
                text.trim()
            ));
            return;
        }
        let watchdog = unit.watchdog;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) if self.state == Sub::Start => {
                    self.log.write(format!("READY=1 from {}", pid.unwrap_or(0)));
                    self.enter_start_post();
                }
                // Pings count once the watchdog is armed (at READY=1).
                Some(("WATCHDOG", "1")) if self.watchdog_at.is_some() => {
                    self.watchdog_at = watchdog.map(|w| Instant::now() + w);
                }
                Some(("STATUS", s)) => self.status_text = Some(s.to_string()),
                Some(("STOPPING", "1")) if self.state == Sub::Running => {
                    // systemd's "stop by notify": no signal, wait for the main process to exit.
                    self.log
                        .write("STOPPING=1: waiting for the main process to exit");
                    self.set_state(Sub::StopSigterm);
                    self.timer = self
                        .unit()
                        .and_then(|u| u.timeout_stop)
                        .map(|d| Instant::now() + d);
                }
                _ => {}
            }
        }
    }

    pub fn exited(&mut self, pid: u32, exit: Exit) {
        let f = Outcome::of(exit);
        if Some(pid) == self.main {
            self.main = None;
            self.main_exit = Some((pid, exit));
            let _ = fs::remove_file(self.pid_file());
            self.log
                .write(format!("Main process exited, {}", exit.shown()));
            match self.state {
                Sub::Start if f == Outcome::Success => {
                    self.enter_signal(Sub::StopSigterm, Outcome::Protocol)
                }
                Sub::Start => self.enter_signal(Sub::StopSigterm, f),
                Sub::StartPost => self.fail_with(f),
                Sub::Running => {
                    self.fail_with(f);
                    self.enter_signal(Sub::StopSigterm, f);
                }
                // The kill states move on in `tick` once the processes are gone.
                _ => self.fail_with(f),
            }
        } else if self.control.as_ref().is_some_and(|c| c.pid == pid) {
            let c = self.control.take().unwrap();
            self.log.write(format!(
                "Control process {pid} ({:?}) exited, {}",
                c.phase,
                exit.shown()
            ));
            let ok = f == Outcome::Success || c.ignore_failure;
            match (self.state, c.phase) {
                (Sub::StartPre, Phase::Pre(i)) if ok => self.start_pre(i + 1),
                (Sub::StartPre, Phase::Pre(_)) => self.enter_signal(Sub::FinalSigterm, f),
                (Sub::StartPost, Phase::Post(i)) if ok => self.start_post(i + 1),
                (Sub::StartPost, Phase::Post(_)) => self.enter_signal(Sub::StopSigterm, f),
                _ => {}
            }
        }
    }

    /// Timers and the kill states' progress; returns when to look again.
    pub fn tick(&mut self) -> Option<Instant> {
        let now = Instant::now();
        if self.watchdog_at.is_some_and(|t| now >= t) {
            let limit = self.unit().and_then(|u| u.watchdog).unwrap_or_default();
            self.log.write(format!(
                "Watchdog timeout (limit {})!",
                super::syntax::format_timespan(Some(limit))
            ));
            self.watchdog_at = None;
            self.enter_signal(Sub::StopSigabrt, Outcome::Watchdog);
        }
        if self.timer.is_some_and(|t| now >= t) {
            self.timer = None;
            self.on_timeout();
        }
        if self.state.stopping() && self.main.is_none() && self.control.is_none() {
            self.enter_signal(Sub::FinalSigterm, Outcome::Success);
        }
        if self.state.finalizing() && self.targets().is_empty() {
            self.enter_dead(Outcome::Success, true);
        }
        let poll = (self.state.stopping() || self.state.finalizing())
            .then(|| now + Duration::from_millis(25));
        [self.timer, self.watchdog_at, poll]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn on_timeout(&mut self) {
        let what = self.state.name();
        match self.state {
            Sub::StartPre | Sub::Start => {
                self.log
                    .write(format!("{what} operation timed out. Terminating."));
                self.enter_signal(Sub::FinalSigterm, Outcome::Timeout);
            }
            Sub::StartPost => {
                self.log.write("Start-post operation timed out. Stopping.");
                self.enter_signal(Sub::StopSigterm, Outcome::Timeout);
            }
            Sub::StopSigabrt => {
                self.log
                    .write("State 'stop-sigabrt' timed out. Terminating.");
                self.enter_signal(Sub::StopSigterm, Outcome::Timeout);
            }
            Sub::StopSigterm => {
                self.log.write("State 'stop-sigterm' timed out. Killing.");
                self.enter_signal(Sub::StopSigkill, Outcome::Timeout);
            }
            Sub::StopSigkill => {
                self.log
                    .write("Processes still around after SIGKILL. Ignoring.");
                self.fail_with(Outcome::Timeout);
                self.main = None;
                self.control = None;
                self.enter_signal(Sub::FinalSigterm, Outcome::Success);
            }
            Sub::FinalSigterm => {
                self.log.write("State 'final-sigterm' timed out. Killing.");
                self.enter_signal(Sub::FinalSigkill, Outcome::Timeout);
            }
            Sub::FinalSigkill => {
                self.log
                    .write("Processes still around after final SIGKILL. Entering failed mode.");
                self.enter_dead(Outcome::Timeout, true);
            }
            Sub::AutoRestart => {
                self.log
                    .write("Service hold-off time over, scheduling restart.");
                self.n_restarts += 1;
                self.begin_start(false);
            }
            _ => {}
        }
    }

    // ---- stopping ----

    /// Sends the state's signal to everything of the service and waits (`tick`) for it to go;
    /// with nothing left, moves on at once.
    pub(super) fn enter_signal(&mut self, state: Sub, f: Outcome) {
        self.fail_with(f);
        let (name, kill) = self
            .unit()
            .map(|u| u.kill_signal.clone())
            .unwrap_or_else(|| ("SIGTERM".into(), Signal::TERM));
        let sig = match state {
            Sub::StopSigkill | Sub::FinalSigkill => Signal::KILL,
            Sub::StopSigabrt => Signal::ABORT,
            _ => kill,
        };
        let targets = self.targets();
        if targets.is_empty() {
            if state.stopping() {
                return self.enter_signal(Sub::FinalSigterm, Outcome::Success);
            }
            return self.enter_dead(Outcome::Success, true);
        }
        self.log.write(format!(
            "{}: sending {} to {targets:?}",
            state.name(),
            if sig == Signal::KILL {
                "SIGKILL"
            } else if sig == Signal::ABORT {
                "SIGABRT"
            } else {
                &name
            }
        ));
        exec::kill(targets.iter().copied(), sig);
        if sig != Signal::KILL {
            // systemd follows with SIGCONT, so that a stopped process gets the signal.
            exec::kill(targets, Signal::CONT);
        }
        self.set_state(state);
        self.timer = self
            .unit()
            .and_then(|u| u.timeout_stop)
            .map(|d| Instant::now() + d);
    }

    pub(super) fn enter_dead(&mut self, f: Outcome, allow_restart: bool) {
        self.fail_with(f);
        self.timer = None;
        let _ = fs::remove_file(self.pid_file());
        let end = if self.result == Outcome::Success {
            Sub::Dead
        } else {
            Sub::Failed
        };
        self.set_state(end);
        if self.result != Outcome::Success {
            self.log
                .write(format!("Failed with result '{}'.", self.result.name()));
        }
        for r in self.waiting_stop.drain(..) {
            r.finish(0);
        }
        if self.start_after_stop {
            self.start_after_stop = false;
            return self.begin_start(true);
        }
        let failed = self.result != Outcome::Success;
        for mut r in self.waiting_start.drain(..) {
            if failed {
                r.err(format!(
                    "Job for {u} failed because {}.\nSee \"systemctl status {u}\" and \"journalctl -xe\" for details.",
                    self.result.explanation(),
                    u = unit_file::UNIT
                ));
                if self.result == Outcome::StartLimitHit {
                    r.err(format!(
                        "To force a start use \"systemctl reset-failed {u}\"\nfollowed by \"systemctl start {u}\" again.",
                        u = unit_file::UNIT
                    ));
                }
            }
            r.finish(if failed { 1 } else { 0 });
        }
        let restart = self.unit().map_or(Restart::No, |u| u.restart);
        let shall = match restart {
            Restart::No => false,
            Restart::Always => true,
            Restart::OnFailure => failed,
        };
        if allow_restart && !self.forbid_restart && shall {
            let delay = self.unit().map(|u| u.restart_sec).unwrap_or_default();
            self.set_state(Sub::AutoRestart);
            self.timer = Some(Instant::now() + delay);
        }
        self.forbid_restart = false;
    }
}
