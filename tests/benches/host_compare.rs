//! Host comparison harness (printed benchmark, not a timed test): the same three models on the
//! same frames through
//!
//! 1. trident-edge's ensemble on tract,
//! 2. trident-edge's ensemble on ONNX Runtime,
//! 3. a Python reference pipeline (`tests/python/host_reference.py`: ONNX Runtime, OpenCV
//!    letterbox, numpy decoding and NMS, `ensemble-boxes` WBF — what a Python user would write;
//!    it lives in the test venv, not in the product),
//!
//! from RGB frames in memory to fused detections (letterbox → three forward passes → decode →
//! NMS → weighted boxes fusion). It prints frames per second for each and the ratios, and checks
//! that trident-edge on ONNX Runtime gives the same fused detections as the reference.
//! Target: trident-edge with ONNX Runtime ≥ 1.5× the reference's frames per second.
//!
//! `cargo bench -p trident-e2e --bench host_compare` (part of `cargo xtask bench`).
//! `TRIDENT_COMPARE_FRAMES` sets the number of timed frames (default 60),
//! `TRIDENT_COMPARE_THREADS` the intra-op threads per model (default: the backend's choice),
//! `TRIDENT_COMPARE_SHOW=1` lists fused boxes without a partner in the reference. The models are the
//! `tiny` preset at 320 px with random weights; each model's confidence floor is set so that it
//! keeps about ten boxes per frame (a realistic load for NMS and fusion), the same in both.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use indicatif::ProgressBar;
use trident_core::postprocess::Detection;
use trident_data::synth::{Layout, SynthConfig, synthesize};
use trident_infer::ensemble::fusion::{ConfType, Fusion, WbfOptions};
use trident_infer::ensemble::runner::Ensemble;
use trident_infer::models::ModelSet;
use trident_infer::{BackendKind, BackendOptions};

const SIDE: u32 = 320;
const FRAME_W: u32 = 640;
const FRAME_H: u32 = 480;
const WARMUP: usize = 5;
/// Boxes each model keeps per frame at its floor (median over the frames).
const BOXES_PER_MODEL: usize = 10;
const TARGET_RATIO: f64 = 1.5;

/// The fusion `trident-edge run` uses (calibration tables absent).
fn fusion() -> Fusion {
    Fusion::Wbf(WbfOptions {
        conf_type: ConfType::Avg,
        clip_unit: false,
        ..WbfOptions::default()
    })
}

/// Synthetic survey frames (the demo's scene generator), decoded to RGB.
fn frames(dir: &Path, count: usize) -> Vec<Vec<u8>> {
    let cfg = SynthConfig {
        images: count,
        seed: 9,
        width: FRAME_W,
        height: FRAME_H,
        layout: Layout::Flat,
        ..SynthConfig::default()
    };
    let out = dir.join("frames");
    synthesize(&cfg, &out, false, &ProgressBar::hidden()).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(out.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8().into_raw())
        .collect()
}

/// Per model, the score of its `BOXES_PER_MODEL`-th box per frame (median over the frames).
fn floors(set: &ModelSet, frames: &[Vec<u8>]) -> Vec<f32> {
    let mut ensemble =
        Ensemble::load(set, &[BackendKind::Tract], &Default::default(), fusion()).unwrap();
    for m in &mut ensemble.members {
        m.floor = 1e-4;
    }
    let mut kth: Vec<Vec<f32>> = vec![Vec::new(); ensemble.members.len()];
    for rgb in frames.iter().take(12) {
        let out = ensemble.detect(rgb, FRAME_W, FRAME_H, None, false).unwrap();
        for (k, d) in out.per_model.iter().enumerate() {
            let mut s: Vec<f32> = d.as_ref().unwrap().iter().map(|d| d.score).collect();
            s.sort_by(|a, b| b.total_cmp(a));
            kth[k].push(s.get(BOXES_PER_MODEL - 1).copied().unwrap_or(1e-4));
        }
    }
    kth.into_iter()
        .map(|v| {
            let v: Vec<f64> = v.into_iter().map(f64::from).collect();
            trident_e2e::stats::median(&v) as f32
        })
        .collect()
}

struct Timed {
    fps: f64,
    detections: Vec<Vec<Detection>>,
}

fn trident(
    set: &ModelSet,
    kind: BackendKind,
    floors: &[f32],
    frames: &[Vec<u8>],
    threads: Option<usize>,
) -> Timed {
    let mut ensemble = Ensemble::load(
        set,
        &[kind],
        &BackendOptions {
            threads,
            ..Default::default()
        },
        fusion(),
    )
    .unwrap();
    for (m, &f) in ensemble.members.iter_mut().zip(floors) {
        m.floor = f;
    }
    for rgb in frames.iter().cycle().take(WARMUP) {
        ensemble.detect(rgb, FRAME_W, FRAME_H, None, false).unwrap();
    }
    let t = Instant::now();
    let detections: Vec<Vec<Detection>> = frames
        .iter()
        .map(|rgb| {
            ensemble
                .detect(rgb, FRAME_W, FRAME_H, None, false)
                .unwrap()
                .fused
        })
        .collect();
    Timed {
        fps: frames.len() as f64 / t.elapsed().as_secs_f64(),
        detections,
    }
}

struct Reference {
    fps: f64,
    detections: Vec<Vec<Detection>>,
    stages: serde_json::Value,
    versions: String,
}

