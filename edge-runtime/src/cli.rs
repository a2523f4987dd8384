//! The command line of `trident-edge`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Build and validate TensorRT engines for this device into the engine cache (once per
    /// device and model; a no-op with a message where there is no GPU or TensorRT).
    Prepare(PrepareArgs),
    /// Verify a deployment package before installing it: signature, manifest, every file's
    /// sha256, the runtime binary, and compatibility with this unit (architecture, JetPack,
    /// TensorRT, glibc); with --install, unpack it atomically.
    Verify(VerifyArgs),
    /// Measure latency, FPS, power and energy per frame of each model and each ladder level on
    /// this unit; writes bench.json, bench.md and charts, and with --write-profile a deployment
    /// profile holding the measured figures.
    Bench(BenchArgs),
    /// Ask a running runtime's /healthz, waiting up to --wait for it to report ok (and meet
    /// --expect-version, --started-after and --min-frames); exit 0 when healthy, 1 when not (the
    /// deploy stage's health gate).
    Health(HealthArgs),
    /// Examine this unit for a field engineer: which backends load and why not; L4T, JetPack,
    /// TensorRT, CUDA, GStreamer and glibc versions; the camera and decoder elements; the power
    /// sensor and its rails; the engine cache; the nvpmodel mode. Exits 1 when the profile's first
    /// backend cannot load.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Unpacked deployment package (as installed: /opt/trident/current) whose models each backend
    /// is tried on, and whose profiles/ holds the default profile.
    #[arg(long, conflicts_with = "models")]
    pub package: Option<PathBuf>,
    /// A models folder instead of a package.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Deployment profile whose `backends` order is checked (default: the package's
    /// profiles/$TRIDENT_PROFILE.yaml, else profiles/nano-10w.yaml).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Backends to check, in order, instead of the profile's.
    #[arg(long, value_delimiter = ',')]
    pub backend: Vec<trident_infer::BackendKind>,
    /// Engine cache (default: $TRIDENT_ENGINE_CACHE, /var/lib/trident/engines, or
    /// ~/.cache/trident/engines).
    #[arg(long)]
    pub engine_cache: Option<PathBuf>,
    /// Root file system whose facts, sensors and nvpmodel state are read.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub models: ModelsArgs,
    #[command(flatten)]
    pub tables: TablesArgs,
    /// Deployment profile whose ladder, power sensor and power model are used (default: the
    /// whole ensemble, then each model alone; sensors auto-detected).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Frame source: test://[pattern], file://PATH (looped), csi://N, v4l2:///dev/videoN, …
    #[arg(long, default_value = "test://ball")]
    pub source: String,
    /// Measured frames per model and per ladder level.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub frames: u32,
    /// Unmeasured frames before each model and each level (caches, clocks, allocators).
    #[arg(long, default_value_t = 10)]
    pub warmup: u32,
    /// Ladder levels to measure: `all`, or names (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub levels: Vec<String>,
    /// Seconds of idle power measured before the models run (0: skip; needs a sensor).
    #[arg(long, default_value_t = 5.0)]
    pub idle: f64,
    /// Output folder (bench.json, bench.md, latency.png, levels.png).
    #[arg(long, default_value = "trident-bench")]
    pub out: PathBuf,
    /// Write the --profile with its estimates replaced by the measured figures to this file.
    #[arg(long, requires = "profile")]
    pub write_profile: Option<PathBuf>,
    /// Inference backends, tried in order (tensorrt, onnxruntime, tract); default: the profile's
    /// `backends`, else onnxruntime,tract.
    #[arg(long, value_delimiter = ',')]
    pub backend: Vec<trident_infer::BackendKind>,
    /// Frame size and rate asked of cameras and test sources.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    #[arg(long, default_value_t = 30)]
    pub source_fps: u32,
    /// Root of the system whose facts and sensors are read.
    #[arg(long, default_value = "/", hide = true)]
    pub system_root: PathBuf,
    /// Print the report's JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Where the runtime serves /healthz (its --http address).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Keep asking (every 250 ms) until healthy and every condition holds, or this long has
    /// passed: 90s, 2m. Default: ask once.
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Print the /healthz JSON instead of a summary line.
    #[arg(long)]
    pub json: bool,
    /// Not healthy unless the runtime runs this package version (`version`, from the package's
    /// verified manifest).
    #[arg(long, value_name = "VERSION")]
    pub expect_version: Option<String>,
    /// Not healthy unless the runtime's process started after this time (Unix seconds, e.g. the
    /// switch's `date +%s`): an older process still answering does not count.
    #[arg(long, value_name = "UNIX_S")]
    pub started_after: Option<f64>,
    /// Not healthy unless every model of the active ladder level has processed at least this
    /// many frames (`min_level_model_frames`).
    #[arg(long, value_name = "N")]
    pub min_frames: Option<u64>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The package (`trident-<version>-<target>.tar.zst`).
    pub package: PathBuf,
    /// Trusted minisign public key (file, or the key's base64 line).
    #[arg(long)]
    pub pubkey: Option<String>,
    /// Detached signature (default: `<package>.minisig`).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Accept a package without a signature or without --pubkey (every sha256 is still checked).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Unpack the verified package into this folder (must not exist; renamed into place only
    /// after every check passed).
    #[arg(long)]
    pub install: Option<PathBuf>,
    /// Root of the system whose facts are checked (/etc/nv_tegra_release, the dpkg database).
    #[arg(long, default_value = "/")]
    pub system_root: PathBuf,
    /// Refuse a package whose version is older than this one (semantic versions; the release
    /// running now): a downgrade, or a version that cannot be ordered. Nothing stays installed.
    #[arg(long, value_name = "VERSION")]
    pub not_older_than: Option<String>,
}

