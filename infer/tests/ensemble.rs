//! The ensemble on frames: test-time views map boxes back to the frame, calibration tables
//! rescale, fuse and threshold exactly as they say, tables for other models are refused, and a
//! model that fails or panics is taken out while the others go on, and retried until it works.

use trident_core::calibration::{
    CalibrationTables, ConfType, FusionMethod, FusionTable, ModelCalibration, SCHEMA, TtaTransform,
    apply_temperature,
};
use trident_core::postprocess::{Detection, NmsOptions, nms};
use trident_infer::backend::{Backend, BackendKind};
use trident_infer::detector::View;
use trident_infer::ensemble::fusion::{Fusion, WbfOptions};
use trident_infer::ensemble::runner::{Ensemble, ModelSlot};
use trident_infer::{OnnxDetector, Result};

const NAMES: [&str; 3] = ["lionfish", "urchin", "abalone"];
const W: u32 = 160;
const H: u32 = 120;

/// A detector written out in Rust rather than trained: one 24-pixel box per 8×8 cell of its
/// 96×96 input, centred on the cell, scoring each class by the mean of one colour channel in
/// the cell. Its boxes follow the image content, so a view that maps boxes back wrongly shows.
struct BlobModel;

const SIDE: usize = 96;
const CELL: usize = 8;
const CELLS: usize = SIDE / CELL;

impl Backend for BlobModel {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }
    fn input_shape(&self) -> [usize; 4] {
        [1, 3, SIDE, SIDE]
    }
    fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>> {
        let n = CELLS * CELLS;
        out.clear();
        out.resize((4 + NAMES.len()) * n, 0.0);
        for cy in 0..CELLS {
            for cx in 0..CELLS {
                let a = cy * CELLS + cx;
                out[a] = ((cx * CELL) as f32) + CELL as f32 / 2.0;
                out[n + a] = ((cy * CELL) as f32) + CELL as f32 / 2.0;
                out[2 * n + a] = 24.0;
                out[3 * n + a] = 24.0;
                for c in 0..NAMES.len() {
                    let plane = &input[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
                    let mut sum = 0.0;
                    for y in cy * CELL..(cy + 1) * CELL {
                        sum += plane[y * SIDE + cx * CELL..y * SIDE + (cx + 1) * CELL]
                            .iter()
                            .sum::<f32>();
                    }
                    out[(4 + c) * n + a] = sum / (CELL * CELL) as f32;
                }
            }
        }
        Ok(vec![1, 4 + NAMES.len(), n])
    }
}

fn detector() -> OnnxDetector {
    OnnxDetector::new(Box::new(BlobModel), NAMES.len()).unwrap()
}

/// A frame with no left–right symmetry: a gradient, a bright block left of centre, stripes.
fn frame() -> Vec<u8> {
    let mut rgb = vec![0u8; (W * H * 3) as usize];
    for y in 0..H {
        for x in 0..W {
            let i = ((y * W + x) * 3) as usize;
            let block = (20..70).contains(&x) && (30..90).contains(&y);
            rgb[i] = if block { 250 } else { (x * 255 / W) as u8 };
            rgb[i + 1] = ((y * 7 + x * 3) % 256) as u8;
            rgb[i + 2] = if (x / 8) % 2 == 0 { 40 } else { 200 };
        }
    }
    rgb
}

fn mirrored(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact((W * 3) as usize)
        .flat_map(|row| row.chunks_exact(3).rev().flatten().copied())
        .collect()
}

const LOW: f32 = 0.001;

fn low_floor() -> NmsOptions {
    NmsOptions::inference(LOW)
}

fn sha(tag: u8) -> String {
    format!("{tag:02x}").repeat(32)
}

fn ensemble(names: &[&str]) -> Ensemble {
    let slots = names
        .iter()
        .enumerate()
        .map(|(i, n)| ModelSlot {
            name: n.to_string(),
            sha256: sha(i as u8 + 1),
            floor: LOW,
            detector: detector(),
        })
        .collect();
    Ensemble::from_detectors(
        NAMES.iter().map(|s| s.to_string()).collect(),
        slots,
        Fusion::Wbf(WbfOptions {
            clip_unit: false,
            ..WbfOptions::default()
        }),
    )
    .unwrap()
}

