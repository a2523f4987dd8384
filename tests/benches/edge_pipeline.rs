//! Printed benchmark (not a timed test) of the edge runtime on this machine:
//!
//! 1. **Overhead**: the run loop (GStreamer file source → governor → three-model ensemble →
//!    fusion → JSON Lines) against the same three models on the same frames with nothing else
//!    around them (frames decoded and letterboxed beforehand, the three forward passes started
//!    together each frame as the ensemble starts them). Target: pipeline FPS ≥ 0.95 × that.
//!    Per-stage times of the pipeline are printed.
//! 2. **Steady-state memory**: RSS of the run loop on a looping clip, after warm-up and at the
//!    end; target: growth ≤ 2 %. `TRIDENT_SOAK_SECS` sets the length (default 600 s).
//!
//! `cargo bench -p trident-e2e --bench edge_pipeline` (part of `cargo xtask bench`). The
//! models are the `tiny` preset at 320 px with random weights (latency does not depend on the
//! values), exported by the exporter and loaded from their folder as a unit loads them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use trident_core::letterbox::LetterboxPlan;
use trident_edge::governor::{Governor, Profile};
use trident_edge::output::log::LogOptions;
use trident_edge::run::{RunOptions, RunSummary, run};
use trident_edge::source::{Frame, Pull, Source, SourceOptions};
use trident_infer::backend::{OnnxModel, load};
use trident_infer::ensemble::fusion::{Fusion, WbfOptions};
use trident_infer::ensemble::runner::Ensemble;
use trident_infer::models::ModelSet;
use trident_infer::{BackendKind, BackendOptions};

const SIDE: u32 = 320;
const FRAME_W: u32 = 640;
const FRAME_H: u32 = 480;
const CLIP_FRAMES: u32 = 60;

/// A clip of moving test-pattern frames, JPEG in AVI (what a survey camera's recorder writes).
fn clip(dir: &Path) -> PathBuf {
    gst::init().unwrap();
    let path = dir.join("clip.avi");
    let line = format!(
        "videotestsrc pattern=ball num-buffers={CLIP_FRAMES} ! \
         video/x-raw,width={FRAME_W},height={FRAME_H},framerate=10/1 ! jpegenc ! avimux ! \
         filesink location=\"{}\"",
        path.display()
    );
    let pipeline = gst::parse::launch(&line).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    path
}

fn source(clip: &Path, looping: bool) -> Source {
    let opts = SourceOptions {
        loop_file: looping,
        ..SourceOptions::default()
    };
    Source::open(format!("file://{}", clip.display()).parse().unwrap(), opts).unwrap()
}

/// Every frame of the clip, decoded once.
fn decoded(clip: &Path) -> Vec<Frame> {
    let mut s = source(clip, false);
    let mut frames = Vec::new();
    loop {
        let mut f = Frame::default();
        match s.next_frame(&mut f, Duration::from_secs(5)).unwrap() {
            Pull::Frame => frames.push(f),
            Pull::Eos => break,
            Pull::Timeout | Pull::Reconnecting | Pull::Failed { .. } | Pull::Skipped { .. } => {}
        }
    }
    frames
}

/// The three models alone: inputs letterboxed beforehand, one thread per model, the three
/// passes of a frame started together (a barrier per frame, as the ensemble hands out frames).
fn inference_only(set: &ModelSet, frames: &[Frame], rounds: usize) -> f64 {
    let inputs: Vec<Vec<f32>> = frames
        .iter()
        .map(|f| {
            let plan = LetterboxPlan::new(f.width, f.height, SIDE, SIDE);
            let mut chw = vec![0.0; 3 * (SIDE * SIDE) as usize];
            plan.run(&f.rgb, &mut chw);
            chw
        })
        .collect();
    let mut backends: Vec<_> = set
        .models
        .iter()
        .map(|m| {
            let model = OnnxModel {
                path: &m.onnx_path,
                bytes: &m.bytes,
            };
            let side = SIDE as usize;
            load(
                BackendKind::Tract,
                &model,
                [1, 3, side, side],
                &BackendOptions::default(),
            )
            .unwrap()
        })
        .collect();
    let barrier = Barrier::new(backends.len());
    let t = Instant::now();
    std::thread::scope(|scope| {
        for b in &mut backends {
            let (inputs, barrier) = (&inputs, &barrier);
            scope.spawn(move || {
                let mut out = Vec::new();
                for _ in 0..rounds {
                    for x in inputs {
                        barrier.wait();
                        b.run(x, &mut out).unwrap();
                    }
                }
            });
        }
    });
    (rounds * inputs.len()) as f64 / t.elapsed().as_secs_f64()
}

