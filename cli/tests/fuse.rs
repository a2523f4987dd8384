//! `trident fuse` end to end: the file it writes is the library's fusion of the inputs, and bad
//! input (malformed or missing files, bad items, weights that do not fit, bad numbers, WBF
//! options with NMS) exits with status 2, names the culprit and writes nothing.

use std::path::{Path, PathBuf};

use crate::common;
use common::{stderr, stdout, trident};
use trident_calibration::fuse::fuse_files;
use trident_core::calibration::ConfType;
use trident_core::prediction::{Prediction, save_predictions};
use trident_infer::ensemble::fusion::{Fusion, NmsFusionOptions, WbfOptions};

fn p(image: &str, class: usize, score: f64, bbox: [f64; 4]) -> Prediction {
    let image = image.to_string();
    Prediction {
        image,
        class,
        score,
        bbox,
    }
}

/// Three models' predictions of two images: one object all found, one two of them found (one
/// twice), a class-1 box only the last found.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let models = [
        vec![
            p("a", 0, 0.9, [10.0, 10.0, 100.0, 80.0]),
            p("b", 0, 0.6, [200.0, 50.0, 40.0, 40.0]),
            p("b", 0, 0.5, [203.0, 52.0, 40.0, 39.0]),
        ],
        vec![
            p("b", 0, 0.7, [198.0, 49.0, 42.0, 41.0]),
            p("a", 0, 0.8, [12.0, 9.0, 97.0, 83.0]),
        ],
        vec![
            p("a", 0, 0.75, [8.0, 11.0, 101.0, 79.0]),
            p("a", 1, 0.4, [300.0, 300.0, 20.0, 20.0]),
        ],
    ];
    models
        .iter()
        .enumerate()
        .map(|(t, preds)| {
            let path = dir.join(format!("m{t}.json"));
            save_predictions(&path, preds).unwrap();
            path
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn fuse_writes_the_library_fusion_of_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let out = dir.path().join("fused.json");
    let want = dir.path().join("want.json");
    let wbf = Fusion::Wbf(WbfOptions {
        iou_thr: 0.6,
        weights: Some(vec![2.0, 1.0, 1.0]),
        conf_type: ConfType::BoxAndModelAvg,
        clip_unit: false,
        ..Default::default()
    });
    let nms = Fusion::Nms(NmsFusionOptions {
        weights: Some(vec![2.0, 1.0, 1.0]),
        clip_unit: false,
        ..Default::default()
    });
    let wbf_args = [
        "--method",
        "wbf",
        "--iou",
        "0.6",
        "--conf-type",
        "box_and_model_avg",
    ];
    for (fusion, extra) in [(wbf, &wbf_args[..]), (nms, &["--method", "nms"][..])] {
        let mut args = vec!["fuse", s(&files[0]), s(&files[1]), s(&files[2])];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--weights", "2,1,1", "--out", s(&out)]);
        let o = trident(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let lib = fuse_files(&files, &fusion).unwrap();
        save_predictions(&want, &lib.predictions).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&want).unwrap());
        let line = stdout(&o);
        let n = lib.predictions.len();
        assert!(
            line.contains("fused 3 files (3 + 2 + 2 boxes) on 2 images"),
            "{line}"
        );
        assert!(line.contains(&format!("7 boxes in → {n} boxes")), "{line}");
    }
    // WBF merges the three-model object into one box; default options work too.
    let o = trident(&["fuse", s(&files[0]), s(&files[1]), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wbf (iou 0.55, skip 0, conf_type avg)"));
}

#[test]
fn bad_input_exits_2_names_the_culprit_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let malformed = write("malformed.json", "[\n{\"image\": \"a\", \"class\": 0,}\n]");
    let bad_score = write(
        "bad_score.json",
        r#"[{"image": "a", "class": 0, "score": 0.5, "bbox": [1, 2, 3, 4]},
            {"image": "a", "class": 0, "score": 1.5, "bbox": [1, 2, 3, 4]}]"#,
    );
    let missing = dir.path().join("missing.json");
    let out = dir.path().join("fused.json");
    let (a, b) = (s(&files[0]), s(&files[1]));
    let cases: [(Vec<&str>, &str); 9] = [
        (vec![a, s(&malformed)], "malformed.json:2:"),
        (vec![a, s(&bad_score)], "bad_score.json: item 1: score 1.5"),
        (vec![s(&missing), a], "missing.json"),
        (vec![a, b, "--weights", "2,1,1"], "weights: 3 given for 2"),
        (vec![a, b, "--weights", "1,-1"], "weights: weight 2 is -1"),
        (
            vec![a, b, "--iou", "1.5"],
            "--iou: 1.5 is not a number in [0, 1]",
        ),
        (vec![a, b, "--skip", "NaN"], "--skip: NaN"),
        (vec![a, b, "--method", "nms", "--skip", "0.2"], "--skip"),
        (
            vec![a, b, "--method", "nms", "--conf-type", "max"],
            "--conf-type",
        ),
    ];
    for (extra, want) in cases {
        // An existing output is left as it was.
        std::fs::write(&out, "keep").unwrap();
        let mut args = vec!["fuse"];
        args.extend_from_slice(&extra);
        args.extend_from_slice(&["--out", s(&out)]);
        let o = trident(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: want {want:?} in {e}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep", "{args:?}");
        std::fs::remove_file(&out).unwrap();
        let o = trident(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
