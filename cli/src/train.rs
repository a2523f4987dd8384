//! `trident train`: every variant of the config (or one), one after another.
//!
//! Sequential, each with all cores for libtorch: on the 2-core reference machine this was faster
//! than training variants side by side with one thread each (README, "Training").

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use trident_trainer::config::TrainingConfig;
use trident_trainer::train::{TrainJob, TrainOutcome, train};

use crate::cli::TrainArgs;
use crate::ui::{epoch_progress, table};

pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
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
        .unwrap_or_else(|| std::path::Path::new("runs").join(&config.name));

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

    let mut outcomes: Vec<TrainOutcome> = Vec::new();
    for name in &selected {
        let mut s = config.variant(name)?.clone();
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
        s.validate(&format!("variant `{name}` with command-line overrides"))?;
        let job = TrainJob {
            variant: name.clone(),
            settings: s,
            dataset: dataset.clone(),
            out_dir: out_root.join(name),
            resume: a.resume,
            exist_ok: a.exist_ok,
            strict: a.strict,
            stop: &stop,
            progress: &epoch_progress,
        };
        let outcome = train(&job).with_context(|| format!("training variant `{name}`"))?;
        println!(
            "{name}: {} epochs ({:?}), best epoch {} → {}",
            outcome.epochs,
            outcome.stop_reason,
            outcome.best_epoch,
            outcome.best.display()
        );
        outcomes.push(outcome);
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    print!("{}", summary(&outcomes));
    Ok(if stop.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// The variants side by side: validation metrics of the best epoch and P/R at each floor.
fn summary(outcomes: &[TrainOutcome]) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let r = o.best_record.as_ref();
            let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
            vec![
                o.variant.clone(),
                o.epochs.to_string(),
                o.best_epoch.to_string(),
                f(r.map(|r| r.map50)),
                f(r.map(|r| r.map50_95)),
                o.at_floor
                    .map_or("-".into(), |m| format!("{:.2}", m.conf_floor)),
                f(o.at_floor.map(|m| m.precision)),
                f(o.at_floor.map(|m| m.recall)),
                format!("{:.0}", o.wall_s),
                f(r.map(|r| r.images_per_s)).replace(".000", ""),
                o.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0}")),
            ]
        })
        .collect();
    table(
        &[
            "variant", "epochs", "best", "mAP50", "mAP50-95", "floor", "P@floor", "R@floor",
            "wall s", "img/s", "peak MiB",
        ],
        &rows,
    )
}
