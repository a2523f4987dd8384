//! Starting the service (start-pre → start → start-post → running, after systemd 237's
//! `service_start()` and its rate limit) and the processes it runs.

use std::collections::VecDeque;
use std::fs;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::Event;
use super::exec::{self, Ctx, Exit};
use super::service::{Control, Outcome, Phase, Service, Sub};
use super::unit_file::{ExecCommand, UnitFile};

impl Service {
    /// `manual`: a `systemctl` job (restarts counted since are flushed), not the restart timer.
    pub(super) fn begin_start(&mut self, manual: bool) {
        let Some(unit) = self.unit().cloned() else {
            // The unit was unloaded (a daemon-reload of a broken file) while it waited.
            self.fail_with(Outcome::Resources);
            return self.enter_dead(Outcome::Resources, false);
        };
        let now = Instant::now();
        let interval = unit.start_limit_interval;
        if !interval.is_zero() {
            if self
                .limit
                .0
                .is_none_or(|t| now.duration_since(t) > interval)
            {
                self.limit = (Some(now), 0);
            }
            if self.limit.1 >= unit.start_limit_burst {
                self.log.write("Start request repeated too quickly.");
                self.result = Outcome::StartLimitHit;
                return self.enter_dead(Outcome::StartLimitHit, false);
            }
            self.limit.1 += 1;
        }
        if manual {
            self.n_restarts = 0;
        }
        self.result = Outcome::Success;
        self.forbid_restart = false;
        self.status_text = None;
        self.invocation = exec::invocation_id();
        self.pgids.clear();
        for d in &unit.cache_directories {
            let _ = fs::create_dir_all(self.ctx.root.join("var/cache").join(d));
        }
        self.log.write(format!(
            "Starting {}... (INVOCATION_ID={})",
            unit.description, self.invocation
        ));
        self.start_pre(0);
    }

    pub(super) fn start_pre(&mut self, i: usize) {
        let cmd = self.unit().and_then(|u| u.exec_start_pre.get(i).cloned());
        match cmd {
            Some(cmd) => {
                if self.spawn_control(&cmd, Phase::Pre(i)) {
                    self.set_state(Sub::StartPre);
                    self.timer = self.timeout_start();
                }
            }
            None => self.enter_start(),
        }
    }

    pub(super) fn enter_start(&mut self) {
        let Some(unit) = self.unit().cloned() else {
            return;
        };
        let Some((env, cwd)) = self.environment(&unit) else {
            return;
        };
        let argv: Vec<String> = exec::expand(&unit.exec_start.words, &env)
            .iter()
            .map(|w| exec::map_path(&self.ctx.root, w))
            .collect();
        let argv = exec::main_command(&self.ctx, self.health_port, argv);
        let full = exec::full_environment(&self.ctx, &env, &self.invocation, unit.watchdog);
        match exec::spawn(&self.ctx, &argv, &full, &cwd, unit.watchdog.is_some()) {
            Ok(child) => {
                let pid = self.watch(child);
                self.main = Some(pid);
                self.main_started = Some(SystemTime::now());
                self.write_pid_file(pid);
                self.log.write(format!(
                    "main process {pid}{}: {}",
                    if unit.exec_start.privileged {
                        " (+ full privileges: not applied)"
                    } else {
                        ""
                    },
                    argv.join(" ")
                ));
                self.set_state(Sub::Start);
                self.timer = self.timeout_start();
            }
            Err(e) => {
                self.log
                    .write(format!("Failed to fork the main process: {e}"));
                self.enter_signal(Sub::FinalSigterm, Outcome::Resources);
            }
        }
    }

    pub(super) fn enter_start_post(&mut self) {
        self.timer = None;
        self.watchdog_at = self
            .unit()
            .and_then(|u| u.watchdog)
            .map(|w| Instant::now() + w);
        self.start_post(0);
    }

    pub(super) fn start_post(&mut self, i: usize) {
        let cmd = self.unit().and_then(|u| u.exec_start_post.get(i).cloned());
        match cmd {
            Some(cmd) => {
                if self.spawn_control(&cmd, Phase::Post(i)) {
                    let wd = self.watchdog_at;
                    self.set_state(Sub::StartPost);
                    self.watchdog_at = wd;
                    self.timer = self.timeout_start();
                }
            }
            None => self.enter_running(),
        }
    }

