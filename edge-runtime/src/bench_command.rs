//! `trident-edge bench`: load the ensemble as `run` does, measure, write the report, and on
//! request the measured deployment profile.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use trident_core::bench::{BenchReport, BenchSetup};
use trident_edge::bench::measured_profile;
use trident_edge::bench::render::{self, REPORT_JSON};
use trident_edge::bench::{BenchRequest, LevelChoice, Plan, ladder, total_frames};
use trident_edge::governor::Profile;
use trident_edge::source::{Source, SourceOptions, SourceUri};

use crate::cli::BenchArgs;
use crate::commands::{EnsembleArgs, load_ensemble};
use trident_core::blame::Usage;

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if !(a.idle.is_finite() && a.idle >= 0.0) {
        return Err(Usage(format!("--idle {}: expected seconds ≥ 0", a.idle)).into());
    }
    let mut profile = a.profile.as_deref().map(Profile::load).transpose()?;
    // The operator's profile as written: --write-profile replaces its estimates only, not the
    // ladder that loading fits to the calibration tables below.
    let as_written = profile.clone();
    let ensemble_args = EnsembleArgs {
        models: &a.models,
        tables: &a.tables,
        backend: &a.backend,
    };
    let (deployment, mut ensemble) =
        load_ensemble(&ensemble_args, profile.as_mut().zip(a.profile.as_deref()))?;
    let choice = if a.levels.iter().any(|l| l == "all") {
        LevelChoice::All
    } else {
        LevelChoice::Named(a.levels.clone())
    };
    let levels = ladder(
        profile.as_ref(),
        &ensemble,
        &choice,
        f64::from(a.source_fps),
    )?;
    let uri: SourceUri = a.source.parse()?;
    // The report names the source as every log does: credentials masked.
    let shown_source = uri.to_string();
    let mut source = Source::open(
        uri,
        SourceOptions {
            width: a.width,
            height: a.height,
            fps: a.source_fps,
            // A clip loops so that every model and level sees as many frames as asked.
            loop_file: true,
            realtime_file: false,
            ..SourceOptions::default()
        },
    )?;
    let plan = Plan {
        frames: a.frames,
        warmup: a.warmup,
        idle_seconds: a.idle,
        levels,
        system_root: a.system_root.clone(),
    };
    let setup = BenchSetup {
        source: shown_source,
        source_fps: a.source_fps,
        frames: a.frames,
        warmup: a.warmup,
        profile: profile.as_ref().map(|p| p.name.clone()),
        package: deployment
            .manifest
            .as_ref()
            .map(|m| format!("{} {}", m.name, m.version)),
        models_dir: a.models.shown(),
        calibration: ensemble.calibration.as_ref().map(|c| c.origin.clone()),
        ..BenchSetup::default()
    };
    let progress = ProgressBar::new(total_frames(
        &plan,
        ensemble.members.len(),
        ensemble.has_tta(),
    ));
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} bench {msg:32} [{bar:30}] {pos}/{len} frames, {elapsed}",
        )
        .expect("constant template")
        .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let report = trident_edge::bench::run(BenchRequest {
        ensemble: &mut ensemble,
        source: &mut source,
        profile: profile.as_ref(),
        plan,
        setup,
        gstreamer: Some(gstreamer_version()),
        progress: &progress,
    });
    progress.finish_and_clear();
    let report = report?;
    let written = render::write_all(&report, &a.out)
        .with_context(|| format!("writing the report into {}", a.out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, &a.out.join(REPORT_JSON));
        for p in &written {
            println!("  wrote {}", p.display());
        }
    }
    if let (Some(path), Some(base)) = (&a.write_profile, &as_written) {
        let (_, changes) = measured_profile::write(path, base, &report)?;
        println!(
            "  profile with the measured figures: {} ({})",
            path.display(),
            changes
                .latency
                .iter()
                .chain(&changes.power)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        if !changes.kept.is_empty() {
            println!("    kept from `{}`: {}", base.name, changes.kept.join("; "));
        }
    }
    Ok(())
}

fn gstreamer_version() -> String {
    let (major, minor, micro, _) = gstreamer::version();
    format!("{major}.{minor}.{micro}")
}

fn print_summary(r: &BenchReport, json: &std::path::Path) {
    println!(
        "trident-edge bench: {} on {} ({}) → {}",
        r.setup.source,
        r.device.board.as_deref().unwrap_or(&r.device.hostname),
        r.device.power_mode.as_deref().unwrap_or("no nvpmodel"),
        json.display()
    );
    if let Some(h) = render::headline(r) {
        println!("  {h}");
    }
    if let Some(i) = &r.idle {
        println!("  idle {:.2} W ({})", i.power_w, r.setup.power_source);
    }
    for m in &r.models {
        println!(
            "  model {} ({} {}): p50 {:.1} ms, p95 {:.1}, p99 {:.1} (letterbox {:.1}, forward {:.1}, decode {:.1}){}",
            m.name,
            m.backend,
            m.precision,
            m.latency_ms.p50,
            m.latency_ms.p95,
            m.latency_ms.p99,
            m.preprocess_ms.mean,
            m.forward_ms.mean,
            m.postprocess_ms.mean,
            m.tta
                .as_ref()
                .map(|t| format!("; TTA ×{:.2}", t.factor))
                .unwrap_or_default()
        );
    }
    let measured = if r.setup.power_measured {
        ""
    } else {
        " (estimated)"
    };
    for l in &r.levels {
        println!(
            "  level {}: {:.2} fps ({:.2} capacity, asked {:.1}{}), frame p50 {:.1} ms, fusion {:.2} ms{}, dropped {}",
            l.name,
            l.fps,
            l.capacity_fps,
            l.rate_fps,
            if l.meets_rate { "" } else { ", NOT met" },
            l.frame_ms.p50,
            l.fuse_ms.mean,
            match (l.power_w, l.energy_j_per_frame) {
                (Some(w), Some(j)) => format!(", {w:.2} W, {j:.3} J/frame{measured}"),
                _ => String::new(),
            },
            l.dropped
        );
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
}
