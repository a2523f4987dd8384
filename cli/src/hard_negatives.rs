//! `trident train --hard-negatives N --background DIR…`: the core seed's specialisation loop.
//! Each variant is trained, its false positives on background footage are mined (`trident
//! mine`), and it is trained again from its last weights on the dataset plus every pool mined so
//! far — N trainings in all. Each step is this binary's own `train` or `mine` in a child
//! process, so a round is exactly what a person would run by hand.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use trident_core::blame::Usage;

use crate::cli::TrainArgs;
use crate::ui::table;

pub fn run(
    a: &TrainArgs,
    dataset: &Path,
    out_root: &Path,
    variants: &[String],
) -> anyhow::Result<ExitCode> {
    let rounds = a.hard_negatives.expect("called for --hard-negatives");
    if rounds < 2 {
        return Err(Usage(
            "--hard-negatives: at least 2 (one training, one mining, one training again)".into(),
        )
        .into());
    }
    for b in &a.background {
        if !b.is_dir() {
            return Err(Usage(format!("--background {}: not a folder", b.display())).into());
        }
    }
    let exe = std::env::current_exe().context("locating the trident executable")?;
    let frames: usize = a
        .background
        .iter()
        .map(|b| trident_trainer::predict::list_source(b).map(|l| l.len()))
        .sum::<Result<usize, _>>()?;
    let mut rows = Vec::new();
    for variant in variants {
        let mut data = dataset.to_path_buf();
        let mut weights = a.weights.clone();
        for round in 1..=rounds {
            let dir = out_root.join(format!("round{round}"));
            let mut train = Command::new(&exe);
            train.args(train_args(a, variant, &data, &dir, weights.as_deref()));
            run_child(&mut train, &format!("{variant}, round {round}: train"))?;
            let best = dir.join(variant).join("best.safetensors");
            // The last model is mined too: its false positives are the figure the loop lowers.
            let pool = dir.join(format!("{variant}-mined"));
            let mut mine = Command::new(&exe);
            mine.args(["mine", "--checkpoint"])
                .arg(&best)
                .arg("--data")
                .arg(&data)
                .arg("--out")
                .arg(&pool)
                .args(["--prefix", &format!("hardneg{round}_"), "--force"]);
            for b in &a.background {
                mine.arg("--source").arg(b);
            }
            run_child(&mut mine, &format!("{variant}, round {round}: mine"))?;
            let mined = count_mined(&pool)?;
            rows.push(vec![
                variant.clone(),
                round.to_string(),
                format!("{}", mined.0),
                format!("{:.3}", mined.1 as f64 / frames.max(1) as f64),
                best.display().to_string(),
            ]);
            // A model that fired on no background frame leaves nothing to add.
            if mined.0 > 0 {
                data = pool.join("dataset.yaml");
            }
            weights = Some(best);
        }
    }
    println!(
        "hard negatives on {frames} background frames (the model of each round mined after its training):"
    );
    print!(
        "{}",
        table(
            &[
                "variant",
                "round",
                "frames with FP",
                "FP per frame",
                "model"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// The child `trident train` of one variant and round: the user's overrides, this round's data,
/// folder and start weights.
fn train_args(
    a: &TrainArgs,
    variant: &str,
    data: &Path,
    out: &Path,
    weights: Option<&Path>,
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "train".into(),
        "--config".into(),
        a.config.display().to_string(),
        "--variant".into(),
        variant.into(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--no-summary".into(),
    ];
    v.extend(crate::train::setting_overrides(a));
    if let Some(t) = a.threads {
        v.extend(["--threads".into(), t.to_string()]);
    }
    if let Some(w) = weights {
        v.extend(["--weights".into(), w.display().to_string()]);
    }
    v
}

fn run_child(c: &mut Command, what: &str) -> anyhow::Result<()> {
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!("{what}: trident {}", args.join(" "));
    let status = c.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        // The child printed its error; its status (2 for bad input) is passed on.
        if status.code() == Some(2) {
            return Err(Usage(format!("{what} failed (its error is printed above)")).into());
        }
        bail!("{what} failed with {status} (its error is printed above)");
    }
    Ok(())
}

/// Frames in a mined pool and their false positives, from its mined.csv.
fn count_mined(pool: &Path) -> anyhow::Result<(usize, usize)> {
    let csv: PathBuf = pool.join("mined.csv");
    let text =
        std::fs::read_to_string(&csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut frames = 0;
    let mut fp = 0;
    for line in text.lines().skip(1) {
        frames += 1;
        fp += line
            .split(',')
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    Ok((frames, fp))
}