    pub(super) fn enter_running(&mut self) {
        self.timer = None;
        if self.main.is_none() {
            // It died while ExecStartPost= ran.
            let f = self.result;
            return self.enter_signal(Sub::StopSigterm, f);
        }
        let wd = self.watchdog_at;
        self.set_state(Sub::Running);
        self.watchdog_at = wd;
        for r in self.waiting_start.drain(..) {
            r.finish(0);
        }
    }

    /// Main, control and every other member of the service's group.
    pub(super) fn targets(&self) -> Vec<u32> {
        // A main or control process that ended but whose exit is not handled yet is no target.
        let mut t: Vec<u32> = self
            .main
            .into_iter()
            .chain(self.control.as_ref().map(|c| c.pid))
            .filter(|&p| exec::alive(p))
            .collect();
        if !self.invocation.is_empty() {
            for p in exec::members(&self.invocation, &self.pgids) {
                if !t.contains(&p) {
                    t.push(p);
                }
            }
        }
        t
    }

    /// The unit's environment and working directory; `None` after failing the start (a missing
    /// `EnvironmentFile=`: result `resources`).
    pub(super) fn environment(
        &mut self,
        unit: &UnitFile,
    ) -> Option<(Vec<(String, String)>, PathBuf)> {
        match exec::unit_environment(&self.ctx, unit) {
            Ok(env) => {
                let cwd = match &unit.working_directory {
                    Some((d, optional)) => {
                        let p = PathBuf::from(exec::map_path(&self.ctx.root, d));
                        if *optional && !p.is_dir() {
                            self.ctx.root.clone()
                        } else {
                            p
                        }
                    }
                    None => self.ctx.root.clone(),
                };
                Some((env, cwd))
            }
            Err(why) => {
                self.log.write(why);
                self.enter_signal(Sub::FinalSigterm, Outcome::Resources);
                None
            }
        }
    }

    /// Runs an ExecStartPre=/ExecStartPost= command; false when the start failed instead.
    pub(super) fn spawn_control(&mut self, cmd: &ExecCommand, phase: Phase) -> bool {
        let Some(unit) = self.unit().cloned() else {
            return false;
        };
        let Some((env, cwd)) = self.environment(&unit) else {
            return false;
        };
        let argv: Vec<String> = exec::expand(&cmd.words, &env)
            .iter()
            .map(|w| exec::map_path(&self.ctx.root, w))
            .collect();
        let mut full = exec::full_environment(&self.ctx, &env, &self.invocation, None);
        if let (Phase::Post(_), Some(main)) = (phase, self.main) {
            // As systemd sets it for ExecStartPost= (and ExecReload=/ExecStop=).
            full.push(("MAINPID".into(), main.to_string()));
        }
        match exec::spawn(&self.ctx, &argv, &full, &cwd, false) {
            Ok(child) => {
                let pid = self.watch(child);
                self.log.write(format!(
                    "control process {pid} ({phase:?}{}): {}",
                    if cmd.privileged {
                        ", + full privileges: not applied"
                    } else {
                        ""
                    },
                    cmd.shown()
                ));
                self.control = Some(Control {
                    pid,
                    phase,
                    ignore_failure: cmd.ignore_failure,
                });
                true
            }
            Err(e) => {
                self.log
                    .write(format!("Failed to fork a control process: {e}"));
                self.enter_signal(Sub::FinalSigterm, Outcome::Resources);
                false
            }
        }
    }

    /// Records the child's process group and reaps it on a thread of its own.
    pub(super) fn watch(&mut self, mut child: std::process::Child) -> u32 {
        let pid = child.id();
        self.pgids.push(pid);
        let events = self.events.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = events.send(Event::Exited(pid, Exit::from(status)));
            }
        });
        pid
    }

    pub fn pid_file(&self) -> PathBuf {
        self.ctx.root.join("run/trident-edge.pid")
    }

    pub(super) fn write_pid_file(&self, pid: u32) {
        let path = self.pid_file();
        let tmp = path.with_extension("pid.new");
        let _ = fs::create_dir_all(path.parent().unwrap());
        if fs::write(&tmp, format!("{pid}\n")).is_ok() {
            let _ = fs::rename(&tmp, &path);
        }
    }
}

/// The last `n` lines of the service's log (`systemctl status` shows the journal's).
pub(crate) fn log_tail(ctx: &Ctx, n: usize) -> Vec<String> {
    let text = fs::read_to_string(ctx.root.join("var/log/trident-edge.log")).unwrap_or_default();
    let lines: VecDeque<&str> = text.lines().collect();
    lines
        .iter()
        .skip(lines.len().saturating_sub(n))
        .map(|l| l.to_string())
        .collect()
}
