//! End-to-end training behaviour on tiny synthetic datasets: overfitting, resume after an
//! interrupt, time budget, bad input. Each test trains for seconds, not minutes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;
use trident_core::dataset::DatasetConfig;
use trident_core::postprocess::NmsOptions;
use trident_data::synth::{SynthConfig, synthesize};
use trident_trainer::checkpoint::Checkpoint;
use trident_trainer::config::{AugmentSpec, TrainSettings};
use trident_trainer::data::augment::Augmentation;
use trident_trainer::predict::Predictor;
use trident_trainer::train::{
    MIN_USEFUL_EPOCHS, StopReason, TrainJob, short_budget_warning, train,
};

/// A synthetic dataset of `images` frames; `same_val` makes val the training images (overfit).
fn dataset(dir: &Path, images: usize, seed: u64, same_val: bool) -> PathBuf {
    let cfg = SynthConfig {
        images,
        seed,
        width: 160,
        height: 120,
        max_objects: 3,
        min_size: 0.25,
        max_size: 0.45,
        blur_probability: 0.0,
        split_ratios: [0.75, 0.25, 0.0],
        ..SynthConfig::default()
    };
    synthesize(&cfg, dir, true, &ProgressBar::hidden()).unwrap();
    let yaml = dir.join("dataset.yaml");
    if same_val {
        let text = std::fs::read_to_string(&yaml)
            .unwrap()
            .replace("val: images/val", "val: images/train");
        std::fs::write(&yaml, text).unwrap();
    }
    yaml
}

fn settings() -> TrainSettings {
    TrainSettings {
        model: "tiny".into(),
        imgsz: 128,
        epochs: 3,
        batch: 4,
        warmup_epochs: 1.0,
        patience: 0,
        close_mosaic: 0,
        augment: AugmentSpec::Custom(Augmentation::none()),
        device: "cpu".into(),
        seed: 5,
        ..TrainSettings::default()
    }
}

fn job<'a>(
    data: &Path,
    out: &Path,
    s: TrainSettings,
    stop: &'a AtomicBool,
    progress: &'a dyn Fn(u64, String) -> ProgressBar,
) -> TrainJob<'a> {
    TrainJob {
        variant: "balanced".into(),
        settings: s,
        dataset: data.to_path_buf(),
        out_dir: out.to_path_buf(),
        resume: false,
        weights: None,
        exist_ok: false,
        strict: false,
        stop,
        progress,
    }
}

fn hidden(_: u64, _: String) -> ProgressBar {
    ProgressBar::hidden()
}

