//! Printed benchmark (not a timed test): export time per model, and ONNX latency of the edge
//! runtime's backends — tract and ONNX Runtime — at imgsz 320 and 640 on this machine.
//!
//! `cargo bench -p trident-e2e --bench export_and_latency` (part of `cargo xtask bench`); it sits
//! with the end-to-end benches because it trains nothing but needs the trainer's model (libtorch)
//! to make checkpoints, which the exporter itself never links. Models are the `tiny` and `nano`
//! presets with three classes and random weights: latency does not depend on the values.

use std::path::Path;
use std::time::Instant;

use tch::{Device, nn};
use trident_core::checkpoint::CheckpointMeta;
use trident_core::model_spec::ModelSpec;
use trident_exporter::export::{ExportOptions, from_checkpoint};
use trident_infer::backend::{OnnxModel, load};
use trident_infer::{BackendKind, BackendOptions};
use trident_trainer::checkpoint::{named, save};
use trident_trainer::model::Detector;

fn checkpoint(dir: &Path, preset: &str) -> std::path::PathBuf {
    let names = vec!["lionfish".into(), "urchin".into(), "abalone".into()];
    let spec = ModelSpec::preset(preset, names, 640).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Detector::new(&vs.root(), &spec);
    let meta = CheckpointMeta {
        spec,
        variant: Some(preset.into()),
        conf_floor: 0.25,
        epoch: 0,
        metrics: None,
        training: None,
    };
    let path = dir.join(format!("{preset}.safetensors"));
    save(&path, &named("", &vs.variables()), &meta).unwrap();
    path
}

/// Milliseconds per run: median and mean over `runs` after `warmup`.
fn latency(
    kind: BackendKind,
    bytes: &[u8],
    side: usize,
    threads: Option<usize>,
) -> Option<(f64, f64)> {
    let model = OnnxModel {
        path: Path::new("bench.onnx"),
        bytes,
    };
    let mut backend = match load(
        kind,
        &model,
        [1, 3, side, side],
        &BackendOptions {
            threads,
            ..Default::default()
        },
    ) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{kind}: {e}");
            return None;
        }
    };
    let input = vec![0.5f32; 3 * side * side];
    let mut out = Vec::new();
    let runs = if side >= 640 { 10 } else { 30 };
    for _ in 0..3 {
        backend.run(&input, &mut out).unwrap();
    }
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            backend.run(&input, &mut out).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let s = trident_e2e::stats::Summary::of(&times);
    Some((s.median, s.mean))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: only run under bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n== trident-exporter: export time and ONNX latency ({cores} cores) ==");
    println!(
        "{:<6} {:>5} {:>10} {:>9}  {:>16} {:>16} {:>16}",
        "model",
        "imgsz",
        "export ms",
        "ONNX MiB",
        "tract 1 thr",
        "ORT 1 thr",
        &format!("ORT {cores} thr")
    );
    for preset in ["tiny", "nano"] {
        let ck = checkpoint(dir.path(), preset);
        for side in [320usize, 640] {
            let t = Instant::now();
            let opts = ExportOptions {
                imgsz: Some(side as u32),
                ..ExportOptions::default()
            };
            let exported = from_checkpoint(&ck, &opts).unwrap();
            let export_ms = t.elapsed().as_secs_f64() * 1e3;
            let cell = |r: Option<(f64, f64)>| {
                r.map_or("n/a".to_string(), |(p50, mean)| {
                    format!("{p50:.1} ({mean:.1}) ms")
                })
            };
            println!(
                "{:<6} {:>5} {:>10.0} {:>9.1}  {:>16} {:>16} {:>16}",
                preset,
                side,
                export_ms,
                exported.bytes.len() as f64 / f64::from(1 << 20),
                cell(latency(BackendKind::Tract, &exported.bytes, side, Some(1))),
                cell(latency(
                    BackendKind::OnnxRuntime,
                    &exported.bytes,
                    side,
                    Some(1)
                )),
                cell(latency(
                    BackendKind::OnnxRuntime,
                    &exported.bytes,
                    side,
                    Some(cores)
                )),
            );
        }
    }
    println!(
        "latency: median (mean) of one batch-1 forward pass; export: graph build + lint + encode"
    );
}
