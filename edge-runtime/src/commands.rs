//! What each `trident-edge` subcommand does: resolve the inputs, call the library, print a
//! summary.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use trident_core::blame::Usage;
use trident_edge::governor::{Governor, Profile};
use trident_edge::health::{Health, HealthConfig};
use trident_edge::http::{HttpLimits, HttpServer};
use trident_edge::output::log::LogOptions;
use trident_edge::run::{RunOptions, RunSummary};
use trident_edge::source::{Source, SourceOptions, SourceUri};
use trident_infer::BackendKind;
use trident_infer::deployment::{Deployment, EnsembleStart, ModelsFrom, TablesChoice};
use trident_infer::ensemble::fusion::{ConfType, Fusion, WbfOptions};
use trident_infer::ensemble::runner::Ensemble;

use crate::cli::{HealthArgs, HttpBind, ModelsArgs, PrepareArgs, RunArgs, TablesArgs, VerifyArgs};

impl ModelsArgs {
    pub fn from(&self) -> ModelsFrom<'_> {
        match (&self.models, &self.package) {
            (_, Some(p)) => ModelsFrom::Package(p),
            (Some(m), None) => ModelsFrom::Dir(m),
            // clap's group makes one of the two required.
            (None, None) => unreachable!("--models or --package is required"),
        }
    }

    pub fn shown(&self) -> String {
        match self.from() {
            ModelsFrom::Dir(p) | ModelsFrom::Package(p) => p.display().to_string(),
        }
    }
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    // Listen first: a taken port fails at once, not after the models load and cameras open.
    // `version` is the package's, set once its manifest is verified (none from a models folder).
    let health = Arc::new(Health::new(HealthConfig {
        version: None,
        stale_after: a.stale_after,
        ..HealthConfig::default()
    }));
    let server = match a.http {
        HttpBind::Off => None,
        HttpBind::At(addr) => Some(
            HttpServer::start_with(
                addr,
                Arc::clone(&health),
                HttpLimits {
                    max_connections: a.http_max_connections,
                    read_timeout: a.http_timeout,
                    write_timeout: a.http_timeout,
                    ..HttpLimits::DEFAULT
                },
            )
            .context(
                "cannot serve /healthz and /metrics (choose another address with --http ADDR, or --http off)",
            )?,
        ),
    };
    let mut profile = Profile::load(&a.profile)?;
    match &profile.estimates.measured {
        Some(m) => tracing::info!(
            "profile `{}`: estimates measured on {} at {} (power: {})",
            profile.name,
            m.device,
            m.at,
            m.power
        ),
        None => tracing::info!(
            "profile `{}`: estimates derived from published figures; `trident-edge bench \
             --write-profile` measures them on this unit",
            profile.name
        ),
    }
    let ensemble_args = EnsembleArgs {
        models: &a.models,
        tables: &a.tables,
        backend: &a.backend,
    };
    let (deployment, mut ensemble) =
        load_ensemble(&ensemble_args, Some((&mut profile, &a.profile)))?;
    health
        .update()
        .version(deployment.manifest.as_ref().map(|m| m.version.as_str()));
    let set = &deployment.set;
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
        stall_after: Some(a.stall_after),
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
    // A write past a file-size limit (`LimitFSIZE=`, a quota) fails with EFBIG and is handled
    // like a full disk, instead of SIGXFSZ ending the process.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    )
    .context("installing the SIGXFSZ handler")?;
    let notifier = trident_edge::systemd::Notifier::from_env();
    if let Some(w) = notifier.as_ref().and_then(|n| n.watchdog())
        && a.stall_after >= w
    {
        tracing::warn!(
            "--stall-after {:.0} s is not under the watchdog's {:.0} s: a stalled camera restarts \
             the whole runtime before it is reopened",
            a.stall_after.as_secs_f64(),
            w.as_secs_f64()
        );
    }
    let mut run_opts = RunOptions {
        duration: a.duration,
        detections: a.out.join("detections.jsonl"),
        log: LogOptions {
            fsync_every: a.log_fsync_every,
            buffer_bytes: (a.log_buffer_mib << 20) as usize,
            ..LogOptions::default()
        },
        notifier,
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
    if let Some(s) = &summary.snapshots {
        println!(
            "  snapshots: {} saved, {} failed, {} removed by retention; {} kept ({:.1} MiB) in {}",
            s.saved,
            s.failed,
            s.removed,
            s.kept,
            s.kept_bytes as f64 / (1 << 20) as f64,
            a.out.join("snapshots").display()
        );
    }
    Ok(())
}