#[test]
fn overfits_a_handful_of_images_and_predict_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(&dir.path().join("data"), 16, 11, true);
    let out = dir.path().join("run");
    let stop = AtomicBool::new(false);
    let s = TrainSettings {
        epochs: 60, // 12 images / batch 4 = 3 steps per epoch: 180 steps
        lr0: 0.004,
        ..settings()
    };
    let outcome = train(&job(&data, &out, s, &stop, &hidden)).unwrap();
    let best = outcome.best_record.expect("validated every epoch");
    assert!(
        best.map50 >= 0.9,
        "mAP50 {} after {} epochs",
        best.map50,
        outcome.epochs
    );
    for f in [
        "best.safetensors",
        "last.safetensors",
        "metrics.csv",
        "curves.png",
        "metadata.json",
        "model.yaml",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["dataset"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(meta["config"]["conf_floor"], 0.25);
    assert!(meta["tch_version"].as_str().unwrap().starts_with("0."));

    // The predict path (full-precision letterbox, inference decoder) agrees with validation.
    let predictor = Predictor::load(&out.join("best.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(predictor.meta.conf_floor, 0.25);
    let ds = DatasetConfig::load(&data).unwrap();
    let images = ds.root.join("images/train");
    let (preds, summary) = predictor
        .predict_source(
            &images,
            &NmsOptions::validation(),
            8,
            &ProgressBar::hidden(),
        )
        .unwrap();
    assert_eq!(summary.images, 12);
    let truths = trident_data::truth::load_ground_truth(
        &ds,
        trident_core::dataset::Split::Train,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let index = trident_eval::match_predictions("p", &truths, &preds, 3).unwrap();
    let ev = trident_eval::evaluate(&truths, &preds, &index, &ds.names).unwrap();
    assert!(
        (ev.map50 - best.map50).abs() < 0.05,
        "predict {} vs validation {}",
        ev.map50,
        best.map50
    );
}

#[test]
fn interrupted_run_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(&dir.path().join("data"), 16, 3, false);
    let stop = AtomicBool::new(false);
    let s = TrainSettings {
        augment: AugmentSpec::Preset("standard".into()),
        close_mosaic: 1,
        ..settings()
    };

    let straight = dir.path().join("straight");
    let a = train(&job(&data, &straight, s.clone(), &stop, &hidden)).unwrap();
    assert_eq!((a.epochs, a.stop_reason), (3, StopReason::Completed));

    // Interrupt as epoch 3 starts (as Ctrl-C would): `last` holds epoch 2.
    let resumed = dir.path().join("resumed");
    let interrupt = AtomicBool::new(false);
    let ctrl_c = |_: u64, msg: String| {
        if msg.contains(" 3/3") {
            interrupt.store(true, Ordering::SeqCst);
        }
        ProgressBar::hidden()
    };
    let b = train(&job(&data, &resumed, s.clone(), &interrupt, &ctrl_c)).unwrap();
    assert_eq!((b.epochs, b.stop_reason), (2, StopReason::Interrupted));
    let last = Checkpoint::open(&resumed.join("last.safetensors")).unwrap();
    assert_eq!(last.meta.training.as_ref().unwrap().epoch, 2);

    let calm = AtomicBool::new(false);
    let mut j = job(&data, &resumed, s, &calm, &hidden);
    j.resume = true;
    let c = train(&j).unwrap();
    assert_eq!((c.epochs, c.stop_reason), (3, StopReason::Completed));

    // Same weights, EMA and optimizer state as the uninterrupted run (CPU kernels at a fixed
    // thread count are deterministic; allow for float reordering all the same).
    let x = Checkpoint::open(&straight.join("last.safetensors")).unwrap();
    let y = Checkpoint::open(&resumed.join("last.safetensors")).unwrap();
    let vx = x.tensors_f32().unwrap();
    let vy = y.tensors_f32().unwrap();
    assert_eq!(vx.len(), vy.len());
    for (name, a) in &vx {
        let b = &vy[name];
        let diff = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{name} differs by {diff}");
    }
    let rows = std::fs::read_to_string(resumed.join("metrics.csv")).unwrap();
    assert_eq!(rows.lines().count(), 4, "header + 3 epochs:\n{rows}");
    assert_eq!(
        x.meta.training.as_ref().unwrap().step,
        y.meta.training.as_ref().unwrap().step
    );
}

#[test]
fn time_budget_stops_gracefully_with_a_best_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(&dir.path().join("data"), 16, 4, false);
    let stop = AtomicBool::new(false);
    let s = TrainSettings {
        epochs: 10_000,
        time: Some(0.1), // 6 s
        ..settings()
    };
    let out = dir.path().join("run");
    let o = train(&job(&data, &out, s, &stop, &hidden)).unwrap();
    assert_eq!(o.stop_reason, StopReason::TimeBudget);
    assert!(o.epochs >= 1 && o.epochs < 10_000);
    assert!(o.wall_s < 60.0, "{}", o.wall_s);
    assert!(out.join("best.safetensors").exists());
}

#[test]
fn corrupt_images_are_skipped_and_counted_or_fatal_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(&dir.path().join("data"), 16, 6, false);
    let ds = DatasetConfig::load(&data).unwrap();
    let victim = ds.list_images(trident_core::dataset::Split::Train).unwrap()[0]
        .image
        .clone();
    std::fs::write(&victim, b"not a jpeg").unwrap();
    let stop = AtomicBool::new(false);
    let s = TrainSettings {
        epochs: 1,
        ..settings()
    };

    let out = dir.path().join("lenient");
    train(&job(&data, &out, s.clone(), &stop, &hidden)).unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metadata.json")).unwrap()).unwrap();
    let skipped = meta["dataset"]["train_skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0]
            .as_str()
            .unwrap()
            .contains(&*victim.file_name().unwrap().to_string_lossy())
    );
    assert_eq!(meta["dataset"]["train_images"], 11);

    let mut strict = job(&data, &dir.path().join("strict"), s, &stop, &hidden);
    strict.strict = true;
    let err = train(&strict).err().unwrap().to_string();
    assert!(
        err.contains("--strict") && err.contains("cannot decode image"),
        "{err}"
    );
    assert!(!dir.path().join("strict/last.safetensors").exists());
}

#[test]
fn bad_datasets_and_settings_are_refused_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let run = |yaml: &str| {
        let p = dir.path().join("bad.yaml");
        std::fs::write(&p, yaml).unwrap();
        train(&job(
            &p,
            &dir.path().join("out"),
            settings(),
            &stop,
            &hidden,
        ))
        .err()
        .unwrap()
    };
    std::fs::create_dir_all(dir.path().join("images/train")).unwrap();
    let e = run("path: .\ntrain: images/train\nnames: [a]\n");
    assert!(e.to_string().contains("`val`"), "{e}");
    assert!(e.is_input_error());
    let e = run("path: .\ntrain: images/train\nval: images/train\n");
    assert!(e.to_string().contains("names"), "{e}");

    let data = dataset(&dir.path().join("data"), 8, 1, false);
    let s = TrainSettings {
        device: "cuda:7".into(),
        ..settings()
    };
    if !tch::Cuda::is_available() {
        let e = train(&job(&data, &dir.path().join("o2"), s, &stop, &hidden))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no CUDA device"), "{e}");
    }

    // A finished run is not overwritten by accident.
    let out = dir.path().join("o3");
    let one = TrainSettings {
        epochs: 1,
        ..settings()
    };
    train(&job(&data, &out, one.clone(), &stop, &hidden)).unwrap();
    let e = train(&job(&data, &out, one, &stop, &hidden)).err().unwrap();
    assert!(
        e.to_string().contains("--resume") && e.to_string().contains("--exist-ok"),
        "{e}"
    );
}