fn python_reference(dir: &Path, set: &ModelSet, floors: &[f32], frames: &[Vec<u8>]) -> Reference {
    let raw = dir.join("frames.rgb");
    std::fs::write(&raw, frames.concat()).unwrap();
    let out = dir.join("reference.json");
    let script = trident_e2e::workspace_root().join("tests/python/host_reference.py");
    let mut c = Command::new(trident_e2e::python());
    c.arg(&script)
        .arg("--frames")
        .arg(&raw)
        .args(["--width", &FRAME_W.to_string()])
        .args(["--height", &FRAME_H.to_string()])
        .args(["--count", &frames.len().to_string()])
        .args(["--warmup", &WARMUP.to_string()])
        .arg("--detections")
        .arg(&out);
    for (m, f) in set.models.iter().zip(floors) {
        c.arg("--model")
            .arg(format!("{}:{f}", m.onnx_path.display()));
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let per_frame: Vec<Vec<[f64; 6]>> =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let detections = per_frame
        .into_iter()
        .map(|f| {
            f.into_iter()
                .map(|[x1, y1, x2, y2, score, class]| Detection {
                    bbox: trident_core::BoxXyxy { x1, y1, x2, y2 },
                    score: score as f32,
                    class: class as usize,
                })
                .collect()
        })
        .collect();
    Reference {
        fps: summary["fps"].as_f64().unwrap(),
        stages: summary["stages_ms"].clone(),
        versions: format!(
            "onnxruntime {}, opencv {}, numpy {}",
            summary["onnxruntime"].as_str().unwrap_or("?"),
            summary["opencv"].as_str().unwrap_or("?"),
            summary["numpy"].as_str().unwrap_or("?")
        ),
        detections,
    }
}

fn iou(a: &Detection, b: &Detection) -> f64 {
    a.bbox.iou(&b.bbox)
}

/// Fused boxes of `ours` with a partner in `reference` (same class, IoU ≥ 0.99, |Δscore| ≤
/// 2e-3), and the total of both sides.
fn agreement(ours: &[Vec<Detection>], reference: &[Vec<Detection>]) -> (usize, usize, usize) {
    let (mut matched, mut n_ours, mut n_ref) = (0, 0, 0);
    for (a, b) in ours.iter().zip(reference) {
        n_ours += a.len();
        n_ref += b.len();
        let mut used = vec![false; b.len()];
        for d in a {
            let partner = b.iter().enumerate().position(|(j, r)| {
                !used[j]
                    && r.class == d.class
                    && (r.score - d.score).abs() <= 2e-3
                    && iou(d, r) >= 0.99
            });
            if let Some(j) = partner {
                used[j] = true;
                matched += 1;
            } else if std::env::var_os("TRIDENT_COMPARE_SHOW").is_some() {
                let near: Vec<String> = b
                    .iter()
                    .filter(|r| iou(d, r) > 0.5)
                    .map(|r| format!("{:?} class {} score {:.5}", r.bbox, r.class, r.score))
                    .collect();
                eprintln!(
                    "  unmatched {:?} class {} score {:.5}; the reference has nearby: {near:?}",
                    d.bbox, d.class, d.score
                );
            }
        }
    }
    (matched, n_ours, n_ref)
}

fn main() {
    let count: usize = std::env::var("TRIDENT_COMPARE_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let threads: Option<usize> = std::env::var("TRIDENT_COMPARE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let dir = tempfile::tempdir().unwrap();
    let set = ModelSet::load_dir(&common::random_models(dir.path(), "tiny", SIDE, true)).unwrap();
    let frames = frames(dir.path(), count);
    let floors = floors(&set, &frames);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "host comparison: {count} frames {FRAME_W}×{FRAME_H}, three `tiny` models at {SIDE} px, \
         {cores} cores; floors {floors:.4?} (≈{BOXES_PER_MODEL} boxes per model per frame)"
    );
    let tract = trident(&set, BackendKind::Tract, &floors, &frames, threads);
    let ort = trident(&set, BackendKind::OnnxRuntime, &floors, &frames, threads);
    let py = python_reference(dir.path(), &set, &floors, &frames);
    println!(
        "  {:<44} {:>7} {:>10} {:>10}",
        "pipeline", "fps", "ms/frame", "vs Python"
    );
    for (name, fps) in [
        ("trident-edge, tract", tract.fps),
        ("trident-edge, ONNX Runtime", ort.fps),
        ("Python: ONNX Runtime + numpy + ensemble-boxes", py.fps),
    ] {
        println!(
            "  {name:<44} {fps:>7.2} {:>10.1} {:>9.2}×",
            1e3 / fps,
            fps / py.fps
        );
    }
    println!(
        "  Python stages (ms per frame): {} ({})",
        py.stages, py.versions
    );
    for (name, ours) in [("ONNX Runtime", &ort), ("tract", &tract)] {
        let (matched, n_ours, n_ref) = agreement(&ours.detections, &py.detections);
        println!(
            "  detections, trident-edge on {name} vs Python: {matched} of {n_ours} fused boxes \
             matched ({n_ref} in the reference; same class, IoU ≥ 0.99, |Δscore| ≤ 0.002)"
        );
    }
    let (matched, n_ours, n_ref) = agreement(&ort.detections, &py.detections);
    let same = matched == n_ours && n_ours == n_ref && n_ref > 0;
    let ratio = ort.fps / py.fps;
    println!(
        "  target: trident-edge with ONNX Runtime ≥ {TARGET_RATIO}× the Python reference with \
         the same detections: {} ({ratio:.2}×, detections {})",
        if ratio >= TARGET_RATIO && same {
            "MET"
        } else {
            "NOT MET"
        },
        if same { "identical" } else { "DIFFER" }
    );
}