/// What the ensemble is loaded from (shared by `run` and `bench`).
pub struct EnsembleArgs<'a> {
    pub models: &'a ModelsArgs,
    pub tables: &'a TablesArgs,
    pub backend: &'a [BackendKind],
}

/// The backends to try, in order, and where that order came from: `--backend`, else the
/// profile's `backends`, else the portable default (onnxruntime, tract).
pub fn backend_order(
    cli: &[BackendKind],
    profile: Option<(&Profile, &Path)>,
) -> Result<(Vec<BackendKind>, String), Usage> {
    if !cli.is_empty() {
        return Ok((cli.to_vec(), "--backend".into()));
    }
    let Some((p, path)) = profile.filter(|(p, _)| !p.backends.is_empty()) else {
        return Ok((
            vec![BackendKind::OnnxRuntime, BackendKind::Tract],
            "the default".into(),
        ));
    };
    // The profile's names are a config file's: parsed here, the error naming the file.
    let from = format!("{}: backends", path.display());
    let order = p
        .backends
        .iter()
        .map(|b| {
            b.parse::<BackendKind>()
                .map_err(|e| Usage(format!("{from}: {e}")))
        })
        .collect::<Result<Vec<BackendKind>, _>>()?;
    Ok((order, from))
}

/// `trident-edge doctor`: the report, then exit 1 when the first backend does not load.
pub fn doctor(a: crate::cli::DoctorArgs) -> anyhow::Result<()> {
    use trident_edge::doctor::{DoctorOptions, examine};
    let models_dir = match (&a.package, &a.models) {
        (Some(p), _) => Some(trident_core::package::PackageDir::open(p)?.models_dir()),
        (None, Some(m)) => Some(m.clone()),
        (None, None) => None,
    };
    let profile_path = a.profile.clone().or_else(|| {
        let package = a.package.as_ref()?;
        let name = std::env::var("TRIDENT_PROFILE").unwrap_or_else(|_| "nano-10w".into());
        Some(package.join("profiles").join(format!("{name}.yaml")))
    });
    let profile = match &profile_path {
        Some(p) => Some(Profile::load(p)?),
        None => None,
    };
    let (order, from) = backend_order(&a.backend, profile.as_ref().zip(profile_path.as_deref()))?;
    let report = examine(&DoctorOptions {
        models_dir,
        backends: order,
        backends_from: from,
        engine_cache: a
            .engine_cache
            .unwrap_or_else(trident_infer::backend::default_engine_cache),
        root: a.root,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if !report.ok {
        anyhow::bail!(
            "the first backend ({}) does not load on this unit (see the verdict above)",
            report
                .backends
                .first()
                .map_or("none", |b| b.backend.as_str())
        );
    }
    Ok(())
}

/// Loads the models (verifying a package) and starts the ensemble ([`Deployment::ensemble`]:
/// ladder levels checked against the models, backends in order, tables applied, TTA fitted).
pub fn load_ensemble(
    a: &EnsembleArgs<'_>,
    profile: Option<(&mut Profile, &Path)>,
) -> anyhow::Result<(Deployment, Ensemble)> {
    let tables = match (a.tables.calibration.as_deref(), a.tables.no_calibration) {
        (Some(p), _) => TablesChoice::File(p),
        (None, true) => TablesChoice::Off,
        (None, false) => TablesChoice::Auto,
    };
    let deployment = Deployment::load(a.models.from(), tables)?;
    let (order, from) = backend_order(a.backend, profile.as_ref().map(|(p, path)| (&**p, *path)))?;
    let start = EnsembleStart {
        order: &order,
        order_from: &from,
        backend: Default::default(),
        fusion: Fusion::Wbf(WbfOptions {
            conf_type: ConfType::Avg,
            clip_unit: false,
            ..WbfOptions::default()
        }),
    };
    let ensemble = deployment.ensemble(&start, profile)?;
    Ok((deployment, ensemble))
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
                Usage(format!(
                    "--snapshot-classes {c}: not a class of the models ({})",
                    names.join(", ")
                ))
                .into()
            })
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    Ok(Some(Snapshots::new(SnapshotOptions {
        dir: a.out.join("snapshots"),
        classes,
        min_score: a.snapshot_min_score,
        min_interval_s: a.snapshot_every.as_secs_f64(),
        keep: a.snapshot_keep,
        max_bytes: a.snapshot_max_mib << 20,
    })?))
}

