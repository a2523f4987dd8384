//! Project automation, cargo-xtask style: `cargo xtask setup|cross|fuzz|demo|test|bench|soak`.
//!
//! Rust rather than a Makefile or shell scripts: it runs wherever cargo does, needs nothing
//! installed first, and the demo can call the library crates directly. Every command runs
//! `setup` first, which is idempotent and takes seconds on a ready machine.

mod cross;
mod demo;
mod demo_active;
mod demo_bench;
mod demo_cache;
mod demo_deploy;
mod demo_edge;
mod demo_feed;
mod demo_floors;
mod demo_release;
mod fuzz;
mod gst_symbols;
mod setup;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup   install what the project needs (apt packages, .venv, aarch64 target, zig); idempotent
  fuzz [--time SECONDS] [TARGET…]
          cargo-fuzz targets one after another, SECONDS each (default 600): the package parsers
          (manifest, extract, extract_tar) and the ONNX reading of `trident export --onnx`
          (onnx_inspect); all of them unless named; fails if any crashed
  cross   setup, then trident-edge for the Jetson Nano (aarch64, glibc 2.27) with cargo-zigbuild
  demo    setup, build, then run the pipeline on synthetic data and print a summary
  test    setup, then rustfmt check, one build of every target under clippy -D warnings, the
          whole test suite with the aarch64 runtime (cross) built beside it, then the tests that
          run that binary under qemu-aarch64
  bench   setup, then the benchmarks (evaluation speed vs pycocotools; the edge run loop's
          overhead over the models alone and a memory soak, TRIDENT_SOAK_SECS=600 by default;
          the ensemble on tract and ONNX Runtime vs a Python ONNX Runtime + ensemble-boxes
          reference; export time and ONNX latency, tract vs ONNX Runtime, at 320 and 640;
          `trident fuse` vs ensemble-boxes; a rollout to 8 loopback units vs 1)
  soak [--minutes 30] [--fault-every 180] [--fps 15] [--buffer-kib 16]
          setup, then the edge run loop on a looping file with a fault every few minutes (camera
          stall, model error, disk full); prints frames processed vs offered, lines lost, RSS
          growth and each fault's recovery time";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("cross") => setup::run().and_then(|_| cross::run()),
        Some("fuzz") if args[1..].iter().any(|a| a == "-h" || a == "--help") => {
            println!("{}", fuzz::USAGE);
            Ok(())
        }
        Some("fuzz") => match fuzz::parse_args(&args[1..]) {
            Ok(a) => fuzz::run(&a),
            Err(e) => {
                eprintln!("xtask fuzz: {e}\n{}", fuzz::USAGE);
                std::process::exit(2);
            }
        },
        Some("demo") => setup::run().and_then(|_| demo::run()),
        Some("test") => setup::run().and_then(|_| test()),
        Some("bench") => setup::run().and_then(|_| bench()),
        Some("soak") => setup::run().and_then(|_| soak(&args[1..])),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// The repository root (xtask/ lives in it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is in the repository root")
        .to_path_buf()
}

/// A command run from the repository root with the venv's tools (zig, cargo-zigbuild) on PATH.
pub fn cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    c.current_dir(root());
    let venv_bin = root().join(".venv/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv_bin];
    paths.extend(std::env::split_paths(&path));
    c.env(
        "PATH",
        std::env::join_paths(paths).expect("PATH entries are valid"),
    );
    c
}

/// Runs a command, echoing it, failing on a non-zero exit.
pub fn exec(c: &mut Command) -> Result<()> {
    let shown = describe(c);
    eprintln!("$ {shown}");
    let status = c
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}

/// The command line as a person would type it.
pub fn describe(c: &Command) -> String {
    let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy()).collect();
    format!("{} {}", c.get_program().to_string_lossy(), args.join(" "))
}

/// The tests of the cross-compiled runtime (`cli/tests/package_aarch64.rs`), which need its
/// binary: they run once the background cross build is done.
const AARCH64_TESTS: &str = "package_aarch64::";

/// What a run from a fresh clone writes: target/ (~4.3 GiB) and the test venv (~5.7 GiB, most of
/// it PyTorch's CUDA libraries), plus the tests' temporary files.
const FRESH_RUN_GIB: u64 = 12;

/// Says so up front when the disk cannot hold a run: otherwise it fails far into the suite, as
/// many unrelated tests with "No space left on device".
fn warn_if_low_disk() {
    let out = Command::new("df").args(["-Pk"]).arg(root()).output();
    let free_kib = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    });
    if let Some(kib) = free_kib
        && kib < FRESH_RUN_GIB << 20
    {
        eprintln!(
            "xtask: warning: {:.1} GiB free where the repository is; a run from a fresh clone needs about {FRESH_RUN_GIB} GiB (target/ and .venv): tests may fail with \"No space left on device\"",
            kib as f64 / (1 << 20) as f64
        );
    }
}

