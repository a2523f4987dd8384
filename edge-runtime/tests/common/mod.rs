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
