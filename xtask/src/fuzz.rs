//! `cargo xtask fuzz [--time SECONDS] [TARGET…]`: the cargo-fuzz targets of the parsers that read
//! untrusted bytes — the package manifest and archive extractor (what a unit reads,
//! `package/fuzz/`) and the host's ONNX reading (`trident export --onnx`, `exporter/fuzz/`) — one
//! after another, SECONDS each (default 600), starting from the committed seeds in
//! `<crate>/fuzz/seeds/<target>`; new inputs collect in the git-ignored `<crate>/fuzz/corpus/`.
//! Every target runs even after one crashes; the summary gives each one's runs, speed, coverage
//! and crash artifact, and the command fails if any crashed. Installs the nightly toolchain and
//! cargo-fuzz when missing (or says which command would).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::setup::output;
use crate::{cmd, describe, exec, root};

/// One cargo-fuzz project: `<krate>/fuzz/`, its targets in the order they run.
pub struct Project {
    pub krate: &'static str,
    pub targets: &'static [&'static str],
}

pub const PROJECTS: &[Project] = &[
    Project {
        krate: "package",
        targets: &["manifest", "extract", "extract_tar"],
    },
    Project {
        krate: "exporter",
        targets: &["onnx_inspect"],
    },
];

pub const DEFAULT_SECONDS: u64 = 600;

pub const USAGE: &str = "usage: cargo xtask fuzz [--time SECONDS] [TARGET…]
  runs each named cargo-fuzz target (default: all) for SECONDS (default 600), one after another;
  targets: manifest, extract, extract_tar (package/fuzz), onnx_inspect (exporter/fuzz)";

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub struct Args {
    pub seconds: u64,
    /// (project directory's crate, target), in run order.
    pub targets: Vec<(&'static str, &'static str)>,
}

/// `--time SECONDS` / `--time=SECONDS`, target names; a bare number is SECONDS, the form
/// `cargo xtask fuzz 600` the README documented before targets could be named.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let seconds_of = |s: &str| match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    };
    let mut seconds = DEFAULT_SECONDS;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--time" {
            seconds = seconds_of(it.next().ok_or("--time needs a number of seconds")?)?;
        } else if let Some(v) = a.strip_prefix("--time=") {
            seconds = seconds_of(v)?;
        } else if a.starts_with('-') {
            return Err(format!("unknown option `{a}`"));
        } else if a.bytes().all(|b| b.is_ascii_digit()) {
            seconds = seconds_of(a)?;
        } else {
            names.push(a.as_str());
        }
    }
    let all = PROJECTS
        .iter()
        .flat_map(|p| p.targets.iter().map(move |t| (p.krate, *t)));
    let targets = if names.is_empty() {
        all.collect()
    } else {
        let mut picked = Vec::new();
        for name in names {
            let found = all.clone().find(|(_, t)| *t == name).ok_or_else(|| {
                format!("no fuzz target `{name}` (see `cargo xtask fuzz --help`)")
            })?;
            if !picked.contains(&found) {
                picked.push(found);
            }
        }
        picked
    };
    Ok(Args { seconds, targets })
}

/// What one target's run came to, read from libFuzzer's output.
#[derive(Debug, Default, PartialEq)]
pub struct Stats {
    pub runs: Option<u64>,
    /// Seconds spent fuzzing (the row's wall time also counts the build).
    pub fuzz_seconds: Option<u64>,
    pub execs_per_sec: Option<u64>,
    /// Edges covered, from the last status line.
    pub coverage: Option<u64>,
    /// The input that made it fail.
    pub artifact: Option<String>,
    /// libFuzzer reported a crash, a leak, a timeout or an out-of-memory.
    pub crashed: bool,
}