fn print_summary(s: &RunSummary, detections: &Path) {
    println!(
        "trident-edge run: {} frames in {:.1} s ({:.2} fps) → {}",
        s.frames,
        s.seconds,
        s.fps(),
        detections.display()
    );
    for (uri, st) in &s.sources {
        println!(
            "  source {uri}: {} frames, {} dropped, {} errors ({} stalls), {} reconnects, {} skipped",
            st.frames, st.dropped, st.errors, st.stalls, st.reconnects, st.skipped
        );
    }
    let log = &s.log;
    println!(
        "  log: {} lines written, {} synced, {} dropped ({} detections), {} write errors, {} \
         rotations ({} failed)",
        log.lines_written,
        log.lines_synced,
        log.lines_dropped,
        log.detections_dropped,
        log.write_errors,
        log.rotations,
        log.rotation_errors
    );
    if s.frames_unprocessed > 0 {
        println!(
            "  frames no model could run (skipped): {}",
            s.frames_unprocessed
        );
    }
    for (k, (name, frames, mean)) in s.models.iter().enumerate() {
        let (backend, fallback) = s.backends.get(k).cloned().unwrap_or_default();
        println!(
            "  model {name}: {backend}, {frames} passes, {:.1} ms each",
            mean * 1e3
        );
        if let Some(why) = fallback {
            println!("    not on the preferred backend: {why}");
        }
    }
    if s.frames > 0 {
        let per_frame: Vec<String> = s
            .stages
            .named()
            .iter()
            .map(|(stage, secs)| format!("{stage} {:.1}", secs / s.frames as f64 * 1e3))
            .collect();
        println!("  per frame (ms): {}", per_frame.join(", "));
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
    for (name, faults, readmissions) in s.model_faults.iter().filter(|m| m.1 > 0) {
        println!("  model {name}: {faults} failed passes, re-admitted {readmissions} times");
    }
    for d in &s.dropped_models {
        println!("  out of the ensemble at the end: {d}");
    }
}

pub fn prepare(a: PrepareArgs) -> anyhow::Result<()> {
    use trident_edge::prepare::{PrepareOptions, prepare};

    // A package is verified first; its models folder is then prepared like any other.
    let models_dir = match a.models.from() {
        ModelsFrom::Dir(d) => d.to_path_buf(),
        ModelsFrom::Package(p) => trident_core::package::PackageDir::open(p)?.models_dir(),
    };
    let mut opts = PrepareOptions::new(models_dir);
    opts.precision = a.precision;
    opts.workspace_mib = a.workspace_mib;
    if let Some(c) = a.engine_cache {
        opts.cache_dir = c;
    }
    opts.root = a.root;
    let report = prepare(&opts)?;
    println!("{report}");
    Ok(())
}

/// `trident-edge verify PKG --pubkey KEY [--install DIR]`.
pub fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    use trident_package::facts::DeviceFacts;
    use trident_package::signature::PublicKey;
    use trident_package::verify::{VerifyOptions, verify_package};
    let key = a.pubkey.as_deref().map(PublicKey::from_arg).transpose()?;
    let facts = DeviceFacts::probe(&a.system_root);
    let opts = VerifyOptions {
        public_key: key.as_ref(),
        signature: a.signature.clone(),
        allow_unsigned: a.allow_unsigned,
        facts: Some(&facts),
        limits: Default::default(),
    };
    let v = verify_package(&a.package, &opts, a.install.as_deref())
        .with_context(|| format!("verifying {}", a.package.display()))?;
    let m = &v.manifest;
    if let Some(running) = &a.not_older_than
        && let Err(why) = trident_package::release_order::check_not_older(&m.version, running)
    {
        if let Some(dir) = &v.installed {
            let _ = std::fs::remove_dir_all(dir);
        }
        anyhow::bail!("{}: {why}; nothing installed", a.package.display());
    }
    println!(
        "{}: verified — {} {} for {} (JetPack {}, TensorRT {}); {} files, {:.1} MiB",
        a.package.display(),
        m.name,
        m.version,
        m.target.device,
        m.target.jetpack,
        m.target.tensorrt,
        v.files,
        v.bytes as f64 / (1 << 20) as f64
    );
    match &v.signature {
        Some(s) => println!("  signature: good, key {}", s.key_id),
        None => println!("  signature: NOT checked (--allow-unsigned)"),
    }
    println!(
        "  this unit: {} L4T {} JetPack {} TensorRT {} glibc {}",
        facts.arch,
        facts.l4t.as_deref().unwrap_or("?"),
        facts.jetpack.as_deref().unwrap_or("?"),
        facts.tensorrt.as_deref().unwrap_or("?"),
        facts.glibc.as_deref().unwrap_or("?")
    );
    for w in &v.warnings {
        println!("  warning: {w}");
    }
    if let Some(dir) = &v.installed {
        println!("  installed into {}", dir.display());
    }
    Ok(())
}

