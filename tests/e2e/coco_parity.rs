//! `trident eval` must agree with pycocotools' COCOeval to 1e-4 on mAP50 and mAP50-95, overall
//! and per class, on realistic noisy predictions and on the edge cases that trip evaluators.

use std::path::Path;

use indicatif::ProgressBar;
use trident_core::BoxXywh;
use trident_core::dataset::{DatasetConfig, ImageTruth, Split};
use trident_core::prediction::Prediction;
use trident_data::synth::{SynthConfig, synthesize};
use trident_data::truth::load_ground_truth;
use trident_e2e::run_reference;
use trident_eval::synthetic::{NoiseModel, noisy_predictions};
use trident_eval::{coco_json, evaluate, match_predictions};

const TOLERANCE: f64 = 1e-4;

fn assert_parity(case: &str, truths: &[ImageTruth], preds: &[Prediction], names: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    let dt = dir.path().join("dt.json");
    std::fs::write(&gt, coco_json::ground_truth(truths, names).to_string()).unwrap();
    std::fs::write(&dt, coco_json::results(truths, preds).to_string()).unwrap();
    let reference = run_reference("coco_reference.py", &[gt.as_os_str(), dt.as_os_str()]);

    let index = match_predictions("preds", truths, preds, names.len()).unwrap();
    let ours = evaluate(truths, preds, &index, names).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= TOLERANCE;
    let r = |k: &str| reference[k].as_f64().unwrap();
    assert!(
        close(ours.map50, r("map50")),
        "{case}: mAP50 {} vs pycocotools {}",
        ours.map50,
        r("map50")
    );
    assert!(
        close(ours.map50_95, r("map50_95")),
        "{case}: mAP50-95 {} vs pycocotools {}",
        ours.map50_95,
        r("map50_95")
    );
    let per_class = reference["per_class"].as_object().unwrap();
    for m in &ours.per_class {
        match per_class.get(&m.class.to_string()) {
            Some(rc) => {
                let (ap50, ap) = (
                    rc["ap50"].as_f64().unwrap(),
                    rc["ap50_95"].as_f64().unwrap(),
                );
                assert!(
                    close(m.ap50.unwrap(), ap50),
                    "{case}: class {} AP50 {:?} vs {ap50}",
                    m.name,
                    m.ap50
                );
                assert!(
                    close(m.ap50_95.unwrap(), ap),
                    "{case}: class {} AP50-95 {:?} vs {ap}",
                    m.name,
                    m.ap50_95
                );
            }
            None => assert_eq!(
                m.ap50, None,
                "{case}: class {} has no ground truth, pycocotools skips it",
                m.name
            ),
        }
    }
    // A sanity floor: the cases must exercise non-trivial precision curves.
    assert!(
        ours.map50_95 > 0.05 && ours.map50_95 < 0.999,
        "{case}: degenerate mAP {}",
        ours.map50_95
    );
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class{i}")).collect()
}

#[test]
fn realistic_noisy_predictions_on_a_synthetic_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let cfg = SynthConfig {
        images: 120,
        seed: 11,
        classes: vec![
            "lionfish".into(),
            "urchin".into(),
            "abalone".into(),
            "starfish".into(),
        ],
        ..Default::default()
    };
    synthesize(&cfg, &out, false, &ProgressBar::hidden()).unwrap();
    let ds = DatasetConfig::load(&out.join("dataset.yaml")).unwrap();
    let truths = load_ground_truth(&ds, Split::Train, &ProgressBar::hidden()).unwrap();
    assert!(
        truths.iter().any(|t| t.boxes.is_empty()),
        "the synthetic split should contain background images"
    );
    for (seed, noise) in [
        (1, NoiseModel::default()),
        (
            2,
            NoiseModel {
                jitter: 0.2,
                miss_rate: 0.3,
                confusion_rate: 0.15,
                duplicate_rate: 0.4,
                false_positives_per_image: 3.0,
            },
        ),
        (
            3,
            NoiseModel {
                jitter: 0.03,
                miss_rate: 0.02,
                confusion_rate: 0.0,
                duplicate_rate: 0.05,
                false_positives_per_image: 0.3,
            },
        ),
    ] {
        let preds = noisy_predictions(&truths, ds.num_classes(), &noise, seed);
        assert_parity(
            &format!("synthetic dataset, noise {seed}"),
            &truths,
            &preds,
            &ds.names,
        );
    }
}