fn profile(dir: &Path) -> Profile {
    let path = dir.join("bench.yaml");
    std::fs::write(
        &path,
        "name: bench\ntarget_fps: 1000\npower: { cap_w: 1000.0, source: estimate }\n\
         estimates: { idle_w: 1.0, tta_factor: 2.0, models: { \
         high_recall: { latency_ms: 30.0, active_w: 1.0 }, balanced: { latency_ms: 30.0, active_w: 1.0 }, \
         high_precision: { latency_ms: 30.0, active_w: 1.0 } } }\n\
         ladder:\n  - { name: ensemble, models: [high_recall, balanced, high_precision], fps: 1000 }\n",
    )
    .unwrap();
    Profile::load(&path).unwrap()
}

fn pipeline(
    set: &ModelSet,
    clip: &Path,
    dir: &Path,
    duration: Option<Duration>,
    looping: bool,
    on_frame_rss: Option<&mut Vec<(f64, f64)>>,
) -> RunSummary {
    let fusion = Fusion::Wbf(WbfOptions {
        clip_unit: false,
        ..WbfOptions::default()
    });
    let mut ensemble =
        Ensemble::load(set, &[BackendKind::Tract], &Default::default(), fusion).unwrap();
    let mut sources = vec![source(clip, looping)];
    let mut governor = Governor::new(profile(dir), None, 0.0).unwrap();
    let mut opts = RunOptions {
        duration,
        detections: dir.join("out/detections.jsonl"),
        log: LogOptions::default(),
        notifier: None,
        snapshots: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    match on_frame_rss {
        None => run(&mut sources, &mut ensemble, &mut governor, &mut opts, &stop).unwrap(),
        Some(samples) => {
            // Sample RSS from a side thread while the loop runs.
            let done = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&done);
            let sampler = std::thread::spawn(move || {
                let t = Instant::now();
                let mut out = Vec::new();
                while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    out.push((t.elapsed().as_secs_f64(), trident_e2e::stats::rss_mib()));
                    std::thread::sleep(Duration::from_secs(1));
                }
                out
            });
            let summary =
                run(&mut sources, &mut ensemble, &mut governor, &mut opts, &stop).unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            *samples = sampler.join().unwrap();
            summary
        }
    }
}

/// Resident set size of this process (Linux), MiB.
fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n== trident-edge: run-loop overhead and steady-state memory ({cores} cores) ==");
    let set = ModelSet::load_dir(&common::random_models(dir.path(), "tiny", SIDE, false)).unwrap();
    let clip = clip(dir.path());
    let frames = decoded(&clip);
    println!(
        "three `tiny` models at {SIDE} px through tract; {} frames of {FRAME_W}×{FRAME_H} (MJPEG AVI)",
        frames.len()
    );

    let rounds = 2;
    let infer_fps = inference_only(&set, &frames, rounds);
    let s = pipeline(&set, &clip, dir.path(), None, false, None);
    let pipe_fps = s.fps();
    println!(
        "inference only : {infer_fps:6.2} fps ({} passes of each model)",
        rounds * frames.len()
    );
    println!(
        "pipeline       : {pipe_fps:6.2} fps ({} frames, decode → ensemble → WBF → JSONL)",
        s.frames
    );
    println!(
        "ratio          : {:.3} (target ≥ 0.95)",
        pipe_fps / infer_fps
    );
    let per_frame = |secs: f64| secs / s.frames.max(1) as f64 * 1e3;
    println!("per-stage, ms per frame:");
    for (stage, secs) in s.stages.named() {
        println!("  {stage:<8} {:7.2}", per_frame(secs));
    }
    println!(
        "  {:<8} {:7.2}  (wall {:.2})",
        "sum",
        per_frame(s.stages.total()),
        per_frame(s.seconds)
    );
    for (name, passes, mean) in &s.models {
        println!("  model {name}: {passes} passes, {:.1} ms each", mean * 1e3);
    }

    let soak = std::env::var("TRIDENT_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(600.0);
    let mut samples = Vec::new();
    let s = pipeline(
        &set,
        &clip,
        dir.path(),
        Some(Duration::from_secs_f64(soak)),
        true,
        Some(&mut samples),
    );
    // Warm-up: the first tenth of the run (allocator pools, GStreamer buffers, tract plans).
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= soak / 10.0)
        .or(samples.first())
        .map_or(0.0, |&(_, r)| r);
    let last = samples.last().map_or(0.0, |&(_, r)| r);
    let peak = samples.iter().map(|&(_, r)| r).fold(0.0, f64::max);
    println!(
        "soak {soak:.0} s on a looping clip: {} frames ({:.2} fps); RSS {warm:.1} MiB after warm-up → {last:.1} MiB at the end (peak {peak:.1}): growth {:+.2} % (target ≤ 2 %)",
        s.frames,
        s.fps(),
        (last - warm) / warm * 100.0
    );
}