fn tables(variants: &[&str]) -> CalibrationTables {
    CalibrationTables {
        schema: SCHEMA.into(),
        names: NAMES.iter().map(|s| s.to_string()).collect(),
        models: variants
            .iter()
            .enumerate()
            .map(|(i, v)| ModelCalibration {
                variant: v.to_string(),
                sha256: sha(i as u8 + 1),
                temperature: 2.0,
                class_temperatures: None,
            })
            .collect(),
        fusion: FusionTable {
            method: FusionMethod::Nms,
            iou_thr: 0.5,
            skip_box_thr: 0.0,
            conf_type: ConfType::Avg,
            weights: Default::default(),
        },
        thresholds: Default::default(),
        tta: vec![],
        fitted_on: Default::default(),
    }
}

fn sorted(mut d: Vec<Detection>) -> Vec<Detection> {
    d.sort_by(|a, b| {
        (a.class, a.bbox.x1, a.bbox.y1, a.score)
            .partial_cmp(&(b.class, b.bbox.x1, b.bbox.y1, b.score))
            .unwrap()
    });
    d
}

#[test]
fn a_flipped_view_is_the_mirror_image_of_the_plain_view_of_the_mirrored_frame() {
    let rgb = frame();
    let mut det = detector();
    let flip = View {
        flip: true,
        scale: 1.0,
    };
    let flipped = det.detect_view(&rgb, W, H, &low_floor(), flip).unwrap();
    let mut expected = det.detect(&mirrored(&rgb), W, H, &low_floor()).unwrap();
    assert!(
        expected.len() > 20,
        "the model proposes boxes all over the frame"
    );
    for d in &mut expected {
        (d.bbox.x1, d.bbox.x2) = (f64::from(W) - d.bbox.x2, f64::from(W) - d.bbox.x1);
    }
    assert_eq!(flipped.len(), expected.len());
    for a in &flipped {
        let twin = expected.iter().find(|b| {
            b.class == a.class
                && (a.bbox.x1 - b.bbox.x1).abs() < 1e-6
                && (a.bbox.y1 - b.bbox.y1).abs() < 1e-6
                && (a.bbox.x2 - b.bbox.x2).abs() < 1e-6
                && (a.bbox.y2 - b.bbox.y2).abs() < 1e-6
        });
        let twin = twin.unwrap_or_else(|| panic!("{a:?} has no twin"));
        assert_eq!(a.score, twin.score, "{a:?} vs {twin:?}");
    }
    // The frame is not symmetric, so the flipped view really sees something else.
    let plain = det.detect(&rgb, W, H, &low_floor()).unwrap();
    assert_ne!(sorted(flipped), sorted(plain));
}

#[test]
fn a_scaled_view_keeps_boxes_inside_the_frame_and_sees_something_else() {
    let rgb = frame();
    let mut det = detector();
    let view = View {
        flip: false,
        scale: 0.67,
    };
    let scaled = det.detect_view(&rgb, W, H, &low_floor(), view).unwrap();
    assert!(!scaled.is_empty());
    for d in &scaled {
        assert!(d.bbox.x1 >= 0.0 && d.bbox.x2 <= f64::from(W) && d.bbox.y2 <= f64::from(H));
    }
    assert_ne!(
        sorted(scaled),
        sorted(det.detect(&rgb, W, H, &low_floor()).unwrap())
    );
}

