//! The edge runtime on a video: synthetic scenes with known boxes are muxed into a clip through
//! a real GStreamer pipeline, the runtime's run loop (GStreamer source → governor → ensemble →
//! JSON Lines) processes it, and the mAP50 of its detections matches `trident eval` of the same
//! models on the same frames as still images (`trident predict --models`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gstreamer as gst;
use gstreamer::prelude::*;
use trident_core::prediction::{Prediction, save_predictions};
use trident_edge::governor::{Governor, Profile};
use trident_edge::output::jsonl::read;
use trident_edge::output::log::LogOptions;
use trident_edge::run::{RunOptions, run};
use trident_edge::source::{Source, SourceOptions};
use trident_infer::ensemble::fusion::{Fusion, WbfOptions};
use trident_infer::ensemble::runner::Ensemble;
use trident_infer::models::ModelSet;

use crate::common;
use common::{s, stderr, synth, trident};

/// The JPEG stills (200 × 120, as `synth` makes them), in order, muxed into an MJPEG AVI
/// without re-encoding (plugins from -base and -good only).
fn make_clip(stills: &[std::path::PathBuf], dir: &Path) -> std::path::PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for (i, p) in stills.iter().enumerate() {
        std::fs::copy(p, frames.join(format!("{i:05}.jpg"))).unwrap();
    }
    let clip = dir.join("clip.avi");
    gst::init().unwrap();
    let line = format!(
        "multifilesrc location=\"{}/%05d.jpg\" index=0 stop-index={} \
         caps=\"image/jpeg,framerate=10/1,width=200,height=120\" ! avimux ! filesink location=\"{}\"",
        frames.display(),
        stills.len() - 1,
        clip.display()
    );
    let pipeline = gst::parse::launch(&line).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
    clip
}

fn map50(yaml: &Path, preds: &Path) -> f64 {
    let o = trident(&[
        "eval",
        "--data",
        s(yaml),
        "--predictions",
        s(preds),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["map50"].as_f64().unwrap()
}

#[test]
fn the_runtime_on_a_clip_scores_what_eval_scores_on_the_stills() {
    let dir = tempfile::tempdir().unwrap();
    // Validation on the training images: the model overfits them within seconds, so its mAP is
    // far from zero and a difference between the two paths would show.
    let data = synth(dir.path(), "ds", 16, 11);
    let yaml = data.join("dataset.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(&yaml, text.replace("images/val", "images/train")).unwrap();
    let config = dir.path().join("overfit.yaml");
    std::fs::write(
        &config,
        r"name: overfit
defaults: { model: tiny, imgsz: 96, epochs: 150, batch: 4, lr0: 0.004, warmup_epochs: 1.0, close_mosaic: 0, patience: 0, device: cpu }
variants:
  high_precision:
    augment: { hsv_h: 0.0, hsv_s: 0.0, hsv_v: 0.0, translate: 0.0, scale: 0.0, fliplr: 0.0, mosaic: 0.0 }
    conf_floor: 0.4
    seed: 5
",
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let o = trident(&[
        "train",
        "--config",
        s(&config),
        "--data",
        s(&yaml),
        "--out",
        s(&runs),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let best = runs.join("high_precision/best.safetensors");
    let models = dir.path().join("models");
    let o = trident(&[
        "export",
        "--checkpoint",
        s(&best),
        "--out",
        s(&models),
        "--no-validate",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Stills: the host's ensemble path over the val images.
    let stills_preds = dir.path().join("stills.json");
    let o = trident(&[
        "predict",
        "--models",
        s(&models),
        "--source",
        s(&data.join("images/train")),
        "--out",
        s(&stills_preds),
        "--conf",
        "0.001",
        "--backend",
        "tract",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stills_map = map50(&yaml, &stills_preds);
    assert!(
        stills_map > 0.05,
        "the model must detect something: mAP50 {stills_map}"
    );

    // The clip: the same frames through GStreamer and the run loop.
    let mut stills: Vec<_> = std::fs::read_dir(data.join("images/train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    stills.sort();
    let clip = make_clip(&stills, dir.path());
    let profile_path = dir.path().join("profile.yaml");
    std::fs::write(
        &profile_path,
        "name: test\ntarget_fps: 1000\npower: { cap_w: 100.0, source: estimate }\n\
         estimates: { idle_w: 1.0, tta_factor: 2.0, models: { high_precision: { latency_ms: 1.0, active_w: 1.0 } } }\n\
         ladder:\n  - { name: single, models: [high_precision], fps: 1000 }\n",
    )
    .unwrap();
    let profile = Profile::load(&profile_path).unwrap();
    let set = ModelSet::load_dir(&models).unwrap();
    let fusion = Fusion::Wbf(WbfOptions {
        clip_unit: false,
        ..WbfOptions::default()
    });
    let mut ensemble = Ensemble::load(
        &set,
        &[trident_infer::BackendKind::Tract],
        &Default::default(),
        fusion,
    )
    .unwrap();
    for m in &mut ensemble.members {
        m.floor = 0.001;
    }
    let uri = format!("file://{}", clip.display()).parse().unwrap();
    let mut sources = vec![Source::open(uri, SourceOptions::default()).unwrap()];
    let mut governor = Governor::new(profile, None, 0.0).unwrap();
    let mut opts = RunOptions {
        duration: None,
        detections: dir.path().join("out/detections.jsonl"),
        log: LogOptions::default(),
        notifier: None,
        snapshots: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let summary = run(&mut sources, &mut ensemble, &mut governor, &mut opts, &stop).unwrap();
    assert_eq!(
        summary.frames as usize,
        stills.len(),
        "every frame of the file is processed"
    );

    let (records, torn) = read(&opts.detections).unwrap();
    assert!(!torn);
    let preds: Vec<Prediction> = records
        .iter()
        .flat_map(|r| {
            let stem = stills[r.frame as usize - 1]
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            r.detections.iter().map(move |d| Prediction {
                image: stem.clone(),
                class: d.class,
                score: f64::from(d.score),
                bbox: [
                    f64::from(d.bbox[0]),
                    f64::from(d.bbox[1]),
                    f64::from(d.bbox[2] - d.bbox[0]),
                    f64::from(d.bbox[3] - d.bbox[1]),
                ],
            })
        })
        .collect();
    let clip_preds = dir.path().join("clip.json");
    save_predictions(&clip_preds, &preds).unwrap();
    let clip_map = map50(&yaml, &clip_preds);
    eprintln!("mAP50: stills {stills_map:.4}, clip through GStreamer {clip_map:.4}");
    assert!(
        (clip_map - stills_map).abs() <= 0.02,
        "{clip_map} vs {stills_map}"
    );
}
