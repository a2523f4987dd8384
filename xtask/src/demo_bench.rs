//! The demo's last stage: a short `trident-edge bench` of the installed package on this host
//! (the test feed, the host-cpu profile's ladder), its headline figures, and the profile with
//! the measured figures.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::demo::Stage;
use crate::demo_floors::Verdict;
use crate::root;

/// Measured frames per model and per level: enough for stable medians, short for a demo.
const FRAMES: &str = "30";

pub(crate) fn run(edge: &Path, release: &Path) -> Result<Stage> {
    let t = Instant::now();
    let out = root().join("demo/bench");
    let profile = out.join("host-cpu.measured.yaml");
    let _ = std::fs::remove_file(&profile);
    let mut bench = crate::demo_feed::edge_on_feed(edge, "bench", release);
    bench
        .args([
            "--frames",
            FRAMES,
            "--warmup",
            "3",
            "--idle",
            "2",
            "--out",
            "demo/bench",
            "--write-profile",
        ])
        .arg(&profile);
    println!();
    eprintln!("$ {}", crate::describe(&bench));
    let o = bench.output()?;
    print!("{}", String::from_utf8_lossy(&o.stdout));
    let stderr = String::from_utf8_lossy(&o.stderr);
    // A slow machine may measure figures that no longer keep the host ladder best-first: the
    // report stands and the stage says why no profile was written; anything else fails.
    let profile_refused = stderr.contains("nothing written");
    anyhow::ensure!(
        o.status.success() || profile_refused,
        "trident-edge bench failed: {stderr}"
    );
    let json = out.join("bench.json");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&json).with_context(|| format!("reading {}", json.display()))?,
    )?;
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let models: Vec<String> = report["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{} p50 {:.1} ms",
                m["name"].as_str().unwrap_or("?"),
                num(&m["latency_ms"]["p50"])
            )
        })
        .collect();
    let level = |name: &str| {
        report["levels"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .map(|l| {
                format!(
                    "{name} {:.1} fps, {:.2} J/frame",
                    num(&l["fps"]),
                    num(&l["energy_j_per_frame"])
                )
            })
    };
    let levels: Vec<String> = ["ensemble", "balanced"]
        .into_iter()
        .filter_map(level)
        .collect();
    let power = if report["setup"]["power_measured"] == true {
        report["setup"]["power_source"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    } else {
        "energy estimated from the profile".into()
    };
    let written = if profile_refused {
        "measured profile NOT written (ladder no longer best-first at this machine's speed)".into()
    } else {
        format!(
            "measured profile → {}",
            profile.strip_prefix(root()).unwrap_or(&profile).display()
        )
    };
    // Figures for every model and for the ensemble level are the bench's product.
    let measured = report["models"]
        .as_array()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|m| num(&m["latency_ms"]["p50"]) > 0.0))
        && report["levels"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["name"] == "ensemble" && num(&l["fps"]) > 0.0);
    Ok(Stage::new(
        "host bench",
        Verdict::from_ok(measured),
        format!(
            "{}; {} ({power}); {written}",
            models.join(", "),
            levels.join(", ")
        ),
        t.elapsed().as_secs_f64(),
    ))
}
