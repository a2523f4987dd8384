//! The command line of `trident-edge`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use trident_edge::BackendKind;
use trident_edge::ensemble::fusion::{ConfType, Fusion, WbfOptions};
use trident_edge::ensemble::runner::Ensemble;
use trident_edge::governor::{Governor, Profile};
use trident_edge::health::{Health, HealthConfig};
use trident_edge::http::HttpServer;
use trident_edge::models::ModelSet;
use trident_edge::output::jsonl::LogOptions;
use trident_edge::run::{RunOptions, RunSummary};
use trident_edge::source::{Source, SourceOptions, SourceUri};

/// trident-edge: the on-device runtime of trident (Jetson Nano, JetPack 4.6).
#[derive(Debug, Parser)]
#[command(name = "trident-edge", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TRIDENT_EDGE_TARGET"), ")"))]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log lines for people (`human`) or one JSON object per line for journald and log
    /// shippers (`json`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ensemble on camera or file sources under a deployment profile; detections go to
    /// JSON Lines, a summary is printed at the end.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Folder of exported models with their cards (`trident export --out`).
    #[arg(long)]
    pub models: PathBuf,
    /// Deployment profile (configs/profiles/*.yaml).
    #[arg(long)]
    pub profile: PathBuf,
    /// Sources: csi://N, v4l2:///dev/videoN, file://PATH, rtsp://…, test://[pattern], gst://LAUNCH.
    #[arg(long, required = true, num_args = 1..)]
    pub source: Vec<String>,
    /// Stop after this long: 90s, 10m, 2h (default: until stopped or every source ends).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Output folder (detections.jsonl).
    #[arg(long, default_value = "trident-out")]
    pub out: PathBuf,
    /// Inference backends, tried in order.
    #[arg(long, value_delimiter = ',', default_value = "onnxruntime,tract")]
    pub backend: Vec<String>,
    /// Loop file sources.
    #[arg(long)]
    pub loop_files: bool,
    /// Camera capture size (CSI, V4L2, test sources).
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    /// Classes whose detection saves a JPEG snapshot with the boxes drawn (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub snapshot_classes: Vec<String>,
    /// Fused score a detection needs to trigger a snapshot.
    #[arg(long, default_value_t = 0.5)]
    pub snapshot_min_score: f32,
    /// At most one snapshot per class per interval: 30s, 5m, …
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub snapshot_every: Duration,
    /// Confidence floor for every model (default: each model's own floor from its card).
    #[arg(long)]
    pub conf: Option<f32>,
    /// Serve /healthz and /metrics on this address (IP:PORT), or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_http)]
    pub http: HttpBind,
    /// /healthz turns 503 when no frame arrived for this long (after 30 s of start-up).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stale_after: Duration,
}

/// Where `--http` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpBind {
    Off,
    At(SocketAddr),
}

