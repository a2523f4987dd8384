//! Two copies of the tiny YOLOv8 fixture ("a", "b") through tract, fused by WBF: the ensemble
//! the run-loop tests drive (`http.rs`, `secrets.rs`, `faults.rs`).
#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use trident_infer::backend::{Backend, OnnxModel, load_first};
use trident_infer::ensemble::fusion::{Fusion, WbfOptions};
use trident_infer::ensemble::runner::{Ensemble, ModelSlot};
use trident_infer::{BackendKind, OnnxDetector};

/// The pair with every member's score floor at `floor` (0 keeps every candidate).
pub fn ensemble(floor: f32) -> Ensemble {
    ensemble_with(floor, |_, b| b)
}

/// A backend that fails every pass while its switch is on (a CUDA error, a lost device), and
/// works again when it is off.
pub struct Faulty {
    pub inner: Box<dyn Backend>,
    pub failing: Arc<AtomicBool>,
}

impl Backend for Faulty {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
    fn input_shape(&self) -> [usize; 4] {
        self.inner.input_shape()
    }
    fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> trident_infer::Result<Vec<usize>> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(trident_infer::Error::backend(
                "tract",
                "simulated device fault",
            ));
        }
        self.inner.run(input, out)
    }
}

/// The pair, each member's backend passed through `wrap(name, backend)`.
pub fn ensemble_with(
    floor: f32,
    wrap: impl Fn(&str, Box<dyn Backend>) -> Box<dyn Backend>,
) -> Ensemble {
    let onnx =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ultralytics-yolov8t-96.onnx");
    let bytes = std::fs::read(&onnx).unwrap();
    let members = ["a", "b"]
        .iter()
        .map(|name| {
            let model = OnnxModel {
                path: &onnx,
                bytes: &bytes,
            };
            let backend = load_first(
                &[BackendKind::Tract],
                &model,
                [1, 3, 96, 96],
                &Default::default(),
            )
            .unwrap();
            ModelSlot {
                name: name.to_string(),
                sha256: String::new(),
                floor,
                detector: OnnxDetector::new(wrap(name, backend), 3).unwrap(),
            }
        })
        .collect();
    Ensemble::from_detectors(
        vec!["lionfish".into(), "urchin".into(), "abalone".into()],
        members,
        Fusion::Wbf(WbfOptions::default()),
    )
    .unwrap()
}

/// The run loop (`run_observed`, reporting to `health`) on its own thread while `during` runs on
/// this one; `during` is given a way to ask whether the loop has finished. Returns the loop's
/// summary and what `during` returned. The loop ends by its duration, its sources or `stop`.
#[cfg(feature = "gstreamer")]
#[allow(clippy::too_many_arguments)]
pub fn run_while<T>(
    sources: &mut [trident_edge::source::Source],
    ensemble: &mut Ensemble,
    governor: &mut trident_edge::governor::Governor,
    opts: &mut trident_edge::run::RunOptions,
    stop: &Arc<AtomicBool>,
    health: &trident_edge::health::Health,
    during: impl FnOnce(&dyn Fn() -> bool) -> T,
) -> (trident_edge::run::RunSummary, T) {
    std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            trident_edge::run::run_observed(sources, ensemble, governor, opts, stop, Some(health))
        });
        let seen = during(&|| running.is_finished());
        (running.join().unwrap().unwrap(), seen)
    })
}
