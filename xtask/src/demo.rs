//! `cargo xtask demo`: the main job. Builds the release binaries and runs every stage on
//! synthetic data, printing each command, then a summary table with a verdict per stage.
//!
//! Stages: synthesise a raw pool (`configs/demo/synth.yaml`) → stratified split → dataset check →
//! a baseline prediction file (ground truth with realistic detector noise) → evaluation with
//! plots → train the three ensemble variants (`configs/demo/training.yaml`: an epoch cap and a
//! quality target, never a wall-clock budget) → predict the held-out test split with the balanced
//! variant and evaluate it → one active-learning round on field footage (select, the
//! annotators' answer imported, a fine-tune from the baseline, `trident val` before and after)
//! → export the three variants to verified ONNX → calibrate the ensemble
//! on the validation split → cross-compile the Nano runtime, build and sign the deployment
//! package, verify it on the host and with the aarch64 runtime under qemu → the test feed →
//! provision two loopback units and push a package to them, whose services play the test feed →
//! the edge runtime on the installed package and the test feed, its detections scored against
//! the feed's ground truth → a short host bench.
//!
//! Every stage states its floor and its verdict (`demo_floors`). A stage under its floor prints
//! FAILED with the figure and the floor; the demo runs to the end and then exits non-zero, so a
//! broken main job never looks green. Train, export and calibrate reuse an earlier run's outputs
//! only when their inputs hash the same (`demo_cache`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use trident_core::dataset::{DatasetConfig, Split};
use trident_core::prediction::save_predictions;
use trident_data::truth::load_ground_truth;
use trident_eval::synthetic::{NoiseModel, noisy_predictions};

use crate::demo_cache::{Inputs, Stamps};
use crate::demo_floors::{self as floors, TrainedVariant, Verdict};
use crate::{cmd, exec, root};

/// The demo's training config: three variants, an epoch cap, a quality target.
pub(crate) const TRAINING: &str = "configs/demo/training.yaml";
const VARIANTS: [&str; 3] = ["high_recall", "balanced", "high_precision"];

pub(crate) struct Stage {
    pub name: String,
    pub result: String,
    pub seconds: f64,
    pub verdict: Verdict,
}

impl Stage {
    pub fn new(name: &str, verdict: Verdict, result: impl Into<String>, seconds: f64) -> Self {
        Stage {
            name: name.into(),
            result: result.into(),
            seconds,
            verdict,
        }
    }

    /// A detail line under the stage before it.
    pub fn detail(name: &str, verdict: Verdict, result: impl Into<String>) -> Self {
        Self::new(name, verdict, result, 0.0)
    }
}

pub(crate) struct Demo {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub stages: Vec<Stage>,
    stamps: Stamps,
}

impl Demo {
    pub fn trident(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("trident"));
        c.current_dir(root()).args(args);
        c
    }

    pub fn push(&mut self, stage: Stage) {
        if stage.verdict == Verdict::Fail {
            eprintln!("\n{}: FAILED — {}", stage.name, stage.result);
        }
        self.stages.push(stage);
    }

    /// Runs `stage` unless an earlier run with the same `inputs` left all of `outputs`.
    pub(crate) fn cached(
        &self,
        stage: &str,
        inputs: Inputs,
        outputs: &[PathBuf],
        run: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        let key = inputs.key();
        if self.stamps.reusable(stage, &key, outputs) {
            println!(
                "\n{stage}: inputs unchanged since the last run (sha256 {}…): reusing its outputs",
                &key[..12]
            );
            return Ok(true);
        }
        run()?;
        self.stamps.record(stage, &key)?;
        Ok(false)
    }
}

