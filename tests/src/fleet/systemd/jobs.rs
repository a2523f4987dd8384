//! The `systemctl` jobs on the service: start, stop, restart (a blocking request is parked
//! until its job settles), reset-failed, and the manager's own teardown.

use std::fs;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::Reply;
use super::exec;
use super::service::{Outcome, Service, Sub};
use super::unit_file;

impl Service {
    pub fn start(&mut self, mut reply: Reply, no_block: bool) {
        match self.state {
            Sub::Running => return reply.finish(0),
            Sub::Dead | Sub::Failed => {
                self.queue(&mut reply, no_block, true);
                self.begin_start(true);
            }
            Sub::StartPre | Sub::Start | Sub::StartPost | Sub::AutoRestart => {
                self.queue(&mut reply, no_block, true)
            }
            _ => {
                self.start_after_stop = true;
                self.queue(&mut reply, no_block, true);
            }
        }
        if no_block {
            reply.finish(0);
        }
    }

    pub fn stop(&mut self, mut reply: Reply, no_block: bool) {
        self.start_after_stop = false;
        for r in self.waiting_start.drain(..) {
            let mut r = r;
            r.err(format!("Job for {} canceled.", unit_file::UNIT));
            r.finish(1);
        }
        match self.state {
            Sub::Dead | Sub::Failed => return reply.finish(0),
            Sub::AutoRestart => {
                self.timer = None;
                self.set_state(Sub::Dead);
                return reply.finish(0);
            }
            Sub::StartPre | Sub::Start | Sub::StartPost => {
                self.forbid_restart = true;
                self.queue(&mut reply, no_block, false);
                self.enter_signal(Sub::StopSigterm, Outcome::Success);
            }
            Sub::Running => {
                self.forbid_restart = true;
                self.queue(&mut reply, no_block, false);
                self.enter_signal(Sub::StopSigterm, Outcome::Success);
            }
            _ => {
                self.forbid_restart = true;
                self.queue(&mut reply, no_block, false);
            }
        }
        if no_block {
            reply.finish(0);
        }
    }

    pub fn restart(&mut self, mut reply: Reply, no_block: bool) {
        match self.state {
            Sub::Dead | Sub::Failed | Sub::AutoRestart => {
                self.timer = None;
                self.queue(&mut reply, no_block, true);
                self.begin_start(true);
            }
            Sub::StartPre | Sub::Start | Sub::StartPost | Sub::Running => {
                self.forbid_restart = true;
                self.start_after_stop = true;
                self.queue(&mut reply, no_block, true);
                self.enter_signal(Sub::StopSigterm, Outcome::Success);
            }
            _ => {
                self.forbid_restart = true;
                self.start_after_stop = true;
                self.queue(&mut reply, no_block, true);
            }
        }
        if no_block {
            reply.finish(0);
        }
    }

    /// Parks a blocking request until its job settles (`--no-block` answers at once instead).
    pub(super) fn queue(&mut self, reply: &mut Reply, no_block: bool, start: bool) {
        if no_block {
            return;
        }
        let parked = std::mem::replace(reply, Reply::settled());
        if start {
            self.waiting_start.push(parked);
        } else {
            self.waiting_stop.push(parked);
        }
    }

    /// `reset-failed`: out of `failed`, and the start rate limit and restart counter start over.
    pub fn reset_failed(&mut self) {
        self.limit = (None, 0);
        self.n_restarts = 0;
        if self.state == Sub::Failed {
            self.result = Outcome::Success;
            self.set_state(Sub::Dead);
        }
    }

    /// Teardown: the whole group gets SIGTERM, then SIGKILL after at most `grace`.
    pub fn shutdown(&mut self, grace: Duration) {
        self.forbid_restart = true;
        let deadline = Instant::now() + grace;
        let mut sig = Signal::TERM;
        loop {
            let targets = self.targets();
            if targets.is_empty() {
                break;
            }
            exec::kill(targets, sig);
            if Instant::now() > deadline {
                if sig == Signal::KILL {
                    break;
                }
                sig = Signal::KILL;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(self.pid_file());
    }
}
