//! What the `trident-edge` binary's tests share: running it, showing what it said, and the
//! fixture ensemble's variants and classes.

use std::path::Path;
use std::process::{Command, Output};

pub const VARIANTS: [&str; 3] = ["high_recall", "balanced", "high_precision"];
pub const NAMES: [&str; 3] = ["lionfish", "urchin", "abalone"];

/// Runs `trident-edge ARGS` quietly and returns what it did.
pub fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trident-edge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `GET path` on a fresh connection: the status and body, or `None` while nothing answers.
#[allow(dead_code)] // the binaries that poll /healthz
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
