//! The benchmark's outputs beside `bench.json`: `bench.md` for people and two charts —
//! `latency.png` (each model's latency distribution as a cumulative curve) and `levels.png`
//! (FPS and joules per frame at each ladder level).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use trident_core::bench::{BenchReport, LevelBench, Millis};
use trident_plot::{Bar, BarPanel, Chart, Series, bar_charts, line_chart};

use crate::error::{Error, Result};

pub const REPORT_JSON: &str = "bench.json";
pub const REPORT_MD: &str = "bench.md";
pub const LATENCY_PNG: &str = "latency.png";
pub const LEVELS_PNG: &str = "levels.png";

/// Writes `bench.md`, the charts and `bench.json` (last, each file atomically) into `dir`.
pub fn write_all(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| trident_core::Error::io("cannot create", dir, e))?;
    let mut written = Vec::new();
    if !report.models.is_empty() {
        let p = dir.join(LATENCY_PNG);
        latency_chart(report, &p)?;
        written.push(p);
    }
    if !report.levels.is_empty() {
        let p = dir.join(LEVELS_PNG);
        levels_chart(report, &p)?;
        written.push(p);
    }
    let md = dir.join(REPORT_MD);
    trident_core::fsutil::write_atomic(&md, markdown(report).as_bytes())?;
    written.push(md);
    let json = dir.join(REPORT_JSON);
    report.save(&json)?;
    written.push(json);
    Ok(written)
}

fn plot_error(e: trident_plot::Error) -> Error {
    Error::Bench(e.to_string())
}

/// Cumulative distribution of each model's pass latency.
fn latency_chart(report: &BenchReport, path: &Path) -> Result<()> {
    let mut series = Vec::new();
    let mut x_max: f64 = 0.0;
    for m in &report.models {
        let mut s = m.latency_samples_ms.clone();
        s.retain(|x| x.is_finite());
        s.sort_by(f64::total_cmp);
        let n = s.len() as f64;
        x_max = x_max.max(s.last().copied().unwrap_or(0.0));
        series.push(Series {
            name: format!(
                "{} ({}, p50 {:.1} / p99 {:.1} ms)",
                m.name, m.backend, m.latency_ms.p50, m.latency_ms.p99
            ),
            points: s
                .iter()
                .enumerate()
                .map(|(i, &x)| (x, (i as f64 + 1.0) / n))
                .collect(),
            emphasis: false,
        });
    }
    let title = format!("Latency per pass — {}", device_line(report));
    let chart = Chart {
        title: &title,
        x_label: "milliseconds (letterbox + forward + decode)",
        y_label: "fraction of passes ≤ x",
        x_range: (0.0, (x_max * 1.05).max(1.0)),
        y_range: (0.0, 1.0),
    };
    line_chart(path, &chart, &series).map_err(plot_error)
}

/// FPS (with each level's asked rate) and energy per frame at each level.
fn levels_chart(report: &BenchReport, path: &Path) -> Result<()> {
    let bars = |f: &dyn Fn(&LevelBench) -> f64| {
        report
            .levels
            .iter()
            .map(|l| Bar {
                label: l.name.clone(),
                value: f(l),
            })
            .collect::<Vec<_>>()
    };
    let fastest_rate = report.levels.iter().map(|l| l.rate_fps).fold(0.0, f64::max);
    let energy_label = if report.setup.power_measured {
        "J per frame (measured)"
    } else {
        "J per frame (ESTIMATED)"
    };
    let panels = [
        BarPanel {
            title: "Ensemble FPS per ladder level (unpaced)",
            y_label: "frames per second",
            bars: bars(&|l| l.fps),
            reference: (fastest_rate > 0.0).then(|| {
                (
                    format!("highest asked rate, {fastest_rate:.1} fps"),
                    fastest_rate,
                )
            }),
        },
        BarPanel {
            title: "Energy per frame",
            y_label: energy_label,
            bars: bars(&|l| l.energy_j_per_frame.unwrap_or(f64::NAN)),
            reference: None,
        },
    ];
    bar_charts(path, 2, &panels).map_err(plot_error)
}

