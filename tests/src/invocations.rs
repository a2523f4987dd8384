//! Bad invocations of a binary, walked as a table: each must exit with status 2 (the user's
//! input: `trident_core::blame`), say what is wrong, and write nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every path under `dir` (files and folders), relative to it.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// Runs `binary ARGS` in `cwd` for each `(args, words)` of `cases` and checks that each exits 2,
/// that its stderr contains `words`, and that nothing under `cwd` changed. Panics listing every
/// case that failed.
pub fn assert_refused(binary: &Path, cwd: &Path, cases: &[(&[&str], &str)]) {
    let mut failures = Vec::new();
    for (args, words) in cases {
        let before = tree(cwd);
        let o = Command::new(binary)
            .args(*args)
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .env_remove("TRIDENT_SIGN_KEY")
            .output()
            .expect("run the binary");
        let err = String::from_utf8_lossy(&o.stderr);
        let after = tree(cwd);
        let written: Vec<_> = after.difference(&before).collect();
        if o.status.code() != Some(2) || !err.contains(words) || !written.is_empty() {
            failures.push(format!(
                "{} {}: status {:?}, wrote {written:?}, expected `{words}` in:\n{err}",
                binary.file_name().unwrap().to_string_lossy(),
                args.join(" "),
                o.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad invocations were not refused cleanly:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
