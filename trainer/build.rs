//! Records build provenance for `metadata.json`: the git revision, the tch version (from
//! Cargo.lock) and the libtorch version found at `$LIBTORCH` (the project venv's torch).

use std::path::Path;
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest)
        .parent()
        .expect("trainer/ sits in the workspace");

    // --no-optional-locks: `git status` refreshes a stale index (a fresh clone's, for one) and
    // rewrites .git/index, which this script watches: the next cargo command would run it again
    // and rebuild this crate and everything above it.
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("--no-optional-locks")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let revision = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}-dirty") } else { rev }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=TRIDENT_GIT_REVISION={revision}");
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".git/HEAD").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".git/index").display()
    );

    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let tch = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"tch\"\n"))
        .and_then(|p| p.lines().find(|l| l.starts_with("version = ")))
        .map(|l| {
            l.trim_start_matches("version = ")
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TRIDENT_TCH_VERSION={tch}");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // tch links libtorch dynamically; an rpath lets the test binaries start without
    // LD_LIBRARY_PATH (the `trident` binary's build script does the same).
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
    let libtorch = std::env::var("LIBTORCH")
        .ok()
        .and_then(|dir| {
            let dir = Path::new(&dir);
            // A pip torch has version.py; an official libtorch archive has build-version.
            std::fs::read_to_string(dir.join("version.py"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("__version__"))
                        .map(|l| l.split('\'').nth(1).unwrap_or("unknown").to_string())
                })
                .or_else(|| {
                    std::fs::read_to_string(dir.join("build-version"))
                        .ok()
                        .map(|s| s.trim().to_string())
                })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TRIDENT_LIBTORCH_VERSION={libtorch}");
}
