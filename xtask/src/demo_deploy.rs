//! The demo's deploy stage: two loopback "units" (real sshd each, fake systemctl/nvpmodel, see
//! trident-e2e's fleet harness) provisioned and updated with `trident deploy`, as a field
//! engineer would a pair of Nanos — except that the package carries this machine's runtime
//! (x86-64), since the units are this machine.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::demo::Stage;
use crate::{describe, root};

const UNITS: [&str; 2] = ["reef-01", "reef-02"];

/// Runs provision → push → status against loopback units; `trident` is the release binary.
pub fn run(trident: &Path, demo: &Path) -> Result<Vec<Stage>> {
    let mut stages = Vec::new();
    let bin = root().join("target/release");
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
    stages.push(Stage {
        name: "provision",
        result: format!(
            "{} loopback units (sshd on 127.0.0.1): layout, service user, systemd unit, key, nvpmodel",
            UNITS.len()
        ),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    run_step(&mut deploy(&["push", &package, "--all"]))?;
    stages.push(Stage {
        name: "push",
        result: format!(
            "{package}: canary {} then the rest; upload, verify, switch, restart, health gate, commit",
            UNITS[0]
        ),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    let mut status = deploy(&["status", "--json"]);
    eprintln!("$ {}", describe(&status));
    let out = status.output()?;
    anyhow::ensure!(
        out.status.success(),
        "trident deploy status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    run_step(&mut deploy(&["status"]))?;
    let lines: Vec<String> = units
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            format!(
                "{} {} {} {:.1} fps level {} {}",
                u["unit"].as_str().unwrap_or("?"),
                u["release"].as_str().unwrap_or("-"),
                u["health"].as_str().unwrap_or("?"),
                u["fps"].as_f64().unwrap_or(0.0),
                u["level_name"].as_str().unwrap_or("-"),
                u["power_mode"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    stages.push(Stage {
        name: "status",
        result: lines.join("; "),
        seconds: t.elapsed().as_secs_f64(),
    });
    drop(fleet);
    Ok(stages)
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