impl Stats {
    /// Updates the figures from one line of libFuzzer's (or the harness's) stderr.
    pub fn scan(&mut self, line: &str) {
        let number = |s: &str| s.trim().parse::<u64>().ok();
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            self.runs = number(v).or(self.runs);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            self.execs_per_sec = number(v).or(self.execs_per_sec);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 123 runs in 61 second(s)": the count when the stats block is missing.
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", seconds, ..] = words.as_slice() {
                self.runs = self.runs.or(number(runs));
                self.fuzz_seconds = number(seconds);
            }
        } else if let Some(p) = line.split("Test unit written to ").nth(1) {
            self.artifact = Some(p.trim().to_string());
            self.crashed = true;
        }
        if line.starts_with('#')
            && let Some(cov) = line.split(" cov: ").nth(1)
        {
            self.coverage = cov.split_whitespace().next().and_then(number);
        }
        if line.contains("ERROR: libFuzzer:")
            || line.starts_with("SUMMARY: libFuzzer:")
            || line.contains("ERROR: AddressSanitizer")
        {
            self.crashed = true;
        }
    }
}

enum Outcome {
    Clean,
    Crashed,
    /// It never got to fuzzing (a build failure, a missing tool) or stopped for another reason.
    Failed(String),
}

pub fn run(args: &Args) -> Result<()> {
    ensure_tools()?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for &(krate, target) in &args.targets {
        let started = Instant::now();
        let (stats, outcome) = fuzz_one(krate, target, args.seconds)?;
        let result = match &outcome {
            Outcome::Clean => "no crash".to_string(),
            Outcome::Crashed => format!(
                "CRASH: {}",
                stats.artifact.as_deref().unwrap_or("(no artifact written)")
            ),
            Outcome::Failed(why) => format!("FAILED: {why}"),
        };
        if !matches!(outcome, Outcome::Clean) {
            failed.push(target);
        }
        let shown = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        rows.push(format!(
            "{target:<13} {:<14} {:>4} s fuzzing ({:>4.0} s in all)  {:>10} runs  {:>6} exec/s  cov {:>5}  {result}",
            format!("{krate}/fuzz"),
            shown(stats.fuzz_seconds),
            started.elapsed().as_secs_f64(),
            shown(stats.runs),
            shown(stats.execs_per_sec),
            shown(stats.coverage),
        ));
    }
    println!("\n== fuzz ({} s per target) ==", args.seconds);
    for row in rows {
        println!("{row}");
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} fuzz target(s) crashed or failed: {}",
            failed.len(),
            args.targets.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The nightly toolchain (libFuzzer's sanitizer flags are unstable) and cargo-fuzz, installed
/// when missing; each failure names the command to run by hand.
fn ensure_tools() -> Result<()> {
    if output(cmd("rustc").args(["+nightly", "--version"])).is_none() {
        exec(cmd("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .context(
                "cargo-fuzz needs the nightly toolchain and installing it failed; run \
                 `rustup toolchain install nightly --profile minimal` (it downloads from \
                 static.rust-lang.org)",
            )?;
    }
    if output(cmd("cargo").args(["+nightly", "fuzz", "--version"])).is_none() {
        exec(cmd("cargo").args(["+nightly", "install", "cargo-fuzz", "--locked"])).context(
            "installing cargo-fuzz failed; run `cargo +nightly install cargo-fuzz --locked` \
             (it builds from crates.io)",
        )?;
    }
    Ok(())
}

fn fuzz_one(krate: &str, target: &str, seconds: u64) -> Result<(Stats, Outcome)> {
    let dir = root().join(krate);
    let fuzz = dir.join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let seeds = fuzz.join("seeds").join(target);
    if !seeds.is_dir() {
        bail!(
            "{} is missing: the seed corpus is committed with the targets",
            seeds.display()
        );
    }
    std::fs::create_dir_all(&corpus)?;
    seed_lock_file(&fuzz)?;
    let mut c = cmd("cargo");
    c.current_dir(&dir)
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    let shown = describe(&c);
    eprintln!("$ {shown}");
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    // Echoed as it comes (the build and libFuzzer's progress), scanned for the figures.
    let mut stats = Stats::default();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            stats.scan(&line);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    let outcome = if stats.crashed {
        Outcome::Crashed
    } else if !status.success() {
        Outcome::Failed(format!(
            "`{shown}` exited with {status}, before or without a crash (see above)"
        ))
    } else if stats.runs.is_none() {
        Outcome::Failed("libFuzzer printed no statistics".into())
    } else {
        Outcome::Clean
    };
    Ok((stats, outcome))
}

/// A fuzz project outside the workspace resolves its own dependencies; starting from the
/// workspace's lock file keeps the fuzzed code on the versions the product ships with.
fn seed_lock_file(fuzz: &Path) -> Result<()> {
    let lock = fuzz.join("Cargo.lock");
    if !lock.exists() {
        std::fs::copy(root().join("Cargo.lock"), &lock)
            .with_context(|| format!("seeding {}", lock.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments_pick_time_and_targets() {
        let all = args(&[]).unwrap();
        assert_eq!(all.seconds, DEFAULT_SECONDS);
        assert_eq!(all.targets.len(), 4);
        assert_eq!(all.targets[3], ("exporter", "onnx_inspect"));
        let some = args(&["--time", "30", "onnx_inspect", "manifest"]).unwrap();
        assert_eq!(
            some,
            Args {
                seconds: 30,
                targets: vec![("exporter", "onnx_inspect"), ("package", "manifest")]
            }
        );
        assert_eq!(args(&["--time=5"]).unwrap().seconds, 5);
        assert_eq!(args(&["120"]).unwrap().seconds, 120);
        assert!(args(&["--time", "0"]).unwrap_err().contains("positive"));
        assert!(args(&["--time"]).unwrap_err().contains("seconds"));
        assert!(
            args(&["nope"])
                .unwrap_err()
                .contains("no fuzz target `nope`")
        );
        assert!(args(&["--fast"]).unwrap_err().contains("--fast"));
    }

    #[test]
    fn every_listed_target_is_a_bin_of_its_fuzz_project_with_seeds() {
        for p in PROJECTS {
            let fuzz = root().join(p.krate).join("fuzz");
            let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
            let bins: Vec<&str> = manifest
                .lines()
                .filter_map(|l| l.strip_prefix("name = \""))
                .filter_map(|l| l.strip_suffix('"'))
                .filter(|n| !n.starts_with("trident-"))
                .collect();
            assert_eq!(bins, p.targets, "{}", fuzz.display());
            for t in p.targets {
                assert!(fuzz.join("seeds").join(t).is_dir(), "{t} has no seeds");
            }
        }
    }

    #[test]
    fn libfuzzer_output_gives_runs_speed_coverage_and_crashes() {
        let clean = "INFO: Seed: 1\n\
            #2\tINITED cov: 310 ft: 311 corp: 4/600b exec/s: 0 rss: 40Mb\n\
            #4096\tpulse  cov: 412 ft: 530 corp: 40/2Kb lim: 43 exec/s: 2048 rss: 41Mb\n\
            Done 12000 runs in 6 second(s)\n\
            stat::number_of_executed_units: 12001\n\
            stat::average_exec_per_sec:     2000\n";
        let mut s = Stats::default();
        clean.lines().for_each(|l| s.scan(l));
        assert_eq!(
            s,
            Stats {
                runs: Some(12001),
                fuzz_seconds: Some(6),
                execs_per_sec: Some(2000),
                coverage: Some(412),
                artifact: None,
                crashed: false
            }
        );
        let crash = "#100\tNEW    cov: 50 ft: 60 corp: 3/10b\n\
            thread '<unnamed>' panicked at src/inspect.rs:1:1:\n\
            ==12== ERROR: libFuzzer: deadly signal\n\
            artifact_prefix='/r/exporter/fuzz/artifacts/onnx_inspect/'; Test unit written to /r/exporter/fuzz/artifacts/onnx_inspect/crash-ab12\n\
            stat::number_of_executed_units: 101\n";
        let mut s = Stats::default();
        crash.lines().for_each(|l| s.scan(l));
        assert!(s.crashed);
        assert_eq!(
            s.artifact.as_deref(),
            Some("/r/exporter/fuzz/artifacts/onnx_inspect/crash-ab12")
        );
        assert_eq!((s.runs, s.coverage), (Some(101), Some(50)));
    }
}