pub fn run() -> Result<()> {
    let total = Instant::now();
    let t = Instant::now();
    // The dev profile (dependencies at opt-level 2, this workspace at 1): the build the test
    // suite and xtask itself already share, so a fresh clone compiles the dependencies once and
    // skips release's thin LTO. Training runs in libtorch and inference in tract, both
    // optimised dependencies; the binary a unit runs is the cross build's release.
    run_cmd(cmd("cargo").args([
        "build",
        "-p",
        "trident",
        "-p",
        "trident-edge",
        "--bin",
        "trident",
        "--bin",
        "trident-edge",
        "-p",
        "trident-e2e",
        "--bin",
        "loopback-fleet",
    ]))?;
    let dir = root().join("demo");
    std::fs::create_dir_all(&dir)?;
    let mut d = Demo {
        stamps: Stamps::new(&dir),
        dir,
        bin: root().join("target/debug"),
        stages: vec![],
    };
    d.push(Stage::new(
        "build",
        Verdict::Pass,
        "trident, trident-edge, loopback-fleet (dev profile, optimised dependencies)",
        t.elapsed().as_secs_f64(),
    ));
    let stages_start = Instant::now();

    data_stages(&mut d)?;
    train_stage(&mut d)?;
    predict_stage(&mut d)?;
    crate::demo_active::run(&mut d)?;
    export_stage(&mut d)?;
    calibrate_stage(&mut d)?;
    let release = crate::demo_release::run(&mut d)?;

    let t = Instant::now();
    let stills = crate::demo_feed::feed_stills(&d.dir.join("dataset/images/test"))?;
    let feed = crate::demo_feed::make_test_feed(&stills, &d.dir.join("test_feed"))?;
    d.push(Stage::new(
        "test feed",
        Verdict::Pass,
        format!(
            "{} held-out test frames → demo/test_feed.avi (MJPEG, {} fps, GStreamer)",
            stills.len(),
            crate::demo_feed::FEED_FPS
        ),
        t.elapsed().as_secs_f64(),
    ));

    crate::demo_deploy::run(&mut d, &feed)?;
    crate::demo_edge::run(&mut d, &release, &stills)?;
    let bench = crate::demo_bench::run(&d.bin.join("trident-edge"), &release)?;
    d.push(bench);

    summary(
        &d.stages,
        stages_start.elapsed().as_secs_f64(),
        total.elapsed().as_secs_f64(),
    )
}

/// Prints the table; fails (non-zero exit) when any stage is under its floor.
fn summary(stages: &[Stage], stages_s: f64, total_s: f64) -> Result<()> {
    println!("\n== trident demo summary ==");
    let w = stages
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(5);
    println!("{:<w$}  {:>8}  {:<7} result", "stage", "seconds", "verdict");
    for s in stages {
        println!(
            "{:<w$}  {:>8.1}  {:<7} {}",
            s.name,
            s.seconds,
            s.verdict.label(),
            s.result
        );
    }
    println!(
        "{:<w$}  {:>8.1}          (stages after the build)",
        "stages", stages_s
    );
    println!("{:<w$}  {:>8.1}", "total", total_s);
    let failed: Vec<&str> = stages
        .iter()
        .filter(|s| s.verdict == Verdict::Fail)
        .map(|s| s.name.as_str())
        .collect();
    let judged = stages.iter().filter(|s| s.verdict != Verdict::None).count();
    if failed.is_empty() {
        println!("\nall {judged} judged stages met their floors");
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {judged} judged stages FAILED their floors: {}",
            failed.len(),
            failed.join(", ")
        )
    }
}