fn test() -> Result<()> {
    // A CI run builds once from scratch: incremental caches would only double its disk use.
    let ci = std::env::var_os("CI").is_some();
    let lint = clippy_wrapper()?;
    // One compile serves clippy and the tests: the workspace's crates are compiled by
    // clippy-driver, which lints and generates code in the same pass, so the dependencies are
    // not checked a second time as `cargo clippy` would (minutes on two cores).
    let cargo = || {
        let mut c = cmd("cargo");
        if ci {
            c.env("CARGO_INCREMENTAL", "0");
        }
        for (k, v) in &lint {
            c.env(k, v);
        }
        c
    };
    exec(cmd("cargo").args(["fmt", "--all", "--", "--check"]))?;
    warn_if_low_disk();
    // The arm64 sysroot first (apt downloads), so the background build below only compiles.
    cross::sysroot()?;
    exec(cargo().args(["test", "--workspace", "--all-targets", "--no-run"]))
        .context("clippy -D warnings and the test build")?;

    // The suite and the Nano binary's release build together: the suite leaves a core idle
    // much of the time (sshd units, service restarts, qemu), which the build fills.
    let mut suite = cargo();
    suite
        .args(["test", "--workspace", "--", "--skip", AARCH64_TESTS])
        .stderr(Stdio::piped());
    eprintln!("$ {}", describe(&suite));
    let mut child = suite.spawn().context("cannot start cargo test")?;
    let stderr = child.stderr.take().expect("piped");
    let (running, started) = std::sync::mpsc::channel();
    let forward = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Cargo holds the build folder's lock until the first test binary runs.
            if line.trim_start().starts_with("Running ") {
                let _ = running.send(());
            }
            eprintln!("{line}");
        }
    });
    let cross = started.recv().is_ok().then(|| {
        let log = root().join("target/xtask-cross.log");
        std::thread::spawn(move || cross::build_in_background(&log))
    });
    let suite_status = child.wait().context("waiting for cargo test")?;
    let _ = forward.join();
    let Some(cross) = cross else {
        bail!("cargo test failed with {suite_status} before running any test");
    };
    let built = match cross.join().expect("the cross build thread does not panic") {
        Ok(built) => built,
        Err(e) if suite_status.success() => return Err(e),
        Err(e) => bail!("cargo test --workspace failed with {suite_status}; and {e:#}"),
    };
    let aarch64 = exec(
        // `--workspace` as for the suite: the same feature unification, so nothing rebuilds.
        cargo()
            .args([
                "test",
                "--workspace",
                "--test",
                "integration",
                AARCH64_TESTS,
            ])
            .env("TRIDENT_EDGE_AARCH64", &built.binary)
            .env("TRIDENT_AARCH64_SYSROOT", &built.sysroot),
    );
    if !suite_status.success() {
        bail!("cargo test --workspace failed with {suite_status}");
    }
    aarch64
}

/// The environment `cargo clippy -- -D warnings` gives the compiler, for a `cargo test` build:
/// clippy-driver wraps rustc for the workspace's crates only, with the lint flags in
/// `CLIPPY_ARGS` (each followed by clippy's separator).
fn clippy_wrapper() -> Result<Vec<(&'static str, String)>> {
    let sysroot = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let driver =
        PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()).join("bin/clippy-driver");
    if !driver.is_file() {
        bail!(
            "{} is missing: install clippy (`rustup component add clippy`)",
            driver.display()
        );
    }
    let args: String = ["-D", "warnings"]
        .iter()
        .map(|a| format!("{a}__CLIPPY_HACKERY__"))
        .collect();
    Ok(vec![
        ("RUSTC_WORKSPACE_WRAPPER", driver.display().to_string()),
        ("CLIPPY_ARGS", args),
    ])
}

/// The fault soak bench, its arguments passed through.
fn soak(args: &[String]) -> Result<()> {
    exec(
        cmd("cargo")
            .args(["bench", "-p", "trident-edge", "--bench", "soak", "--"])
            .args(args),
    )
}

fn bench() -> Result<()> {
    exec(cmd("cargo").args(["bench", "-p", "trident-e2e"]))?;
    exec(cmd("cargo").args([
        "bench",
        "-p",
        "trident-calibration",
        "--bench",
        "fuse_speed",
    ]))?;
    // The loopback units run the host's release trident-edge.
    exec(cmd("cargo").args([
        "build",
        "--release",
        "-p",
        "trident-edge",
        "--bin",
        "trident-edge",
    ]))?;
    exec(cmd("cargo").args(["bench", "-p", "trident-deploy", "--bench", "fleet_push"]))
}