fn img(stem: &str, boxes: &[(usize, [f64; 4])]) -> ImageTruth {
    ImageTruth {
        stem: stem.into(),
        width: 640,
        height: 480,
        boxes: boxes
            .iter()
            .map(|(c, b)| (*c, BoxXywh::new(b[0], b[1], b[2], b[3])))
            .collect(),
    }
}

fn p(image: &str, class: usize, score: f64, bbox: [f64; 4]) -> Prediction {
    Prediction {
        image: image.into(),
        class,
        score,
        bbox,
    }
}

#[test]
fn edge_cases_empty_images_missing_classes_crowds_ties_and_the_detection_cap() {
    // Class 0: normal; class 1: ground truth but no predictions; class 2: predictions but no
    // ground truth; class 3: a crowd of overlapping objects; class 4: 150 detections in one image.
    let mut truths = vec![
        img(
            "a",
            &[
                (0, [10.0, 10.0, 50.0, 40.0]),
                (1, [100.0, 100.0, 30.0, 30.0]),
            ],
        ),
        img("empty", &[]),
        img(
            "b",
            &[
                (0, [200.0, 50.0, 60.0, 60.0]),
                (0, [205.0, 55.0, 60.0, 60.0]),
            ],
        ),
    ];
    let crowd: Vec<(usize, [f64; 4])> = (0..8)
        .map(|i| (3, [50.0 + 12.0 * f64::from(i), 200.0, 40.0, 40.0]))
        .collect();
    truths.push(img("crowd", &crowd));
    let many: Vec<(usize, [f64; 4])> = (0..30)
        .map(|i| {
            (
                4,
                [
                    f64::from(i % 10) * 60.0,
                    f64::from(i / 10) * 100.0,
                    50.0,
                    80.0,
                ],
            )
        })
        .collect();
    truths.push(img("many", &many));

    let mut preds = vec![
        p("a", 0, 0.9, [12.0, 11.0, 48.0, 40.0]),
        p("a", 0, 0.9, [10.0, 10.0, 50.0, 40.0]), // tied score, duplicate
        p("a", 2, 0.8, [300.0, 300.0, 20.0, 20.0]),
        p("empty", 0, 0.7, [5.0, 5.0, 30.0, 30.0]),
        p("empty", 2, 0.95, [50.0, 50.0, 30.0, 30.0]),
        p("b", 0, 0.6, [203.0, 53.0, 60.0, 60.0]), // overlaps both ground-truth boxes
        p("b", 0, 0.6, [199.0, 50.0, 61.0, 60.0]),
        p("b", 0, 0.3, [206.0, 56.0, 58.0, 58.0]),
    ];
    for (i, (_, b)) in crowd.iter().enumerate() {
        let s = 0.5 + 0.05 * (i % 3) as f64; // ties across the crowd
        preds.push(p("crowd", 3, s, [b[0] + 6.0, b[1] + 2.0, b[2], b[3]]));
        preds.push(p("crowd", 3, s - 0.1, [b[0] - 4.0, b[1], b[2] + 4.0, b[3]]));
    }
    for k in 0..150 {
        // Only the best-scored 100 count. They are poor boxes; the 50 below them would match
        // and raise recall, so an evaluator without the cap disagrees.
        let (_, b) = many[k % many.len()];
        let score = if k < 100 {
            0.6 + 0.003 * (k % 50) as f64
        } else {
            0.3 - 0.001 * k as f64
        };
        let shift = if k < 100 { 25.0 } else { 1.0 };
        preds.push(p("many", 4, score, [b[0] + shift, b[1], b[2], b[3]]));
    }
    assert_parity("edge cases", &truths, &preds, &names(5));
}

#[test]
fn predictions_for_unknown_images_are_rejected_by_name() {
    let truths = vec![img("a", &[(0, [10.0, 10.0, 50.0, 40.0])])];
    let preds = vec![
        p("a", 0, 0.9, [10.0, 10.0, 50.0, 40.0]),
        p("nope", 0, 0.5, [0.0, 0.0, 5.0, 5.0]),
    ];
    let err = match_predictions(
        &Path::new("preds.json").display().to_string(),
        &truths,
        &preds,
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("item 1 (image \"nope\"): unknown image"),
        "{err}"
    );
}