/// The models to run: a folder or an unpacked package (exactly one).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ModelsArgs {
    /// Folder of exported models with their cards (`trident export --out`); `calibration.yaml`
    /// beside them is applied when present.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Unpacked deployment package (`manifest.json`, models/, calibration/); every file is
    /// checked against the manifest before anything runs.
    #[arg(long)]
    pub package: Option<PathBuf>,
}

/// Which calibration tables to apply (by default the package's, or `calibration.yaml` beside the
/// models).
#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Calibration tables to apply instead of the package's or the models folder's.
    #[arg(long, conflicts_with = "no_calibration")]
    pub calibration: Option<PathBuf>,
    /// Run without calibration tables even when some are present.
    #[arg(long)]
    pub no_calibration: bool,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub models: ModelsArgs,
    /// Engine precision: fp16 or fp32.
    #[arg(long, default_value = "fp16")]
    pub precision: trident_tensorrt::Precision,
    /// TensorRT builder workspace (MiB); the Nano's 4 GB are shared with the CPU.
    #[arg(long, default_value_t = 1024)]
    pub workspace_mib: u64,
    /// Engine cache (default: $TRIDENT_ENGINE_CACHE, /var/lib/trident/engines, or
    /// ~/.cache/trident/engines).
    #[arg(long)]
    pub engine_cache: Option<PathBuf>,
    /// Root file system with the TensorRT development files and the C++ compiler, for building the
    /// TensorRT shim on the unit when the package's prebuilt one does not fit its TensorRT.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub models: ModelsArgs,
    #[command(flatten)]
    pub tables: TablesArgs,
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
    /// Inference backends, tried in order (tensorrt, onnxruntime, tract); default: the profile's
    /// `backends`, else onnxruntime,tract.
    #[arg(long, value_delimiter = ',')]
    pub backend: Vec<trident_infer::BackendKind>,
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
    /// Fused score in [0, 1] a detection needs to trigger a snapshot.
    #[arg(long, default_value_t = 0.5, value_parser = trident_core::flags::unit_interval)]
    pub snapshot_min_score: f32,
    /// At most one snapshot per class per interval: 30s, 5m, … (more than 0).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub snapshot_every: Duration,
    /// Snapshots kept in OUT/snapshots; the oldest are removed first.
    #[arg(long, value_name = "N", default_value_t = trident_edge::output::snapshot::DEFAULT_KEEP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub snapshot_keep: usize,
    /// Most MiB of snapshots kept in OUT/snapshots; the oldest are removed first.
    #[arg(long, value_name = "MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_max_mib: u64,
    /// Sync the detections log to disk at most this often (and before a rotation and at exit):
    /// every line written before the last sync survives a power cut.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub log_fsync_every: Duration,
    /// MiB of detection lines kept in memory while the log cannot be written (a full disk);
    /// beyond it the oldest are dropped and counted.
    #[arg(long, value_name = "MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub log_buffer_mib: u64,
    /// A live source that delivers no frame for this long, without an error, is reopened (keep it
    /// under the unit's WatchdogSec).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stall_after: Duration,
    /// Confidence floor in [0, 1] for every model (default: each model's own floor from its card).
    #[arg(long, value_parser = trident_core::flags::unit_interval)]
    pub conf: Option<f32>,
    /// Serve /healthz and /metrics on this address (IP:PORT), or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_http)]
    pub http: HttpBind,
    /// Most HTTP connections served at once; each one more is answered 503 with `Retry-After: 1`
    /// and closed at once (the server shares file descriptors with the cameras, the log and the
    /// engines).
    #[arg(
        long,
        value_name = "N",
        default_value_t = trident_edge::http::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096)
    )]
    pub http_max_connections: usize,
    /// An HTTP client has this long to send its request, and again to take the response, before
    /// its connection is closed (requests over 8 KiB are refused with 431).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub http_timeout: Duration,
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

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(a) => crate::commands::run(a),
        Command::Prepare(a) => crate::commands::prepare(a),
        Command::Verify(a) => crate::commands::verify(a),
        Command::Health(a) => crate::commands::health(a),
        Command::Doctor(a) => crate::commands::doctor(a),
        Command::Bench(a) => crate::bench_command::bench(a),
    }
}