fn parse_http(text: &str) -> Result<HttpBind, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(HttpBind::Off);
    }
    text.parse().map(HttpBind::At).map_err(|_| {
        format!("`{text}`: expected IP:PORT (127.0.0.1:8080, 0.0.0.0:9100, [::1]:8080) or `off`")
    })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number with s, m or h (e.g. 90s, 10m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unit `{unit}`: expected s, m or h")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("`{text}`: expected a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub fn init_logging(verbose: u8, quiet: bool, format: LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

pub fn run_command(a: RunArgs) -> anyhow::Result<()> {
    // Listen first: a taken port fails at once, not after the models load and cameras open.
    let health = Arc::new(Health::new(HealthConfig {
        version: Some(env!("CARGO_PKG_VERSION").into()),
        stale_after: a.stale_after,
        ..HealthConfig::default()
    }));
    let server = match a.http {
        HttpBind::Off => None,
        HttpBind::At(addr) => Some(
            HttpServer::start(addr, Arc::clone(&health)).context(
                "cannot serve /healthz and /metrics (choose another address with --http ADDR, or --http off)",
            )?,
        ),
    };
    let profile = Profile::load(&a.profile)?;
    let set = ModelSet::load_dir(&a.models)?;
    for level in &profile.ladder {
        for m in &level.models {
            if set.get(m).is_none() {
                anyhow::bail!(
                    "{}: ladder level `{}` runs `{m}`, which is not among the models in {} ({})",
                    a.profile.display(),
                    level.name,
                    a.models.display(),
                    set.models
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    let order = a
        .backend
        .iter()
        .map(|b| b.parse())
        .collect::<Result<Vec<BackendKind>, _>>()?;
    let fusion = Fusion::Wbf(WbfOptions {
        conf_type: ConfType::Avg,
        clip_unit: false,
        ..WbfOptions::default()
    });
    let mut ensemble = Ensemble::load(&set, &order, &Default::default(), fusion)?;
    if let Some(c) = a.conf {
        for m in &mut ensemble.members {
            m.floor = c;
        }
    }
    let opts = SourceOptions {
        width: a.width,
        height: a.height,
        fps: profile.target_fps.ceil() as u32,
        loop_file: a.loop_files,
        realtime_file: false,
    };
    let mut sources = Vec::new();
    for uri in &a.source {
        let uri: SourceUri = uri.parse()?;
        sources.push(Source::open(uri, opts.clone())?);
    }
    let mut governor = Governor::detect(profile, None, std::path::Path::new("/"), 0.0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")?;
    let mut run_opts = RunOptions {
        duration: a.duration,
        detections: a.out.join("detections.jsonl"),
        log: LogOptions::default(),
        notifier: trident_edge::systemd::Notifier::from_env(),
        snapshots: snapshots(&a, &set.names)?,
    };
    let summary = trident_edge::run::run_observed(
        &mut sources,
        &mut ensemble,
        &mut governor,
        &mut run_opts,
        &stop,
        server.is_some().then_some(&*health),
    )?;
    if let Some(server) = server {
        server.shutdown();
    }
    print_summary(&summary, &run_opts.detections);
    if let Some(s) = &run_opts.snapshots {
        println!(
            "  snapshots: {} in {}",
            s.saved,
            a.out.join("snapshots").display()
        );
    }
    Ok(())
}

/// The snapshot settings, with class names checked against the models'.
fn snapshots(
    a: &RunArgs,
    names: &[String],
) -> anyhow::Result<Option<trident_edge::output::snapshot::Snapshots>> {
    use trident_edge::output::snapshot::{SnapshotOptions, Snapshots};
    if a.snapshot_classes.is_empty() {
        return Ok(None);
    }
    let classes = a
        .snapshot_classes
        .iter()
        .map(|c| {
            names.iter().position(|n| n == c).ok_or_else(|| {
                anyhow::anyhow!(
                    "--snapshot-classes {c}: not a class of the models ({})",
                    names.join(", ")
                )
            })
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    Ok(Some(Snapshots::new(SnapshotOptions {
        dir: a.out.join("snapshots"),
        classes,
        min_score: a.snapshot_min_score,
        min_interval_s: a.snapshot_every.as_secs_f64(),
    })))
}

fn print_summary(s: &RunSummary, detections: &std::path::Path) {
    println!(
        "trident-edge run: {} frames in {:.1} s ({:.2} fps) → {}",
        s.frames,
        s.seconds,
        s.fps(),
        detections.display()
    );
    for (uri, st) in &s.sources {
        println!(
            "  source {uri}: {} frames, {} dropped, {} errors, {} reconnects",
            st.frames, st.dropped, st.errors, st.reconnects
        );
    }
    for (name, frames, mean) in &s.models {
        println!("  model {name}: {frames} passes, {:.1} ms each", mean * 1e3);
    }
    if let Some(g) = &s.governor {
        let levels: Vec<String> = g
            .level_seconds
            .iter()
            .filter(|l| l.seconds > 0.0)
            .map(|l| format!("{} {:.1} s", l.name, l.seconds))
            .collect();
        println!(
            "  governor ({}): levels {}; {} changes; energy {:.1} J, average {:.2} W",
            g.power_source,
            levels.join(", "),
            g.level_changes,
            g.energy_j,
            g.average_w
        );
    }
    let per_class: Vec<String> = s
        .detections_per_class
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "  detections: {}",
        if per_class.is_empty() {
            "none".into()
        } else {
            per_class.join(", ")
        }
    );
    for d in &s.dropped_models {
        println!("  dropped from the ensemble: {d}");
    }
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(a) => run_command(a),
    }
}