fn data_stages(d: &mut Demo) -> Result<()> {
    let t = Instant::now();
    run_cmd(&mut d.trident(&[
        "data",
        "synth",
        "--config",
        "configs/demo/synth.yaml",
        "--out",
        "demo/pool",
        "--force",
    ]))?;
    let pool = std::fs::read_dir(d.dir.join("pool/images"))?.count();
    d.push(Stage::new(
        "data synth",
        Verdict::from_ok(pool > 0),
        format!("{pool} underwater scenes, 3 species (flat pool, configs/demo/synth.yaml)"),
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    run_cmd(&mut d.trident(&[
        "data",
        "split",
        "--images",
        "demo/pool/images",
        "--labels",
        "demo/pool/labels",
        "--out",
        "demo/dataset",
        "--ratios",
        "0.7,0.15,0.15",
        "--seed",
        "0",
        "--force",
    ]))?;
    d.push(Stage::new(
        "data split",
        Verdict::Pass,
        "stratified 70/15/15 → demo/dataset",
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    // `data check` exits non-zero on any problem: passing it is the verdict.
    run_cmd(&mut d.trident(&["data", "check", "--data", "demo/dataset/dataset.yaml"]))?;
    d.push(Stage::new(
        "data check",
        Verdict::Pass,
        "every image and label line valid",
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    let n = write_baseline(
        &d.dir.join("dataset/dataset.yaml"),
        &d.dir.join("baseline_val.json"),
    )?;
    d.push(Stage::new(
        "baseline",
        Verdict::None,
        format!("{n} noisy predictions (jitter, misses, duplicates, false positives)"),
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    let eval_args = [
        "eval",
        "--data",
        "demo/dataset/dataset.yaml",
        "--split",
        "val",
        "--predictions",
        "demo/baseline_val.json",
        "--plots",
        "demo/eval_plots",
    ];
    run_cmd(&mut d.trident(&eval_args))?;
    let ev = eval_json(&mut d.trident(&[&eval_args[..], &["--json"]].concat()))?;
    // The noise model keeps most boxes: an evaluator that scores it near 0 or 1 is broken.
    let map50 = num(&ev["map50"]);
    d.push(Stage::new(
        "eval",
        Verdict::from_ok((0.5..0.99).contains(&map50)),
        format!(
            "{} (noisy truth: expected 0.5–0.99); plots in demo/eval_plots",
            eval_line(&ev)
        ),
        t.elapsed().as_secs_f64(),
    ));
    Ok(())
}

fn train_stage(d: &mut Demo) -> Result<()> {
    let t = Instant::now();
    let args = [
        "train",
        "--config",
        TRAINING,
        "--data",
        "demo/dataset/dataset.yaml",
        "--out",
        "demo/runs",
        "--exist-ok",
    ];
    let inputs = Inputs::new("train")
        .text(&args.join(" "))
        .file(&d.bin.join("trident"))?
        .file(&root().join(TRAINING))?
        .dir(&d.dir.join("dataset"))?;
    let outputs: Vec<PathBuf> = VARIANTS
        .iter()
        .flat_map(|v| {
            let run = d.dir.join("runs").join(v);
            [run.join("best.safetensors"), run.join("metadata.json")]
        })
        .collect();
    let reused = d.cached("train", inputs, &outputs, || run_cmd(&mut d.trident(&args)))?;
    let mut variants = Vec::new();
    for v in VARIANTS {
        let path = d.dir.join("runs").join(v).join("metadata.json");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        variants.push(TrainedVariant::from_metadata(v, &meta));
    }
    let all_above = variants.iter().all(|v| v.verdict().0 == Verdict::Pass);
    let (ordered, order_line) = floors::variants_ordered(&variants);
    d.push(Stage::new(
        "train",
        Verdict::from_ok(all_above).and(ordered),
        format!(
            "3 variants ({TRAINING}: stop at the target mAP50 or the epoch cap){} → demo/runs/<variant>/best.safetensors",
            if reused { ", reused" } else { "" }
        ),
        t.elapsed().as_secs_f64(),
    ));
    for v in &variants {
        let (verdict, line) = v.verdict();
        d.push(Stage::detail(&v.name, verdict, line));
    }
    d.push(Stage::detail("roles", ordered, order_line));
    Ok(())
}

fn predict_stage(d: &mut Demo) -> Result<()> {
    let t = Instant::now();
    run_cmd(&mut d.trident(&[
        "predict",
        "--checkpoint",
        "demo/runs/balanced/best.safetensors",
        "--source",
        "demo/dataset/images/test",
        "--out",
        "demo/balanced_test.json",
        "--conf",
        "0.001",
    ]))?;
    let ev = eval_json(&mut d.trident(&[
        "eval",
        "--data",
        "demo/dataset/dataset.yaml",
        "--split",
        "test",
        "--predictions",
        "demo/balanced_test.json",
        "--json",
    ]))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.dir.join("runs/balanced/metadata.json"))?)?;
    let val = num(&meta["final_metrics"]["map50"]);
    let test = num(&ev["map50"]);
    d.push(Stage::new(
        "predict+eval",
        floors::test_close_to_val(test, val),
        format!(
            "balanced on the test split: {} (val mAP50 {val:.3}; floor: within {} of it)",
            eval_line(&ev),
            floors::TEST_VS_VAL
        ),
        t.elapsed().as_secs_f64(),
    ));
    Ok(())
}

fn export_stage(d: &mut Demo) -> Result<()> {
    let t = Instant::now();
    let checkpoints: Vec<String> = VARIANTS
        .iter()
        .map(|v| format!("demo/runs/{v}/best.safetensors"))
        .collect();
    let mut args = vec!["export", "--out", "demo/models", "--half"];
    for c in &checkpoints {
        args.extend(["--checkpoint", c.as_str()]);
    }
    let mut inputs = Inputs::new("export")
        .text(&args.join(" "))
        .file(&d.bin.join("trident"))?;
    for c in &checkpoints {
        inputs = inputs.file(&root().join(c))?;
    }
    let inputs = inputs.dir(&d.dir.join("dataset"))?;
    let models = d.dir.join("models");
    let outputs: Vec<PathBuf> = VARIANTS
        .iter()
        .flat_map(|v| {
            ["onnx", "card.json", "fp16.card.json"].map(|x| models.join(format!("{v}.{x}")))
        })
        .collect();
    let reused = d.cached("export", inputs, &outputs, || {
        run_cmd(&mut d.trident(&args))
    })?;
    let mut lines = Vec::new();
    for v in VARIANTS {
        let card = read_json(&models.join(format!("{v}.card.json")))?;
        let half = read_json(&models.join(format!("{v}.fp16.card.json")))?;
        lines.push((v, floors::export_verdict(&card, &half)));
    }
    let all = lines.iter().fold(Verdict::Pass, |a, (_, (v, _))| a.and(*v));
    d.push(Stage::new(
        "export",
        all,
        format!(
            "3 × ONNX opset 13 + FP16-weights twin + model cards → demo/models{}",
            if reused { " (reused)" } else { "" }
        ),
        t.elapsed().as_secs_f64(),
    ));
    for (v, (verdict, line)) in lines {
        d.push(Stage::detail(v, verdict, line));
    }
    Ok(())
}

fn calibrate_stage(d: &mut Demo) -> Result<()> {
    let t = Instant::now();
    let args = [
        "calibrate",
        "--models",
        "demo/models",
        "--data",
        "demo/dataset/dataset.yaml",
        "--split",
        "val",
        "--config",
        "configs/calibrate.yaml",
        "--out",
        "demo/calibration",
        "--backend",
        "tract",
        "--force",
    ];
    let inputs = Inputs::new("calibrate")
        .text(&args.join(" "))
        .file(&d.bin.join("trident"))?
        .file(&root().join("configs/calibrate.yaml"))?
        .dir(&d.dir.join("models"))?
        .dir(&d.dir.join("dataset"))?;
    let cal = d.dir.join("calibration");
    let outputs = [cal.join("calibration.yaml"), cal.join("metrics.json")];
    let reused = d.cached("calibrate", inputs, &outputs, || {
        run_cmd(&mut d.trident(&args))
    })?;
    let metrics = read_json(&cal.join("metrics.json"))?;
    let (verdict, line) = floors::calibrate_verdict(&metrics);
    d.push(Stage::new(
        "calibrate",
        verdict,
        format!("{line}{}", if reused { " (reused)" } else { "" }),
        t.elapsed().as_secs_f64(),
    ));
    for line in calibration_details(&metrics) {
        d.push(Stage::detail("", Verdict::None, line));
    }
    Ok(())
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))
}

pub(crate) fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Runs a `trident eval … --json` command and returns its object.
pub(crate) fn eval_json(c: &mut Command) -> Result<serde_json::Value> {
    eprintln!("$ {}", crate::describe(c));
    let out = c.output()?;
    anyhow::ensure!(
        out.status.success(),
        "`{}` failed: {}",
        crate::describe(c),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("reading `trident eval --json` output")
}

/// One line of an evaluation's headline figures.
pub(crate) fn eval_line(ev: &serde_json::Value) -> String {
    format!(
        "mAP50 {:.3}, mAP50-95 {:.3}, F1 {:.3} at conf {:.2}",
        num(&ev["map50"]),
        num(&ev["map50_95"]),
        num(&ev["f1"]),
        num(&ev["best_f1_conf"])
    )
}

/// The calibration report's details: D-ECE per model, TTA views kept, thresholds.
fn calibration_details(m: &serde_json::Value) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(why) = m["bar"]["explanation"].as_str() {
        lines.push(format!("why: {why}"));
    }
    let dece: Vec<String> = m["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|mm| {
            format!(
                "{} {:.3}→{:.3}",
                mm["variant"].as_str().unwrap_or("?"),
                num(&mm["dece_before"]),
                num(&mm["dece_after"])
            )
        })
        .collect();
    lines.push(format!("D-ECE before→after: {}", dece.join(", ")));
    let kept: Vec<String> = m["tta"]["kept"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let (flip, scale) = (t["flip"].as_bool() == Some(true), num(&t["scale"]));
            let label = match (flip, scale == 1.0) {
                (true, true) => "flip".to_string(),
                (false, _) => format!("scale{scale}"),
                (true, false) => format!("flip+scale{scale}"),
            };
            format!("{label} ({:+.4}, ×{:.2})", num(&t["gain"]), num(&t["cost"]))
        })
        .collect();
    lines.push(format!(
        "TTA kept: {}; thresholds P {:.3} R {:.3}; report demo/calibration/report.md",
        if kept.is_empty() {
            "none".to_string()
        } else {
            kept.join(", ")
        },
        num(&m["ensemble"]["precision_at_thresholds"]),
        num(&m["ensemble"]["recall_at_thresholds"])
    ));
    lines
}

pub(crate) fn run_cmd(c: &mut Command) -> Result<()> {
    println!();
    exec(c)
}

/// Ground truth with a realistic detector's mistakes: what an untrained pipeline check expects.
fn write_baseline(yaml: &Path, out: &Path) -> Result<usize> {
    let ds = DatasetConfig::load(yaml)?;
    let truths = load_ground_truth(&ds, Split::Val, &ProgressBar::hidden())?;
    let preds = noisy_predictions(&truths, ds.num_classes(), &NoiseModel::default(), 0);
    save_predictions(out, &preds)?;
    println!(
        "\nwrote {} baseline predictions to {}",
        preds.len(),
        out.display()
    );
    Ok(preds.len())
}