#[test]
fn trains_on_other_class_counts_and_portrait_frames_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        images: 12,
        seed: 21,
        width: 96,
        height: 176,
        classes: (0..7).map(|i| format!("species{i}")).collect(),
        max_objects: 4,
        split_ratios: [0.75, 0.25, 0.0],
        ..SynthConfig::default()
    };
    let root = dir.path().join("data");
    synthesize(&cfg, &root, true, &ProgressBar::hidden()).unwrap();
    let stop = AtomicBool::new(false);
    let s = TrainSettings {
        epochs: 1,
        imgsz: 160,
        ..settings()
    };
    let out = dir.path().join("run");
    train(&job(&root.join("dataset.yaml"), &out, s, &stop, &hidden)).unwrap();
    let predictor = Predictor::load(&out.join("last.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(predictor.meta.spec.num_classes(), 7);
    assert_eq!(predictor.meta.spec.input_size, 160);
    let y = predictor.forward(&tch::Tensor::zeros(
        [1, 3, 160, 160],
        (tch::Kind::Float, tch::Device::Cpu),
    ));
    assert_eq!(y.size(), [1, 4 + 7, 400 + 100 + 25]);
}

#[test]
fn a_time_budget_too_short_to_learn_is_said_out_loud() {
    let s = TrainSettings {
        time: Some(2.0),
        warmup_epochs: 1.0,
        ..settings()
    };
    // The slow machine's case: 2 minutes at 32 s per epoch plan 3 epochs.
    let w = short_budget_warning("balanced", &s, 3, 32.0).expect("a warning");
    assert!(
        w.contains("2 min fits only 3 epoch(s)") && w.contains("detects little or nothing"),
        "{w}"
    );
    assert!(
        w.contains(&format!(
            "{:.1} min",
            32.0 * (1 + MIN_USEFUL_EPOCHS) as f64 / 60.0
        )),
        "{w}"
    );
    // Enough epochs, or no budget at all: nothing to say.
    assert_eq!(
        short_budget_warning("balanced", &s, 1 + MIN_USEFUL_EPOCHS, 32.0),
        None
    );
    let by_epochs = TrainSettings { time: None, ..s };
    assert_eq!(short_budget_warning("balanced", &by_epochs, 1, 32.0), None);
}