/// `trident-edge health [--addr A] [--wait D] [--json] [--expect-version V] [--started-after
/// UNIX_S] [--min-frames N]`: exit 0 only when `/healthz` answers 200 and every condition given
/// holds. The summary line starts `ADDR: healthy —` or `ADDR: NOT healthy —`; on failure the last
/// line (stderr) names each condition that failed with the values seen.
pub fn health(a: HealthArgs) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    use trident_edge::health::Gate;
    let gate = Gate {
        expect_version: a.expect_version.clone(),
        started_after: a.started_after,
        min_frames: a.min_frames,
    };
    let deadline = Instant::now() + a.wait.unwrap_or_default();
    let (last, failures) = loop {
        let answer = trident_edge::http::get_healthz(a.addr, Duration::from_secs(5));
        let failures = match &answer {
            Ok((status, body)) => {
                let report: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                gate.failures(*status, &report)
            }
            Err(_) => Vec::new(),
        };
        let passed = answer.is_ok() && failures.is_empty();
        if passed || Instant::now() >= deadline {
            break (answer, failures);
        }
        // A local GET is cheap; a deploy's health gate waits for this loop.
        std::thread::sleep(Duration::from_millis(250));
    };
    match last {
        Ok((_, body)) => {
            let report: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if a.json {
                println!("{}", body.trim());
            } else {
                println!(
                    "{}: {} — version {}, {} frames, {:.2} fps, level {}{}",
                    a.addr,
                    if failures.is_empty() {
                        "healthy"
                    } else {
                        "NOT healthy"
                    },
                    report["version"].as_str().unwrap_or("?"),
                    report["frames"].as_u64().unwrap_or(0),
                    report["fps"].as_f64().unwrap_or(0.0),
                    report["level_name"].as_str().unwrap_or("-"),
                    report["problems"]
                        .as_array()
                        .filter(|p| !p.is_empty())
                        .map(|p| format!(
                            "; {}",
                            p.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        ))
                        .unwrap_or_default()
                );
            }
            if !failures.is_empty() {
                let waited = a
                    .wait
                    .map(|w| format!(" (waited {})", humantime::format_duration(w)))
                    .unwrap_or_default();
                anyhow::bail!("{}: {}{waited}", a.addr, failures.join("; "));
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "{}: no answer from /healthz: {e} (is trident-edge running with --http {}?)",
            a.addr,
            a.addr
        )),
    }
}
