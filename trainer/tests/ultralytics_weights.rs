//! `trident train --weights` from an Ultralytics YOLOv8n state dict made by the `ultralytics`
//! package itself (tests/python/yolov8n_state_dict.py, in the test venv): trident's `nano`
//! preset must take every backbone and neck tensor by name and shape.

use std::path::PathBuf;
use std::process::Command;

use tch::{Device, nn};
use trident_core::model_spec::ModelSpec;
use trident_trainer::init::load;
use trident_trainer::model::Detector;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TRIDENT_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask setup` (the test venv has ultralytics)",
        p.display()
    );
    p
}

/// A YOLOv8n state dict for `nc` classes, made by Ultralytics.
fn yolov8n(dir: &std::path::Path, nc: usize) -> PathBuf {
    let file = dir.join(format!("yolov8n-{nc}.safetensors"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/yolov8n_state_dict.py"
    );
    let o = Command::new(python())
        .args([script, file.to_str().unwrap(), &nc.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    file
}

fn nano(names: &[&str]) -> (nn::VarStore, ModelSpec) {
    let spec =
        ModelSpec::preset("nano", names.iter().map(|n| n.to_string()).collect(), 320).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Detector::new(&vs.root(), &spec);
    (vs, spec)
}

#[test]
fn an_ultralytics_yolov8n_state_dict_fills_the_nano_preset() {
    let dir = tempfile::tempdir().unwrap();

    // Same class count: every tensor of trident's model is in the file, by name and shape.
    let (vs, spec) = nano(&["lionfish", "urchin", "abalone"]);
    let report = load(&yolov8n(dir.path(), 3), &vs.variables(), &spec).unwrap();
    assert_eq!(report.format, "state_dict");
    assert!(
        report.reinitialised.is_empty(),
        "{:?}",
        report.reinitialised
    );
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert_eq!(report.loaded, report.model_tensors);

    // COCO's 80 classes → 3: the class branch starts afresh — its hidden width is
    // max(64, min(nc, 100)) in YOLOv8, so all of it changes shape, as Ultralytics' own
    // "Transferred 319/355 items" shows — and nothing of the backbone (layers 0–9), the neck or
    // the box branch is missing.
    let (vs, spec) = nano(&["lionfish", "urchin", "abalone"]);
    let report = load(&yolov8n(dir.path(), 80), &vs.variables(), &spec).unwrap();
    assert!(!report.reinitialised.is_empty());
    for (name, why) in &report.reinitialised {
        assert!(name.starts_with("model.22.cv3."), "{name}: {why}");
    }
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert_eq!(
        report.loaded + report.reinitialised.len(),
        report.model_tensors
    );
}
