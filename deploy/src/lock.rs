//! One deploy at a time per unit: `flock` on `/opt/trident/deploy.lock`, held by an SSH session
//! that stays open for the whole push, rollback or provisioning.
//!
//! The lock belongs to a process on the unit (`cat`, reading the session's stdin), so it is
//! released however this side ends: dropping [`UnitLock`] closes stdin; a killed host or a cut
//! link ends the session and its `cat`. Nothing needs cleaning up after a crash, which a lock
//! *file* would. The holder writes who it is and since when beside the lock; a second deploy
//! fails fast naming them, or waits (`--wait`). The unit's own start guard takes the same lock
//! before it switches releases, so it never acts in the middle of a deploy.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::quote::{quote, quote_all};
use crate::ssh::{AS_ROOT, Ssh, last_line};

/// `sh -c` with `$1` root, `$2` who, `$3` seconds to wait (0: fail at once). Prints `locked`, or
/// `busy: <holder>`; then holds the lock until stdin closes.
const HOLD: &str = r#"set -eu
T="$1/opt/trident"
mkdir -p "$T"
exec 9>>"$T/deploy.lock"
if ! flock -n 9; then
  holder=$(cat "$T/deploy.lock.owner" 2>/dev/null || echo "another deploy")
  if [ "$3" = 0 ]; then echo "busy: $holder"; exit 0; fi
  echo "waiting: $holder"
  if ! flock -w "$3" 9; then echo "busy: $holder"; exit 0; fi
fi
printf '%s since %s (unit clock)\n' "$2" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$T/deploy.lock.owner"
echo locked
exec cat > /dev/null"#;

/// The unit's deploy lock, held until dropped.
#[derive(Debug)]
pub struct UnitLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for UnitLock {
    fn drop(&mut self) {
        // EOF for the unit's `cat`: it exits and the lock goes with it.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Ssh {
    /// Takes `unit`'s deploy lock for `who` (e.g. "push 1.2.0 by alice@laptop"). Held: another
    /// holder makes this fail at once naming it, or, with `wait`, wait up to that long.
    pub fn lock(&self, unit: &Unit, who: &str, wait: Option<Duration>) -> Result<UnitLock> {
        let secs = wait.map_or(0, |w| w.as_secs().max(1)).to_string();
        let mut c = self.command(unit);
        c.arg(format!(
            "{AS_ROOT} sh -c {} sh {}",
            quote(HOLD),
            quote_all(&[&unit.root, who, &secs])
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| Error::remote(&unit.name, "lock", format!("cannot start ssh: {e}")))?;
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut answer = None;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(holder) = line.strip_prefix("waiting: ") {
                tracing::info!(unit = %unit.name, "waiting for the unit's deploy lock, held by {holder}");
                continue;
            }
            answer = Some(line);
            break;
        }
        match answer.as_deref() {
            Some("locked") => Ok(UnitLock { child, stdin }),
            Some(busy) if busy.starts_with("busy: ") => {
                drop(stdin);
                let _ = child.wait();
                Err(Error::Busy {
                    unit: unit.name.clone(),
                    holder: busy["busy: ".len()..].to_string(),
                })
            }
            _ => {
                drop(stdin);
                let out = child.wait_with_output();
                let why = out
                    .ok()
                    .and_then(|o| last_line(&String::from_utf8_lossy(&o.stderr)).map(String::from))
                    .unwrap_or_else(|| "no answer".into());
                Err(Error::remote(
                    &unit.name,
                    "lock",
                    format!("cannot take the deploy lock: {why}"),
                ))
            }
        }
    }
}

/// "push 1.2.0 by alice@laptop (pid 4242)": who holds a lock, for the next one to read.
pub fn holder(action: &str) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("{action} by {user}@{host} (pid {})", std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_holder_names_the_action_and_this_process() {
        let h = super::holder("push 1.2.0");
        assert!(h.starts_with("push 1.2.0 by "), "{h}");
        assert!(h.ends_with(&format!("(pid {})", std::process::id())), "{h}");
    }
}