#[test]
fn calibration_tables_scale_scores_fuse_threshold_and_add_tta_views() {
    let rgb = frame();
    let mut raw = ensemble(&["balanced"]);
    let before = raw.detect(&rgb, W, H, None, false).unwrap();
    let raw_scores = before.per_model[0].clone().unwrap();

    let mut t = tables(&["balanced"]);
    let mut calibrated = ensemble(&["balanced"]);
    calibrated.calibrate(&t, "calibration.yaml").unwrap();
    let after = calibrated.detect(&rgb, W, H, None, false).unwrap();
    let scaled = after.per_model[0].clone().unwrap();
    assert_eq!(scaled.len(), raw_scores.len());
    for (a, b) in scaled.iter().zip(&raw_scores) {
        assert_eq!(a.score, apply_temperature(b.score, 2.0));
        assert!(
            (a.score - 0.5).abs() < (b.score - 0.5).abs() || b.score == 0.5,
            "T = 2 pulls scores towards 0.5: {} → {}",
            b.score,
            a.score
        );
    }

    // A per-class threshold removes that class's fused detections below it, and only those.
    let top = scaled
        .iter()
        .filter(|d| d.class == 0)
        .map(|d| d.score)
        .fold(0.0f32, f32::max);
    t.thresholds.insert(NAMES[0].into(), top + 1e-4);
    let mut thresholded = ensemble(&["balanced"]);
    thresholded.calibrate(&t, "calibration.yaml").unwrap();
    assert_eq!(
        thresholded.tta_cost(),
        Some(1.0),
        "tables without views: TTA is free"
    );
    let out = thresholded.detect(&rgb, W, H, None, false).unwrap();
    assert!(out.fused.iter().all(|d| d.class != 0));
    assert_eq!(
        out.fused.len(),
        after.fused.iter().filter(|d| d.class != 0).count()
    );

    // TTA: the plain view and the flip, merged through the model's NMS, then calibrated.
    t.thresholds.clear();
    t.tta.push(TtaTransform {
        flip: true,
        scale: 1.0,
        gain: 0.01,
        cost: 2.0,
    });
    let mut tta = ensemble(&["balanced"]);
    assert_eq!(tta.tta_cost(), None, "no tables, no measured cost");
    tta.calibrate(&t, "calibration.yaml").unwrap();
    assert!(tta.has_tta());
    // What the governor budgets a TTA level at: the last kept view's cumulative cost.
    assert_eq!(tta.tta_cost(), Some(2.0));
    let with = tta.detect(&rgb, W, H, None, true).unwrap();
    let mut det = detector();
    let mut expected = det.detect(&rgb, W, H, &low_floor()).unwrap();
    let flip = View {
        flip: true,
        scale: 1.0,
    };
    expected.extend(det.detect_view(&rgb, W, H, &low_floor(), flip).unwrap());
    let mut expected = nms(expected, &low_floor());
    for d in &mut expected {
        d.score = apply_temperature(d.score, 2.0);
    }
    assert_eq!(with.per_model[0].clone().unwrap(), expected);
    // Without `tta` the same ensemble runs the plain view only.
    let without = tta.detect(&rgb, W, H, None, false).unwrap();
    assert_eq!(without.per_model[0].clone().unwrap(), scaled);
}

#[test]
fn tables_for_other_models_or_weights_by_variant_are_honoured() {
    let mut e = ensemble(&["high_recall", "balanced"]);
    let mut t = tables(&["high_recall", "balanced"]);
    t.models[1].sha256 = sha(9);
    let err = e.calibrate(&t, "c.yaml").unwrap_err().to_string();
    assert!(err.contains("another `balanced` model"), "{err}");
    let t = tables(&["high_recall"]);
    let err = e.calibrate(&t, "c.yaml").unwrap_err().to_string();
    assert!(err.contains("no entry for model `balanced`"), "{err}");

    let mut t = tables(&["high_recall", "balanced"]);
    t.fusion.method = FusionMethod::Wbf;
    t.fusion.weights.insert("balanced".into(), 3.0);
    e.calibrate(&t, "c.yaml").unwrap();
    match &e.fusion {
        Fusion::Wbf(o) => {
            assert_eq!(o.weights.as_deref(), Some(&[1.0, 3.0][..]));
            assert!(!o.clip_unit, "the device fuses pixel boxes");
        }
        other => panic!("{other:?}"),
    }
}

/// Fails on its third frame, or panics there.
struct Breaks {
    inner: Box<dyn Backend>,
    calls: usize,
    panic: bool,
}

impl Backend for Breaks {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
    fn input_shape(&self) -> [usize; 4] {
        self.inner.input_shape()
    }
    fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>> {
        self.calls += 1;
        if self.calls == 3 {
            if self.panic {
                panic!("simulated crash in a backend");
            }
            return Err(trident_infer::Error::backend(
                "tract",
                "simulated CUDA error",
            ));
        }
        self.inner.run(input, out)
    }
}

