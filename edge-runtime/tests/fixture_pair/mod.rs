//! Two copies of the tiny YOLOv8 fixture ("a", "b") through tract, fused by WBF: the ensemble
//! the run-loop tests drive (`http.rs`, `secrets.rs`).

use std::path::Path;

use trident_edge::backend::{OnnxModel, load_first};
use trident_edge::ensemble::fusion::{Fusion, WbfOptions};
use trident_edge::ensemble::runner::{Ensemble, ModelSlot};
use trident_edge::{BackendKind, OnnxDetector};

/// The pair with every member's score floor at `floor` (0 keeps every candidate).
pub fn ensemble(floor: f32) -> Ensemble {
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
                detector: OnnxDetector::new(backend, 3).unwrap(),
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
