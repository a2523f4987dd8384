//! systemd's notify protocol (`sd_notify`): `READY=1` once the run loop starts, `WATCHDOG=1`
//! while frames flow or a recovery is under way (see [`crate::run`]), `STOPPING=1` at the end. The unit (`deploy/systemd/trident-edge.service`)
//! sets `Type=notify` and `WatchdogSec=`, so a runtime stuck in a camera driver or a backend is
//! restarted by systemd. A datagram to `$NOTIFY_SOCKET`; no libsystemd needed.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where notifications go and how often the watchdog wants to hear from us.
#[derive(Debug)]
pub struct Notifier {
    socket: PathBuf,
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`), as systemd sets
    /// them for `Type=notify` services; `None` when not started by systemd.
    pub fn from_env() -> Option<Self> {
        let socket = PathBuf::from(std::env::var_os("NOTIFY_SOCKET")?);
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Some(Notifier::new(socket, watchdog))
    }

    pub fn new(socket: PathBuf, watchdog: Option<Duration>) -> Self {
        Notifier {
            socket,
            watchdog,
            last_ping: None,
        }
    }

    /// The watchdog interval systemd asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (`READY=1`, `STATUS=…`). Failures are logged, never fatal: the
    /// runtime must keep running when systemd is not listening.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!("sd_notify {state:?} to {}: {e}", self.socket.display());
        }
    }

    fn send(&self, state: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let name = self.socket.as_os_str().as_encoded_bytes();
        if let Some(abstract_name) = name.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &self.socket)?;
        }
        Ok(())
    }

    /// The loop is alive: `WATCHDOG=1`, at most twice per watchdog interval.
    pub fn alive(&mut self, now: Instant) {
        let Some(interval) = self.watchdog else {
            return;
        };
        if self
            .last_ping
            .is_none_or(|t| now.duration_since(t) >= interval / 2)
        {
            self.notify("WATCHDOG=1");
            self.last_ping = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn notifications_reach_the_socket_and_watchdog_pings_are_throttled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut n = Notifier::new(path, Some(Duration::from_secs(10)));
        n.notify("READY=1");
        let t0 = Instant::now();
        n.alive(t0);
        n.alive(t0 + Duration::from_secs(2)); // too soon: within half the interval
        n.alive(t0 + Duration::from_secs(5));
        n.notify("STOPPING=1");
        assert_eq!(
            received(&listener),
            ["READY=1", "WATCHDOG=1", "WATCHDOG=1", "STOPPING=1"]
        );
    }

    #[test]
    fn without_a_watchdog_there_are_no_pings_and_a_dead_socket_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut n = Notifier::new(path.clone(), None);
        n.alive(Instant::now());
        assert!(received(&listener).is_empty());
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        n.notify("READY=1"); // logged, not a panic or an error
    }
}
