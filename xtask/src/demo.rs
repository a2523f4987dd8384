//! `cargo xtask demo`: the main job. Builds the release binaries and runs every stage that
//! exists so far on built-in synthetic data, printing each command, then a summary table.
//!
//! Stages: synthesise a raw pool of images and labels → stratified split → dataset check →
//! a baseline prediction file (ground truth with realistic detector noise) → evaluation with
//! plots → train the three ensemble variants on a short CPU budget → predict the held-out test
//! split with the balanced variant and evaluate it → export the three variants to verified ONNX
//! (parity against tch with tract and ONNX Runtime, FP16-weights mAP delta) → calibrate the
//! ensemble on the validation split (report headline) → cross-compile the Nano runtime, build
//! and sign the deployment package with a throwaway key, verify it on the host and with the
//! aarch64 runtime under qemu (installing it) → the edge runtime on that installed package,
//! → provision two loopback units (real sshd) and push a package to them with `trident deploy`,
//! then their status → the edge runtime on the installed package, on a feed of the held-out
//! test split. Later stages (bench) extend this list.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use trident_core::dataset::{DatasetConfig, Split};
use trident_core::prediction::save_predictions;
use trident_data::truth::load_ground_truth;
use trident_eval::synthetic::{NoiseModel, noisy_predictions};

use crate::{cmd, exec, root};

/// CPU minutes per variant in the demo's training stage.
const TRAIN_MINUTES: &str = "2";

/// How long the edge runtime plays the test feed.
const EDGE_SECONDS: &str = "20s";

pub(crate) struct Stage {
    pub name: &'static str,
    pub result: String,
    pub seconds: f64,
}

