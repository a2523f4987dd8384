//! `trident train`: every variant of the config (or one).
//!
//! On CPU, all variants train side by side, one process each with its share of the cores (at
//! least one thread): on a 2-core machine the demo's three variants took 126 s as three 1-thread
//! processes, 139 s as two at a time (the third then runs alone on one thread while a core
//! idles) and 164 s one after another with 2 threads — small convolutions do not use a second
//! thread well (README, "Training"). On CUDA they run one after another.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use trident_trainer::config::{TrainSettings, TrainingConfig};
use trident_trainer::train::{TrainJob, select_device, train};

use crate::cli::TrainArgs;
use crate::ui::{NO_PROGRESS, epoch_progress, table};

pub fn run(a: TrainArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let config = TrainingConfig::load(&a.config)?;
    let dataset = a.data.clone().or(config.data.clone()).with_context(|| {
        format!(
            "no dataset: pass --data or set `data` in {}",
            a.config.display()
        )
    })?;
    let selected: Vec<String> = match &a.variant {
        Some(v) => {
            config.variant(v)?;
            vec![v.clone()]
        }
        None => config.variants.iter().map(|(n, _)| n.clone()).collect(),
    };
    let out_root = a
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(&config.name));
    let settings: Vec<(String, TrainSettings)> = selected
        .iter()
        .map(|name| {
            let s = overridden(config.variant(name)?, &a);
            s.validate(&format!("variant `{name}` with command-line overrides"))?;
            Ok((name.clone(), s))
        })
        .collect::<anyhow::Result<_>>()?;
    if a.hard_negatives.is_some() {
        return crate::hard_negatives::run(&a, &dataset, &out_root, &selected);
    }
    // Start weights are checked for every variant before any training starts.
    if let Some(w) = &a.weights {
        for name in &selected {
            trident_trainer::init::peek(&trident_trainer::init::resolve(w, name)?)?;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: exiting without waiting");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: stopping after this batch (press Ctrl-C again to quit at once)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let on_cuda = settings
        .iter()
        .any(|(_, s)| select_device(&s.device).is_ok_and(|d| d.is_cuda()));
    let jobs = a
        .jobs
        .unwrap_or(if on_cuda { 1 } else { settings.len() })
        .clamp(1, settings.len());
    if jobs > 1 {
        run_concurrently(&a, &settings, jobs, cores, quiet, &stop)?;
    } else {
        for (name, s) in &settings {
            let weights = a
                .weights
                .as_deref()
                .map(|w| trident_trainer::init::resolve(w, name))
                .transpose()?;
            let job = TrainJob {
                variant: name.clone(),
                settings: s.clone(),
                dataset: dataset.clone(),
                out_dir: out_root.join(name),
                resume: a.resume,
                weights,
                exist_ok: a.exist_ok,
                strict: a.strict,
                stop: &stop,
                progress: &epoch_progress,
            };
            let o = train(&job).with_context(|| format!("training variant `{name}`"))?;
            if let Some(r) = &o.start {
                println!("{name}: {}", r.summary());
            }
            println!(
                "{name}: {} epochs ({:?}), best epoch {} → {}",
                o.epochs,
                o.stop_reason,
                o.best_epoch,
                o.best.display()
            );
            if stop.load(Ordering::SeqCst) {
                break;
            }
        }
    }
    if !a.no_summary {
        print!("{}", summary(&out_root, &selected));
    }
    Ok(if stop.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn overridden(base: &TrainSettings, a: &TrainArgs) -> TrainSettings {
    let mut s = base.clone();
    if let Some(v) = a.epochs {
        s.epochs = v;
    }
    if let Some(v) = a.imgsz {
        s.imgsz = v;
    }
    if let Some(v) = a.batch {
        s.batch = v;
    }
    if let Some(v) = &a.device {
        s.device = v.clone();
    }
    if let Some(v) = &a.model {
        s.model = v.clone();
    }
    if let Some(v) = a.time {
        s.time = Some(v);
    }
    if let Some(v) = a.seed {
        s.seed = v;
    }
    if let Some(v) = a.threads {
        s.threads = v;
    }
    if let Some(v) = a.freeze {
        s.freeze = v;
    }
    s
}

/// Runs each variant as `trident train --variant NAME --jobs 1 --threads T …`, `jobs` at a time,
/// sharing the cores among the jobs running together. Children inherit the terminal's Ctrl-C and
/// stop gracefully on their own.
fn run_concurrently(
    a: &TrainArgs,
    settings: &[(String, TrainSettings)],
    jobs: usize,
    cores: usize,
    quiet: bool,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the trident executable")?;
    let mut queue: Vec<&String> = settings.iter().map(|(n, _)| n).rev().collect();
    let mut running: Vec<(String, Child)> = Vec::new();
    let mut failed = Vec::new();
    eprintln!("training {} variants, {jobs} at a time", settings.len());
    while !queue.is_empty() || !running.is_empty() {
        let slots = jobs.min(running.len() + queue.len()).max(1);
        let threads = (cores / slots).max(1);
        while running.len() < jobs && !stop.load(Ordering::SeqCst) {
            let Some(name) = queue.pop() else { break };
            let mut c = Command::new(&exe);
            c.args(child_args(a, name, threads))
                .env(NO_PROGRESS, "1")
                // Augmentation and decoding threads too keep to the job's share of the cores.
                .env("RAYON_NUM_THREADS", threads.to_string());
            if quiet {
                c.arg("--quiet");
            }
            let child = c
                .spawn()
                .with_context(|| format!("starting the `{name}` training process"))?;
            eprintln!("{name}: started (pid {}, {threads} thread(s))", child.id());
            running.push((name.clone(), child));
        }
        if stop.load(Ordering::SeqCst) {
            queue.clear();
        }
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait()? {
                let (name, _) = running.remove(i);
                if status.success() {
                    eprintln!("{name}: done");
                } else {
                    failed.push(format!("{name} ({status})"));
                }
            } else {
                i += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if !failed.is_empty() && !stop.load(Ordering::SeqCst) {
        bail!(
            "training failed for {} (its error is printed above)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn child_args(a: &TrainArgs, variant: &str, threads: usize) -> Vec<String> {
    let mut v: Vec<String> = vec!["train".into(), "--config".into(), path(&a.config)];
    let mut opt = |k: &str, val: Option<String>| {
        if let Some(val) = val {
            v.push(format!("--{k}"));
            v.push(val);
        }
    };
    opt("variant", Some(variant.to_string()));
    opt("jobs", Some("1".into()));
    opt("threads", Some(a.threads.unwrap_or(threads).to_string()));
    opt("data", a.data.as_deref().map(path));
    opt("out", a.out.as_deref().map(path));
    opt("weights", a.weights.as_deref().map(path));
    v.extend(setting_overrides(a));
    if a.resume {
        v.push("--resume".into());
    }
    // The summary is printed once, by the parent.
    v.push("--no-summary".into());
    v
}

/// The command line's setting overrides and run flags, as a child `trident train` takes them.
pub(crate) fn setting_overrides(a: &TrainArgs) -> Vec<String> {
    let mut v = Vec::new();
    let mut opt = |k: &str, val: Option<String>| {
        if let Some(val) = val {
            v.push(format!("--{k}"));
            v.push(val);
        }
    };
    opt("epochs", a.epochs.map(|x| x.to_string()));
    opt("imgsz", a.imgsz.map(|x| x.to_string()));
    opt("batch", a.batch.map(|x| x.to_string()));
    opt("device", a.device.clone());
    opt("model", a.model.clone());
    opt("time", a.time.map(|x| x.to_string()));
    opt("seed", a.seed.map(|x| x.to_string()));
    opt("freeze", a.freeze.map(|x| x.to_string()));
    for (flag, on) in [("--exist-ok", a.exist_ok), ("--strict", a.strict)] {
        if on {
            v.push(flag.into());
        }
    }
    v
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The variants side by side, from each run's metadata.json: the best epoch's validation metrics
/// and precision/recall at each variant's confidence floor.
fn summary(out_root: &Path, variants: &[String]) -> String {
    let rows: Vec<Vec<String>> = variants
        .iter()
        .filter_map(|v| {
            let file: PathBuf = out_root.join(v).join("metadata.json");
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
            let f = |x: &serde_json::Value, d: usize| {
                x.as_f64().map_or("-".into(), |x| format!("{x:.d$}"))
            };
            let m = &meta["final_metrics"];
            let fl = &meta["at_conf_floor"];
            Some(vec![
                v.clone(),
                meta["epochs_completed"].to_string(),
                meta["stop_reason"]
                    .as_str()
                    .map_or("-".into(), |r| r.replace('_', " ")),
                meta["best_epoch"].to_string(),
                f(&m["map50"], 3),
                f(&m["map50_95"], 3),
                f(&fl["conf_floor"], 2),
                f(&fl["precision"], 3),
                f(&fl["recall"], 3),
                f(&meta["wall_time_s"], 0),
                f(&m["images_per_s"], 1),
                f(&meta["peak_rss_mib"], 0),
            ])
        })
        .collect();
    table(
        &[
            "variant",
            "epochs",
            "stopped by",
            "best",
            "mAP50",
            "mAP50-95",
            "floor",
            "P@floor",
            "R@floor",
            "wall s",
            "img/s",
            "peak MiB",
        ],
        &rows,
    )
}
