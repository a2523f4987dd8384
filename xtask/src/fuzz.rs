//! `cargo xtask fuzz [SECONDS]`: each cargo-fuzz target of the package parsers (the manifest and
//! the archive extractor, what a unit reads from untrusted bytes) for SECONDS (default 600),
//! starting from the committed seeds in `package/fuzz/seeds/<target>`; new inputs collect in
//! the git-ignored `package/fuzz/corpus/<target>`. Installs cargo-fuzz (nightly) when missing.

use anyhow::{Context, Result, bail};

use crate::{cmd, exec, root};

pub const TARGETS: [&str; 3] = ["manifest", "extract", "extract_tar"];

pub fn run(seconds: u64) -> Result<()> {
    if !cmd("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        exec(cmd("cargo").args(["+nightly", "install", "cargo-fuzz", "--locked"])).context(
            "installing cargo-fuzz (needs the nightly toolchain: rustup toolchain install nightly)",
        )?;
    }
    let fuzz = root().join("package/fuzz");
    let mut report = Vec::new();
    for target in TARGETS {
        let corpus = fuzz.join("corpus").join(target);
        let seeds = fuzz.join("seeds").join(target);
        std::fs::create_dir_all(&corpus)?;
        if !seeds.is_dir() {
            bail!(
                "{} is missing: the seed corpus is committed with the targets",
                seeds.display()
            );
        }
        let mut c = cmd("cargo");
        c.current_dir(root().join("package"))
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1");
        let started = std::time::Instant::now();
        exec(&mut c).with_context(|| {
            format!("fuzz target `{target}` found a failure (see package/fuzz/artifacts/{target})")
        })?;
        let inputs = std::fs::read_dir(&corpus)?.count();
        report.push(format!(
            "{target}: {:.0} s, no crash, corpus {inputs} inputs",
            started.elapsed().as_secs_f64()
        ));
    }
    println!("\n== fuzz ==");
    for line in report {
        println!("{line}");
    }
    Ok(())
}