fn device_line(r: &BenchReport) -> String {
    let board = r.device.board.as_deref().unwrap_or(&r.device.hostname);
    match &r.device.power_mode {
        Some(mode) => format!("{board}, {mode}"),
        None => board.to_string(),
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn text(x: Option<&str>) -> &str {
    x.unwrap_or("—")
}

fn dist(m: &Millis) -> String {
    format!("{:.1} / {:.1} / {:.1}", m.p50, m.p95, m.p99)
}

/// The report for people: headline, device, models, levels, notes.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let d = &r.device;
    let _ = writeln!(s, "# trident-edge bench — {}\n", device_line(r));
    let _ = writeln!(s, "{} · {} · started {}\n", r.tool, d.hostname, r.started);
    if let Some(h) = headline(r) {
        let _ = writeln!(s, "**{h}**\n");
    }
    let _ = writeln!(s, "## Device\n\n| | |\n|---|---|");
    let cpu_mhz = if d.cpu.mhz.is_empty() {
        "—".to_string()
    } else {
        d.cpu
            .mhz
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = [
        ("board", text(d.board.as_deref()).to_string()),
        (
            "arch / kernel",
            format!("{} / {}", d.arch, text(d.kernel.as_deref())),
        ),
        (
            "L4T / JetPack",
            format!(
                "{} / {}",
                text(d.l4t.as_deref()),
                text(d.jetpack.as_deref())
            ),
        ),
        ("TensorRT", text(d.tensorrt.as_deref()).into()),
        ("GStreamer", text(d.gstreamer.as_deref()).into()),
        ("glibc", text(d.glibc.as_deref()).into()),
        (
            "power mode",
            match (&d.power_mode, d.power_mode_id) {
                (Some(n), Some(i)) => format!("{n} (nvpmodel {i})"),
                (Some(n), None) => n.clone(),
                _ => "—".into(),
            },
        ),
        (
            "CPU",
            format!(
                "{} × {}; MHz now {cpu_mhz}; max {}; governor {}",
                d.cpu.online,
                text(d.cpu.model.as_deref()),
                opt(d.cpu.max_mhz, 0),
                text(d.cpu.governor.as_deref())
            ),
        ),
        (
            "GPU MHz (now / max)",
            format!("{} / {}", opt(d.gpu_mhz, 0), opt(d.gpu_max_mhz, 0)),
        ),
        ("memory", format!("{} MiB", opt(d.memory_total_mib, 0))),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let u = &r.setup;
    let _ = writeln!(
        s,
        "\n## Setup\n\nsource `{}` ({}×{}, asked {} fps); {} measured frames after {} warm-up \
         frames per model and per level; profile {}; package {}; models `{}`; calibration {}; \
         power source **{}**{}.\n",
        u.source,
        u.frame_width,
        u.frame_height,
        u.source_fps,
        u.frames,
        u.warmup,
        text(u.profile.as_deref()),
        text(u.package.as_deref()),
        u.models_dir,
        text(u.calibration.as_deref()),
        u.power_source,
        if u.power_measured {
            " (measured)"
        } else {
            " (figures ESTIMATED)"
        }
    );
    if let Some(i) = &r.idle {
        let _ = writeln!(s, "Idle: {:.2} W over {:.1} s.\n", i.power_w, i.seconds);
    }
    let _ = writeln!(
        s,
        "## Models alone\n\nms as p50 / p95 / p99.\n\n| model | backend | precision | input | \
         latency | letterbox | forward | decode+NMS | fps | W | J/frame | active W | TTA ×|\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for m in &r.models {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}×{} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            m.name,
            m.backend,
            m.precision,
            m.input[0],
            m.input[1],
            dist(&m.latency_ms),
            dist(&m.preprocess_ms),
            dist(&m.forward_ms),
            dist(&m.postprocess_ms),
            m.fps,
            opt(m.power_w, 2),
            opt(m.energy_j_per_frame, 3),
            opt(m.active_w, 2),
            opt(m.tta.as_ref().map(|t| t.factor), 2)
        );
    }
    let _ = writeln!(
        s,
        "\n## Ladder levels (ensemble, unpaced)\n\n| level | models | TTA | asked fps | fps | \
         capacity fps | meets | frame ms | capture | infer | fusion | W | predicted W | J/frame \
         | peak RSS MiB | peak system MiB | dropped | detections/frame |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for l in &r.levels {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} | {:.2} | {} | {} | \
             {} | {} | {} | {} | {:.1} |",
            l.name,
            l.models.join(", "),
            if l.tta { "yes" } else { "no" },
            l.rate_fps,
            l.fps,
            l.capacity_fps,
            if l.meets_rate { "yes" } else { "**no**" },
            dist(&l.frame_ms),
            l.capture_ms.mean,
            l.infer_ms.mean,
            l.fuse_ms.mean,
            opt(l.power_w, 2),
            opt(l.predicted_w, 2),
            opt(l.energy_j_per_frame, 3),
            opt(l.peak_rss_mib, 0),
            opt(l.peak_system_mib, 0),
            l.dropped,
            l.detections_per_frame
        );
    }
    let _ = writeln!(
        s,
        "\ncapture, infer and fusion are means in ms; capacity fps = 1 / mean(infer + fusion).\n"
    );
    if !r.notes.is_empty() {
        let _ = writeln!(s, "## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "![latency distribution]({LATENCY_PNG})\n\n![FPS and energy per level]({LEVELS_PNG})"
    );
    s
}

/// One line a person remembers: the best level the unit sustains at its asked rate.
pub fn headline(r: &BenchReport) -> Option<String> {
    let l = r.levels.iter().find(|l| l.meets_rate).or(r.levels.last())?;
    let energy = match (l.energy_j_per_frame, r.setup.power_measured) {
        (Some(j), true) => format!(", {j:.3} J/frame"),
        (Some(j), false) => format!(", ~{j:.3} J/frame (estimated)"),
        (None, _) => String::new(),
    };
    let prefix = if l.meets_rate {
        "best level at its asked rate"
    } else {
        "no level reaches its asked rate; the cheapest"
    };
    Some(format!(
        "{prefix}: `{}` — {:.2} fps end to end, {:.2} fps capacity (asked {:.1}){energy}",
        l.name, l.fps, l.capacity_fps, l.rate_fps
    ))
}
