//! Evaluation speed: trident vs pycocotools on 5,000 images × 20 predictions.
//!
//! `cargo bench -p trident-e2e --bench eval_vs_pycocotools` (or `cargo xtask bench`). Both sides
//! are timed on the metric computation alone (pycocotools: evaluate + accumulate + summarize;
//! trident: validation, indexing and evaluation), after loading. Prints both times and the ratio;
//! the target is a ratio of at least 10.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trident_core::BoxXywh;
use trident_core::dataset::ImageTruth;
use trident_core::prediction::Prediction;
use trident_eval::synthetic::{NoiseModel, noisy_predictions};
use trident_eval::{coco_json, evaluate, match_predictions};

const IMAGES: usize = 5000;
const PER_IMAGE: usize = 20;
const CLASSES: usize = 5;

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let truths: Vec<ImageTruth> = (0..IMAGES)
        .map(|i| {
            let boxes = (0..rng.random_range(2..9))
                .map(|_| {
                    let (w, h) = (rng.random_range(20.0..200.0), rng.random_range(20.0..200.0));
                    (
                        rng.random_range(0..CLASSES),
                        BoxXywh::new(
                            rng.random_range(0.0..640.0 - w),
                            rng.random_range(0.0..480.0 - h),
                            w,
                            h,
                        ),
                    )
                })
                .collect();
            ImageTruth {
                stem: format!("img{i:05}"),
                width: 640,
                height: 480,
                boxes,
            }
        })
        .collect();
    let noise = NoiseModel {
        duplicate_rate: 0.5,
        false_positives_per_image: 15.0,
        ..Default::default()
    };
    let mut by_image: Vec<Vec<Prediction>> = vec![Vec::new(); IMAGES];
    for p in noisy_predictions(&truths, CLASSES, &noise, 7) {
        let i: usize = p.image[3..].parse().unwrap();
        by_image[i].push(p);
    }
    let preds: Vec<Prediction> = by_image
        .into_iter()
        .enumerate()
        .flat_map(|(i, mut v)| {
            while v.len() < PER_IMAGE {
                v.push(Prediction {
                    image: format!("img{i:05}"),
                    class: rng.random_range(0..CLASSES),
                    score: rng.random_range(0.01..0.5),
                    bbox: [10.0, 10.0, 50.0, 50.0],
                });
            }
            v.truncate(PER_IMAGE);
            v
        })
        .collect();
    let names: Vec<String> = (0..CLASSES).map(|c| format!("class{c}")).collect();
    println!(
        "eval benchmark: {IMAGES} images × {PER_IMAGE} predictions = {} predictions, {} ground-truth boxes",
        preds.len(),
        truths.iter().map(|t| t.boxes.len()).sum::<usize>()
    );

    let mut times = Vec::new();
    let mut ours = None;
    for _ in 0..5 {
        let start = Instant::now();
        let index = match_predictions("bench", &truths, &preds, CLASSES).unwrap();
        ours = Some(evaluate(&truths, &preds, &index, &names).unwrap());
        times.push(start.elapsed().as_secs_f64());
    }
    let t_ours = trident_e2e::stats::median(&times);
    let ours = ours.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (gt, dt) = (dir.path().join("gt.json"), dir.path().join("dt.json"));
    std::fs::write(&gt, coco_json::ground_truth(&truths, &names).to_string()).unwrap();
    std::fs::write(&dt, coco_json::results(&truths, &preds).to_string()).unwrap();
    let wall = Instant::now();
    let reference =
        trident_e2e::run_reference("coco_reference.py", &[gt.as_os_str(), dt.as_os_str()]);
    let t_wall = wall.elapsed().as_secs_f64();
    let t_ref = reference["seconds"].as_f64().unwrap();

    println!(
        "trident     : {:>8.3} s  (median of 5; mAP50 {:.4}, mAP50-95 {:.4})",
        t_ours, ours.map50, ours.map50_95
    );
    println!(
        "pycocotools : {:>8.3} s  (evaluate+accumulate+summarize; {:.1} s with start-up and JSON loading; mAP50 {:.4}, mAP50-95 {:.4})",
        t_ref,
        t_wall,
        reference["map50"].as_f64().unwrap(),
        reference["map50_95"].as_f64().unwrap()
    );
    println!("speed-up    : {:>8.1}× (target ≥ 10×)", t_ref / t_ours);
    assert!(
        (ours.map50_95 - reference["map50_95"].as_f64().unwrap()).abs() < 1e-4,
        "the two evaluators disagree"
    );
}
