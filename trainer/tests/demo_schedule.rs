//! The demo's training setting learns. `cargo xtask demo` trains on `configs/demo/synth.yaml`'s
//! data with `configs/demo/training.yaml`; a change to either (or to the trainer) that stops the
//! models from learning in that setting must fail here, in CI, rather than in a user's first run.
//!
//! The reduced schedule: the real data, split as the demo splits it, the real `balanced`
//! settings and epoch cap, with a lower quality target ([`FLOOR`]) so a run that learns stops
//! after a few epochs. A run that does not learn goes on to the cap and fails.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use indicatif::ProgressBar;
use trident_data::split::{FileMode, SplitOptions, split_dataset};
use trident_data::synth::{SynthConfig, synthesize};
use trident_trainer::config::TrainingConfig;
use trident_trainer::report::read_metrics_csv;
use trident_trainer::train::{StopReason, TrainJob, train};

/// Validation mAP50 the reduced schedule must reach before the demo's epoch cap.
const FLOOR: f64 = 0.7;

fn hidden(_: u64, _: String) -> ProgressBar {
    ProgressBar::hidden()
}

#[test]
fn the_demo_schedule_learns_on_the_demo_data() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let synth = SynthConfig::load(&repo.join("configs/demo/synth.yaml")).unwrap();
    let pool = dir.path().join("pool");
    synthesize(&synth, &pool, false, &ProgressBar::hidden()).unwrap();
    // As the demo runs `trident data split --ratios 0.7,0.15,0.15 --seed 0`.
    split_dataset(
        &SplitOptions {
            images: pool.join("images"),
            labels: pool.join("labels"),
            out: dir.path().join("dataset"),
            ratios: [0.7, 0.15, 0.15],
            seed: 0,
            force: false,
            mode: FileMode::Link,
            names: None,
            group_by: None,
        },
        &ProgressBar::hidden(),
    )
    .unwrap();

    let config = TrainingConfig::load(&repo.join("configs/demo/training.yaml")).unwrap();
    let demo = config.variant("balanced").unwrap().clone();
    let target = demo
        .target_map50
        .expect("the demo's schedule ends at a quality target");
    assert!(
        target > FLOOR,
        "the demo's target {target} must sit above this test's floor {FLOOR}"
    );
    let mut s = demo.clone();
    s.target_map50 = Some(FLOOR);
    s.device = "cpu".into();
    let stop = AtomicBool::new(false);
    let out = dir.path().join("run");
    let outcome = train(&TrainJob {
        variant: "balanced".into(),
        settings: s,
        dataset: dir.path().join("dataset/dataset.yaml"),
        out_dir: out.clone(),
        resume: false,
        weights: None,
        exist_ok: false,
        strict: false,
        stop: &stop,
        progress: &hidden,
    })
    .unwrap();

    let history = read_metrics_csv(&out.join("metrics.csv")).unwrap();
    let curve: Vec<String> = history
        .iter()
        .map(|r| format!("{}: {:.3}", r.epoch, r.map50))
        .collect();
    assert_eq!(
        outcome.stop_reason,
        StopReason::TargetReached,
        "val mAP50 never reached {FLOOR} within the demo's cap of {} epochs: {curve:?}",
        demo.epochs
    );
    let (first, last) = (history.first().unwrap(), history.last().unwrap());
    assert!(
        last.map50 >= FLOOR && last.map50 > first.map50,
        "mAP50 must rise above {FLOOR}: {curve:?}"
    );
    // The demo's own target is then a few epochs away, well inside the cap.
    assert!(
        outcome.epochs + 3 <= demo.epochs,
        "{FLOOR} took {} of the demo's {} epochs: {curve:?}",
        outcome.epochs,
        demo.epochs
    );
}