#[test]
fn a_model_that_fails_or_panics_is_dropped_and_the_rest_go_on() {
    let slot = |name: &str, breaks: Option<bool>| {
        let mut b: Box<dyn Backend> = Box::new(BlobModel);
        if let Some(panic) = breaks {
            b = Box::new(Breaks {
                inner: b,
                calls: 0,
                panic,
            });
        }
        ModelSlot {
            name: name.into(),
            sha256: String::new(),
            floor: LOW,
            detector: OnnxDetector::new(b, NAMES.len()).unwrap(),
        }
    };
    let mut e = Ensemble::from_detectors(
        NAMES.iter().map(|s| s.to_string()).collect(),
        vec![
            slot("errs", Some(false)),
            slot("steady", None),
            slot("panics", Some(true)),
        ],
        Fusion::Wbf(WbfOptions {
            clip_unit: false,
            ..WbfOptions::default()
        }),
    )
    .unwrap();
    let rgb = frame();
    for _ in 0..2 {
        let out = e.detect(&rgb, W, H, None, false).unwrap();
        assert!(out.per_model.iter().all(Option::is_some));
    }
    for frame_no in 3..6 {
        let out = e.detect(&rgb, W, H, None, false).unwrap();
        assert!(out.per_model[0].is_none() && out.per_model[2].is_none());
        assert!(out.per_model[1].is_some(), "frame {frame_no}");
        assert!(!out.fused.is_empty());
    }
    assert_eq!(e.healthy(), 1);
    assert!(
        e.members[0]
            .failed
            .as_deref()
            .unwrap()
            .contains("simulated CUDA error")
    );
    assert!(e.members[2].failed.as_deref().unwrap().contains("panicked"));
    assert_eq!(e.members[1].frames, 5);
}

#[test]
fn a_failed_model_is_retried_after_its_backoff_and_readmitted_when_it_works() {
    let slot = |name: &str, panic: bool| ModelSlot {
        name: name.into(),
        sha256: String::new(),
        floor: LOW,
        detector: OnnxDetector::new(
            Box::new(Breaks {
                inner: Box::new(BlobModel),
                calls: 0,
                panic,
            }),
            NAMES.len(),
        )
        .unwrap(),
    };
    let mut e = Ensemble::from_detectors(
        NAMES.iter().map(|s| s.to_string()).collect(),
        vec![slot("errs", false), slot("panics", true)],
        Fusion::Wbf(WbfOptions {
            clip_unit: false,
            ..WbfOptions::default()
        }),
    )
    .unwrap();
    e.set_model_retry(trident_infer::Backoff::new(0.2, 0.4));
    let rgb = frame();
    for _ in 0..2 {
        e.detect(&rgb, W, H, None, false).unwrap();
    }
    // The third pass of each fails: both out, the frame has no model, and it is an error.
    assert!(e.detect(&rgb, W, H, None, false).is_err());
    assert_eq!(e.healthy(), 0);
    assert!(
        e.detect(&rgb, W, H, None, false).is_err(),
        "not retried yet"
    );
    std::thread::sleep(std::time::Duration::from_millis(250));
    // Retried, working again (the panicking one's thread survived its panic): both back.
    let out = e.detect(&rgb, W, H, None, false).unwrap();
    assert!(out.per_model.iter().all(Option::is_some));
    assert_eq!(e.healthy(), 2);
    for m in &e.members {
        assert_eq!(
            (m.faults, m.readmissions, m.frames),
            (1, 1, 3),
            "{}",
            m.name
        );
    }

    // A retry outside the active level: the model comes back, its detections stay out.
    let mut e = Ensemble::from_detectors(
        NAMES.iter().map(|s| s.to_string()).collect(),
        vec![slot("errs", false), slot("steady", false)],
        Fusion::Wbf(WbfOptions::default()),
    )
    .unwrap();
    e.set_model_retry(trident_infer::Backoff::new(0.2, 0.4));
    let only_first = ["errs".to_string()];
    for _ in 0..3 {
        let _ = e.detect(&rgb, W, H, Some(&only_first), false);
    }
    assert!(e.members[0].failed.is_some());
    std::thread::sleep(std::time::Duration::from_millis(250));
    let out = e
        .detect(&rgb, W, H, Some(&["steady".to_string()]), false)
        .unwrap();
    assert!(e.members[0].failed.is_none(), "re-admitted by the probe");
    assert!(out.per_model[0].is_none() && out.per_model[1].is_some());
}
