//! `trident calibrate` through the binary: real ONNX models over a synthetic split produce tables
//! the edge runtime's ensemble accepts (`trident predict --calibration`); bad input exits 2,
//! names what is wrong, and writes nothing.

use crate::common;

use std::path::Path;

use common::{s, stderr, stdout, synth, trident, write};

const VARIANTS: [&str; 3] = ["high_recall", "balanced", "high_precision"];
const NAMES: [&str; 3] = ["lionfish", "urchin", "abalone"];

/// One TTA candidate keeps the run short.
const CONFIG: &str = "tta:\n  candidates: [{ flip: true }]\nfusion:\n  iou_thr: [0.55]\n";

#[test]
fn calibrated_tables_are_written_and_the_runtime_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "data", 30, 5);
    let (models, digest) = trident_e2e::fixture_models(dir.path(), &VARIANTS, &NAMES);
    let config = write(dir.path(), "calibrate.yaml", CONFIG);
    let out = dir.path().join("calibration");
    let yaml = data.join("dataset.yaml");
    let o = trident(&[
        "calibrate",
        "--models",
        s(&models),
        "--data",
        s(&yaml),
        "--out",
        s(&out),
        "--config",
        s(&config),
        "--backend",
        "tract",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("ensemble (") && text.contains("TTA kept"),
        "{text}"
    );
    for f in [
        "calibration.yaml",
        "report.md",
        "metrics.json",
        "reliability.png",
        "pr_curves.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing:\n{text}");
    }
    let tables = std::fs::read_to_string(out.join("calibration.yaml")).unwrap();
    assert!(
        tables.contains(&digest) && tables.contains("schema: trident-calibration/1"),
        "{tables}"
    );

    // The tables drive the ensemble the device runs.
    let preds = dir.path().join("preds.json");
    let o = trident(&[
        "predict",
        "--models",
        s(&models),
        "--calibration",
        s(&out.join("calibration.yaml")),
        "--source",
        s(&data.join("images/val")),
        "--out",
        s(&preds),
        "--backend",
        "tract",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("calibration.yaml"), "{}", stdout(&o));

    // A second run into the filled folder is refused (exit 2) and leaves it as it was.
    let o = trident(&[
        "calibrate",
        "--models",
        s(&models),
        "--data",
        s(&yaml),
        "--out",
        s(&out),
        "--config",
        s(&config),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("calibration.yaml")).unwrap(),
        tables
    );
}

fn refused(args: &[&str], out: &Path, expect: &[&str]) {
    let o = trident(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
    assert!(!out.exists(), "{} was written", out.display());
    let parent = out.parent().unwrap();
    let staged: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".calibration"))
        .collect();
    assert!(staged.is_empty(), "staging left behind: {staged:?}");
}

#[test]
fn bad_input_exits_2_names_the_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "data", 12, 7);
    let yaml = data.join("dataset.yaml");
    let out = dir.path().join("calibration");

    // Models that disagree on their classes.
    let mixed = dir.path().join("mixed");
    let (models, _) = trident_e2e::fixture_models(&mixed, &VARIANTS, &NAMES);
    let card = models.join("balanced.card.json");
    let text = std::fs::read_to_string(&card)
        .unwrap()
        .replace("\"urchin\"", "\"crab\"");
    std::fs::write(&card, text).unwrap();
    refused(
        &[
            "calibrate",
            "--models",
            s(&models),
            "--data",
            s(&yaml),
            "--out",
            s(&out),
        ],
        &out,
        &["disagree on class names", "crab"],
    );

    // A dataset whose names differ from the models'.
    let (models, _) = trident_e2e::fixture_models(dir.path(), &VARIANTS, &NAMES);
    let other = dir.path().join("other");
    let o = trident(&[
        "data",
        "synth",
        "--out",
        s(&other),
        "--images",
        "6",
        "--classes",
        "lionfish,crab,abalone",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    refused(
        &[
            "calibrate",
            "--models",
            s(&models),
            "--data",
            s(&other.join("dataset.yaml")),
            "--out",
            s(&out),
        ],
        &out,
        &["dataset.yaml: field `names`", "crab"],
    );

    // An empty validation split.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("images/val")).unwrap();
    std::fs::create_dir_all(empty.join("images/train")).unwrap();
    let empty_yaml = write(
        &empty,
        "dataset.yaml",
        "path: .\ntrain: images/train\nval: images/val\nnames: [lionfish, urchin, abalone]\n",
    );
    refused(
        &[
            "calibrate",
            "--models",
            s(&models),
            "--data",
            s(&empty_yaml),
            "--out",
            s(&out),
        ],
        &out,
        &["split `val`", "no images"],
    );

    // A config with a misspelt field, and one with weights for two models.
    let bad = write(dir.path(), "bad.yaml", "tta:\n  min_gian: 0.1\n");
    refused(
        &[
            "calibrate",
            "--models",
            s(&models),
            "--data",
            s(&yaml),
            "--out",
            s(&out),
            "--config",
            s(&bad),
        ],
        &out,
        &["bad.yaml", "min_gian"],
    );
    let two = write(dir.path(), "two.yaml", "fusion:\n  weights: [[1, 2]]\n");
    refused(
        &[
            "calibrate",
            "--models",
            s(&models),
            "--data",
            s(&yaml),
            "--out",
            s(&out),
            "--config",
            s(&two),
        ],
        &out,
        &[
            "two.yaml:2:",
            ": fusion.weights[0]",
            "2 weights for an ensemble of 3 models",
        ],
    );
}