pub fn run() -> Result<()> {
    let total = Instant::now();
    let mut stages = Vec::new();
    let t = Instant::now();
    run_cmd(cmd("cargo").args([
        "build",
        "--release",
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
    stages.push(Stage {
        name: "build",
        result: "trident, trident-edge, loopback-fleet (release)".into(),
        seconds: t.elapsed().as_secs_f64(),
    });

    let demo = root().join("demo");
    std::fs::create_dir_all(&demo)?;
    let bin = root().join("target/release");
    let trident = |args: &[&str]| {
        let mut c = Command::new(bin.join("trident"));
        c.current_dir(root()).args(args);
        c
    };

    let t = Instant::now();
    run_cmd(&mut trident(&[
        "data",
        "synth",
        "--out",
        "demo/pool",
        "--layout",
        "flat",
        "--images",
        "600",
        "--seed",
        "0",
        "--force",
    ]))?;
    stages.push(Stage {
        name: "data synth",
        result: "600 underwater scenes, 3 species (flat pool)".into(),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    run_cmd(&mut trident(&[
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
    stages.push(Stage {
        name: "data split",
        result: "stratified 70/15/15 → demo/dataset".into(),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    run_cmd(&mut trident(&[
        "data",
        "check",
        "--data",
        "demo/dataset/dataset.yaml",
    ]))?;
    stages.push(Stage {
        name: "data check",
        result: "no problems".into(),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    let preds_path = demo.join("baseline_val.json");
    let n = write_baseline(&demo.join("dataset/dataset.yaml"), &preds_path)?;
    stages.push(Stage {
        name: "baseline",
        result: format!("{n} noisy predictions (jitter, misses, duplicates, false positives)"),
        seconds: t.elapsed().as_secs_f64(),
    });

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
    run_cmd(&mut trident(&eval_args))?;
    let metrics = eval_summary(&mut trident(&[&eval_args[..], &["--json"]].concat()))?;
    stages.push(Stage {
        name: "eval",
        result: format!("{metrics}; plots in demo/eval_plots"),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    run_cmd(&mut trident(&[
        "train",
        "--config",
        "configs/training.yaml",
        "--data",
        "demo/dataset/dataset.yaml",
        "--out",
        "demo/runs",
        "--time",
        TRAIN_MINUTES,
        "--exist-ok",
    ]))?;
    stages.push(Stage {
        name: "train",
        result: format!(
            "3 variants, {TRAIN_MINUTES} min CPU budget each → demo/runs/<variant>/best.safetensors"
        ),
        seconds: t.elapsed().as_secs_f64(),
    });
    for variant in ["high_recall", "balanced", "high_precision"] {
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(
            demo.join("runs").join(variant).join("metadata.json"),
        )?)
        .with_context(|| format!("reading the {variant} metadata"))?;
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        let m = &meta["final_metrics"];
        let floor = &meta["at_conf_floor"];
        stages.push(Stage {
            name: variant,
            result: format!(
                "mAP50 {:.3}, mAP50-95 {:.3}; at floor {:.2}: P {:.3} R {:.3} ({} epochs)",
                f(&m["map50"]),
                f(&m["map50_95"]),
                f(&floor["conf_floor"]),
                f(&floor["precision"]),
                f(&floor["recall"]),
                meta["epochs_completed"]
            ),
            seconds: 0.0,
        });
    }

    let t = Instant::now();
    run_cmd(&mut trident(&[
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
    let metrics = eval_summary(&mut trident(&[
        "eval",
        "--data",
        "demo/dataset/dataset.yaml",
        "--split",
        "test",
        "--predictions",
        "demo/balanced_test.json",
        "--json",
    ]))?;
    stages.push(Stage {
        name: "predict+eval",
        result: format!("balanced on the test split: {metrics}"),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    let variants = ["high_recall", "balanced", "high_precision"];
    let checkpoints: Vec<String> = variants
        .iter()
        .map(|v| format!("demo/runs/{v}/best.safetensors"))
        .collect();
    let mut args = vec!["export", "--out", "demo/models", "--half"];
    for c in &checkpoints {
        args.extend(["--checkpoint", c.as_str()]);
    }
    run_cmd(&mut trident(&args))?;
    stages.push(Stage {
        name: "export",
        result: "3 × ONNX opset 13 + FP16-weights twin + model cards → demo/models".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    for variant in variants {
        stages.push(Stage {
            name: variant,
            result: export_summary(&demo.join("models"), variant)?,
            seconds: 0.0,
        });
    }

    let t = Instant::now();
    run_cmd(&mut trident(&[
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
    ]))?;
    let mut headline = calibration_summary(&demo.join("calibration/metrics.json"))?;
    stages.push(Stage {
        name: "calibrate",
        result: headline.remove(0),
        seconds: t.elapsed().as_secs_f64(),
    });
    for line in headline {
        stages.push(Stage {
            name: "",
            result: line,
            seconds: 0.0,
        });
    }

    // The release: the Nano runtime, a throwaway signing key, the signed package, and its
    // verification on the host and — under qemu-aarch64 — by the device's own binary.
    let t = Instant::now();
    let cross = crate::cross::build()?;
    stages.push(Stage {
        name: "cross build",
        result: format!(
            "trident-edge for aarch64 (glibc ≤ {}), {:.1} MiB",
            crate::cross::MAX_GLIBC,
            std::fs::metadata(&cross.binary)?.len() as f64 / (1 << 20) as f64
        ),
        seconds: t.elapsed().as_secs_f64(),
    });
    let t = Instant::now();
    let keys = demo.join("keys");
    let _ = std::fs::remove_dir_all(&keys);
    run_cmd(&mut trident(&[
        "package",
        "keygen",
        "--unencrypted",
        "--out",
        "demo/keys",
    ]))?;
    let mut package = trident(&[
        "export",
        "--package",
        "--config",
        "configs/release.yaml",
        "--out",
        "demo/dist",
        "--sign-key",
        "demo/keys/trident.key",
        "--models",
        "demo/models",
        "--calibration",
        "demo/calibration/calibration.yaml",
    ]);
    package
        .arg("--binary")
        .arg(&cross.binary)
        .env_remove("TRIDENT_SIGN_KEY");
    run_cmd(&mut package)?;
    let name = format!(
        "trident-{}-jetson-nano-jp46.tar.zst",
        env!("CARGO_PKG_VERSION")
    );
    let pkg = format!("demo/dist/{name}");
    let bytes = std::fs::metadata(root().join(&pkg))?.len();
    stages.push(Stage {
        name: "package",
        result: format!(
            "{pkg} ({:.1} MiB) + .minisig (throwaway key demo/keys)",
            bytes as f64 / (1 << 20) as f64
        ),
        seconds: t.elapsed().as_secs_f64(),
    });
    let t = Instant::now();
    run_cmd(&mut trident(&[
        "package",
        "verify",
        &pkg,
        "--pubkey",
        "demo/keys/trident.pub",
    ]))?;
    let release = demo.join(format!("device/releases/{}", env!("CARGO_PKG_VERSION")));
    let _ = std::fs::remove_dir_all(demo.join("device"));
    std::fs::create_dir_all(demo.join("device/releases"))?;
    let mut device = Command::new("qemu-aarch64-static");
    device
        .current_dir(root())
        .arg(&cross.binary)
        .args([
            "verify",
            &pkg,
            "--pubkey",
            "demo/keys/trident.pub",
            "--install",
        ])
        .arg(&release)
        .env("QEMU_LD_PREFIX", &cross.sysroot);
    run_cmd(&mut device)?;
    stages.push(Stage {
        name: "verify",
        result: format!(
            "host and device (aarch64 under qemu): signature and {} sha256s, installed → {}",
            manifest_files(&release)?,
            release.strip_prefix(root()).unwrap_or(&release).display()
        ),
        seconds: t.elapsed().as_secs_f64(),
    });

    // Fleet deployment to two loopback units.
    stages.extend(crate::demo_deploy::run(&bin.join("trident"), &demo)?);

    let t = Instant::now();
    let frames = make_test_feed(&demo.join("dataset/images/test"), &demo.join("test_feed"))?;
    stages.push(Stage {
        name: "test feed",
        result: format!("{frames} held-out test frames → demo/test_feed.avi (MJPEG, GStreamer)"),
        seconds: t.elapsed().as_secs_f64(),
    });

    // On a Jetson this builds and validates the TensorRT engines; here it says why there is
    // nothing to do.
    let t = Instant::now();
    let mut prepare = Command::new(bin.join("trident-edge"));
    prepare.current_dir(root()).args([
        "prepare",
        "--models",
        "demo/models",
        "--engine-cache",
        "demo/engines",
    ]);
    eprintln!("$ {}", crate::describe(&prepare));
    let out = prepare.output()?;
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    print!("{report}");
    anyhow::ensure!(
        out.status.success(),
        "trident-edge prepare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stages.push(Stage {
        name: "edge prepare",
        result: report
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("trident-edge prepare: ")
            .to_string(),
        seconds: t.elapsed().as_secs_f64(),
    });

    let t = Instant::now();
    let mut edge = Command::new(bin.join("trident-edge"));
    // The models and tables of the installed package (its manifest is checked again at load).
    edge.current_dir(root())
        .arg("run")
        .arg("--package")
        .arg(&release)
        .args([
            "--profile",
            "configs/profiles/host-cpu.yaml",
            "--source",
            "file://demo/test_feed.avi",
            "--loop-files",
            "--duration",
            EDGE_SECONDS,
            "--out",
            "demo/edge",
            // /healthz and /metrics on a free port, so a busy 8080 cannot fail the demo.
            "--http",
            "127.0.0.1:0",
        ]);
    println!();
    eprintln!("$ {}", crate::describe(&edge));
    let out = edge.output()?;
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    print!("{summary}");
    anyhow::ensure!(
        out.status.success(),
        "trident-edge run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stages.push(Stage {
        name: "edge runtime",
        result: summary
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("trident-edge run: ")
            .to_string(),
        seconds: t.elapsed().as_secs_f64(),
    });

    // A short benchmark of the same package on this host, and its measured profile.
    stages.push(crate::demo_bench::run(&bin.join("trident-edge"), &release)?);

    println!("\n== trident demo summary ==");
    let w = stages.iter().map(|s| s.name.len()).max().unwrap_or(5);
    println!("{:<w$}  {:>8}  result", "stage", "seconds");
    for s in &stages {
        println!("{:<w$}  {:>8.1}  {}", s.name, s.seconds, s.result);
    }
    println!("{:<w$}  {:>8.1}", "total", total.elapsed().as_secs_f64());
    Ok(())
}

/// How many files an installed package's manifest lists.
fn manifest_files(release: &Path) -> Result<usize> {
    let path = release.join("manifest.json");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(m["files"].as_object().map_or(0, |f| f.len()))
}

/// Runs a `trident eval … --json` command and summarises its metrics in one line.
fn eval_summary(c: &mut Command) -> Result<String> {
    let out = c.output()?;
    let ev: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading `trident eval --json` output")?;
    let num = |k: &str| ev[k].as_f64().unwrap_or(f64::NAN);
    Ok(format!(
        "mAP50 {:.3}, mAP50-95 {:.3}, F1 {:.3} at conf {:.2}",
        num("map50"),
        num("map50_95"),
        num("f1"),
        num("best_f1_conf")
    ))
}

/// The report's headline figures from `metrics.json`, a line each.
fn calibration_summary(path: &Path) -> Result<Vec<String>> {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let bar = &m["bar"];
    let mut lines = vec![format!(
        "calibrated WBF ensemble mAP50-95 {:.4} vs best single ({}) {:.4}: {:+.4}, bar +0.01 {}",
        num(&bar["ensemble_wbf_map50_95"]),
        bar["best_single"].as_str().unwrap_or("?"),
        num(&bar["best_single_map50_95"]),
        num(&bar["margin"]),
        if bar["met"].as_bool() == Some(true) {
            "met"
        } else {
            "NOT met"
        }
    )];
    if let Some(why) = bar["explanation"].as_str() {
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
    Ok(lines)
}

/// Muxes the JPEG frames of `images` (sorted) into `<out>.avi` with GStreamer, without
/// re-encoding: the feed the edge runtime plays in the demo.
fn make_test_feed(images: &Path, out: &Path) -> Result<usize> {
    let mut stills: Vec<_> = std::fs::read_dir(images)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    stills.sort();
    anyhow::ensure!(!stills.is_empty(), "{}: no JPEG frames", images.display());
    let (w, h) = image::image_dimensions(&stills[0])?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    for (i, p) in stills.iter().enumerate() {
        std::fs::copy(p, out.join(format!("{i:05}.jpg")))?;
    }
    let clip = out.with_extension("avi");
    // multifilesrc hands avimux a byte-format segment, which makes GStreamer print
    // assertion noise per frame while writing a valid file: its stderr is dropped.
    run_cmd(
        cmd("gst-launch-1.0")
            .stderr(std::process::Stdio::null())
            .args([
                "-q",
                "multifilesrc",
                &format!("location={}/%05d.jpg", out.display()),
                "index=0",
                &format!("stop-index={}", stills.len() - 1),
                &format!("caps=image/jpeg,framerate=10/1,width={w},height={h}"),
                "!",
                "avimux",
                "!",
                "filesink",
                &format!("location={}", clip.display()),
            ]),
    )?;
    Ok(stills.len())
}

/// One line from a variant's model cards: parity against tch, mAP50 of tch vs ONNX, FP16 delta.
fn export_summary(models: &Path, variant: &str) -> Result<String> {
    let read = |name: &str| -> Result<serde_json::Value> {
        let path = models.join(name);
        Ok(serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?)
    };
    let card = read(&format!("{variant}.card.json"))?;
    let half = read(&format!("{variant}.fp16.card.json"))?;
    let v = &card["verification"];
    let worst = |key: &str| {
        v["parity"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p[key].as_f64().unwrap_or(f64::NAN))
            .fold(0.0, f64::max)
    };
    let map = |v: &serde_json::Value, runner: &str| {
        v["task"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["runner"] == runner)
            .and_then(|t| t["map50"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let hv = &half["verification"];
    Ok(format!(
        "max |Δ| vs tch {:.1e} px / {:.1e} score (tract, ORT); mAP50 tch {:.4} ONNX {:.4}; FP16 {:+.2} pt",
        worst("max_abs_box"),
        worst("max_abs_score"),
        map(v, "tch"),
        map(v, "tract"),
        (map(hv, "tract-fp16-weights") - map(hv, "tract")) * 100.0
    ))
}

fn run_cmd(c: &mut Command) -> Result<()> {
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
