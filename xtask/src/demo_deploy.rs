//! The demo's deploy stage: two loopback "units" (real sshd each, fake systemctl/nvpmodel, see
//! trident-e2e's fleet harness) provisioned and updated with `trident deploy`, as a field
//! engineer would a pair of Nanos — except that the package carries this machine's runtime
//! (x86-64), since the units are this machine. Each unit's service plays the demo's test feed
//! as its camera, so the stage can judge what a field engineer cares about: every unit healthy,
//! on the new release, *and* detecting.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::demo::{Demo, Stage};
use crate::demo_floors::{Verdict, deploy_verdict};
use crate::{describe, root};

const UNITS: [&str; 2] = ["reef-01", "reef-02"];

/// How long the units may take, after the push, to detect something on the feed: their first
/// frames through three models on tract, two units on a busy 2-core machine.
const DETECTING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs provision → push → status against loopback units whose camera is `feed`.
pub(crate) fn run(d: &mut Demo, feed: &Path) -> Result<()> {
    let trident = &d.bin.join("trident");
    let demo = &d.dir.clone();
    let bin = d.bin.clone();
    let host_runtime = bin.join("trident-edge");

    // A package for this machine: the release config with this host's runtime and facts.
    let t = Instant::now();
    let glibc = trident_package::elf::inspect(&host_runtime)?
        .max_glibc
        .unwrap_or_else(|| "2.17".into());
    let configs = root().join("configs");
    let text = std::fs::read_to_string(configs.join("release.yaml"))?
        .replace("target: jetson-nano-jp46", "target: loopback")
        .replace(
            "arch: aarch64",
            &format!("arch: {}", std::env::consts::ARCH),
        )
        .replace("max_glibc: \"2.27\"", &format!("max_glibc: \"{glibc}\""))
        .replace(
            "binary: ../target/aarch64-unknown-linux-gnu/release/trident-edge",
            &format!("binary: {}", host_runtime.display()),
        )
        .replace(
            "  - profiles/",
            &format!("  - {}/profiles/", configs.display()),
        )
        .replace(
            "systemd_unit: ../deploy/",
            &format!("systemd_unit: {}/deploy/", root().display()),
        )
        .replace(
            "source: ../edge-runtime/",
            &format!("source: {}/edge-runtime/", root().display()),
        )
        // The prebuilt shim is the Nano's (aarch64); this package runs on this machine.
        .replace(
            "  prebuilt: ../target/aarch64-unknown-linux-gnu/release/tensorrt-shim\n",
            "",
        );
    let config = demo.join("host-release.yaml");
    std::fs::write(&config, text)?;
    let version = env!("CARGO_PKG_VERSION");
    let _ = std::fs::remove_dir_all(demo.join("dist-loopback"));
    run_step(
        Command::new(trident)
            .current_dir(root())
            .arg("export")
            .arg("--package")
            .arg("--config")
            .arg(&config)
            .args([
                "--out",
                "demo/dist-loopback",
                "--sign-key",
                "demo/keys/trident.key",
                "--models",
                "demo/models",
                "--calibration",
                "demo/calibration/calibration.yaml",
            ])
            .env_remove("TRIDENT_SIGN_KEY"),
    )?;
    let package = format!("demo/dist-loopback/trident-{version}-loopback.tar.zst");

    // The units: up until their stdin closes (dropped with `fleet` below, also on error).
    let mut c = Command::new(bin.join("loopback-fleet"));
    c.current_dir(root())
        .env(
            "TRIDENT_FLEET_CAMERA",
            format!("file://{}", std::path::absolute(feed)?.display()),
        )
        .args(["demo/fleet", "demo/fleet.yaml", "demo/keys/trident.pub"])
        .args(UNITS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    eprintln!("$ {}", describe(&c));
    let mut fleet = Fleet(c.spawn().context("start loopback-fleet")?);
    let mut ready = String::new();
    BufReader::new(fleet.0.stdout.as_mut().expect("piped")).read_line(&mut ready)?;
    anyhow::ensure!(ready.trim() == "ready", "loopback-fleet did not start");
    let deploy = |args: &[&str]| {
        let mut c = Command::new(trident);
        c.current_dir(root())
            .args(["deploy", "--inventory", "demo/fleet.yaml"])
            .args(args)
            .env("TRIDENT_STATE_DIR", demo.join("state"));
        c
    };
    run_step(&mut deploy(&["provision", "--all", "--package", &package]))?;
    d.push(Stage::new(
        "provision",
        Verdict::Pass,
        format!(
            "{} loopback units (sshd on 127.0.0.1): layout, service user, systemd unit, key, nvpmodel",
            UNITS.len()
        ),
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    run_step(&mut deploy(&["push", &package, "--all"]))?;
    d.push(Stage::new(
        "push",
        Verdict::Pass,
        format!(
            "{package}: canary {} then the rest; upload, verify, switch, restart, health gate, commit",
            UNITS[0]
        ),
        t.elapsed().as_secs_f64(),
    ));

    // The units start playing the feed at the restart: their status is read until every unit
    // has detected something, or the wait is over (then the verdict says which did not).
    let t = Instant::now();
    let units = loop {
        let mut status = deploy(&["status", "--json"]);
        let out = status.output()?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}",
            describe(&status),
            String::from_utf8_lossy(&out.stderr)
        );
        let units: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        if deploy_verdict(&units, version).0 == Verdict::Pass || t.elapsed() > DETECTING_WAIT {
            break units;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    run_step(&mut deploy(&["status"]))?;
    let (verdict, line) = deploy_verdict(&units, version);
    d.push(Stage::new(
        "status",
        verdict,
        format!("{line} (floor: every unit healthy, on {version}, detecting)"),
        t.elapsed().as_secs_f64(),
    ));
    drop(fleet);
    Ok(())
}

/// The loopback fleet's process: closing its stdin stops the units, then it exits.
struct Fleet(std::process::Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn run_step(c: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(c));
    let status = c.status().with_context(|| describe(c))?;
    anyhow::ensure!(status.success(), "{} failed ({status})", describe(c));
    Ok(())
}
