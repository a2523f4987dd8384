//! The `trident` binary end to end: data synth/check/split and eval, including the errors a
//! user sees for bad input (location, message, exit status 2, nothing half-written).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common;
use common::{stderr, stdout, synth, train, trident, write};

fn tree_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ))
            }
        }
    }
    out.sort();
    out
}

#[test]
fn synth_is_deterministic_valid_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let a = synth(dir.path(), "a", 40, 7);
    let b = synth(dir.path(), "b", 40, 7);
    let c = synth(dir.path(), "c", 40, 8);
    assert_eq!(tree_bytes(&a), tree_bytes(&b), "same seed, same bytes");
    assert_ne!(
        tree_bytes(&a),
        tree_bytes(&c),
        "another seed, another dataset"
    );
    let img = image::open(
        a.join("images/train")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert_eq!((img.width(), img.height()), (200, 120), "non-square frames");

    let o = trident(&[
        "data",
        "check",
        "--data",
        a.join("dataset.yaml").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ok"), "{}", stdout(&o));

    let o = trident(&[
        "data",
        "synth",
        "--out",
        a.to_str().unwrap(),
        "--images",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(
        tree_bytes(&a),
        tree_bytes(&b),
        "a refused run leaves the old output untouched"
    );
}

#[test]
fn check_reports_every_problem_with_its_location_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), "ds", 30, 1);
    let labels = ds.join("labels/val");
    let first = labels
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    std::fs::write(
        &first,
        "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n0 0.5 0.5 -0.2 0.2\n0 0.5 0.5\n",
    )
    .unwrap();
    std::fs::write(labels.join("orphan.txt"), "0 0.5 0.5 0.1 0.1\n").unwrap();
    let broken = ds.join("images/val/broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();

    let o = trident(&[
        "data",
        "check",
        "--data",
        ds.join("dataset.yaml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let first = first.display().to_string();
    assert!(
        err.contains(&format!("{first}:2: class 7 out of range")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{first}:3: w = -0.2 is outside [0, 1]")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{first}:4: expected 5 fields")),
        "{err}"
    );
    assert!(
        err.contains("orphan.txt: label file has no matching image"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: unreadable image", broken.display())),
        "{err}"
    );
    // The summary still prints, with the valid line of the edited file counted.
    assert!(stdout(&o).contains("val"), "{}", stdout(&o));
}

#[test]
fn check_rejects_a_bad_yaml_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("d.yaml");
    std::fs::write(&y, "train: images/train\nval: images/val\nnames: [a, b\n").unwrap();
    let o = trident(&["data", "check", "--data", y.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("d.yaml:3:"), "{}", stderr(&o));
}

#[test]
fn split_stratifies_links_and_writes_a_checkable_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), "ds", 60, 2);
    // Flatten the synthetic dataset into one folder of images and one of labels.
    let (imgs, lbls) = (
        dir.path().join("flat/images"),
        dir.path().join("flat/labels"),
    );
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::create_dir_all(&lbls).unwrap();
    for split in ["train", "val", "test"] {
        for e in std::fs::read_dir(ds.join("images").join(split)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, imgs.join(p.file_name().unwrap())).unwrap();
            let l = ds
                .join("labels")
                .join(split)
                .join(p.with_extension("txt").file_name().unwrap());
            if l.exists() {
                std::fs::copy(&l, lbls.join(l.file_name().unwrap())).unwrap();
            }
        }
    }
    // A rare class: three images only.
    for i in 0..3 {
        std::fs::copy(
            imgs.read_dir().unwrap().next().unwrap().unwrap().path(),
            imgs.join(format!("rare{i}.jpg")),
        )
        .unwrap();
        std::fs::write(lbls.join(format!("rare{i}.txt")), "3 0.5 0.5 0.2 0.2\n").unwrap();
    }
    let out = dir.path().join("split");
    let args = [
        "data",
        "split",
        "--images",
        imgs.to_str().unwrap(),
        "--labels",
        lbls.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--names",
        "lionfish,urchin,abalone,rare",
        "--seed",
        "4",
    ];
    let o = trident(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for split in ["train", "val", "test"] {
        let has_rare = std::fs::read_dir(out.join("labels").join(split))
            .unwrap()
            .any(|e| {
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .starts_with("3 ")
            });
        assert!(has_rare, "the rare class must reach the {split} split");
    }
    let count = |s: &str| {
        std::fs::read_dir(out.join("images").join(s))
            .unwrap()
            .count()
    };
    assert_eq!(count("train") + count("val") + count("test"), 63);
    assert!(
        (41..=47).contains(&count("train")),
        "train {}",
        count("train")
    );
    let o = trident(&[
        "data",
        "check",
        "--data",
        out.join("dataset.yaml").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Same seed, same split; non-empty output is refused without --force.
    let o = trident(&args);
    assert_eq!(o.status.code(), Some(2));
    let mut forced = args.to_vec();
    forced.push("--force");
    let before = tree_bytes(&out);
    assert!(trident(&forced).status.success());
    assert_eq!(before, tree_bytes(&out));
}

/// `trident eval --data YAML --predictions PREDS [extra…]`.
fn eval(yaml: &Path, preds: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--data",
        yaml.to_str().unwrap(),
        "--predictions",
        preds.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    trident(&args)
}

#[test]
fn eval_prints_metrics_json_and_plots_for_good_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), "ds", 40, 3);
    // Ground truth as predictions: a perfect detector.
    let mut preds = Vec::new();
    for e in std::fs::read_dir(ds.join("labels/val")).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let (w, h) = (v[3] * 200.0, v[4] * 120.0);
            preds.push(serde_json::json!({"image": stem, "class": v[0] as usize, "score": 0.9, "bbox": [v[1] * 200.0 - w / 2.0, v[2] * 120.0 - h / 2.0, w, h]}));
        }
    }
    let pf = write(
        dir.path(),
        "preds.json",
        &serde_json::to_string(&preds).unwrap(),
    );
    let plots = dir.path().join("plots");
    let yaml = ds.join("dataset.yaml");
    let o = eval(
        &yaml,
        &pf,
        &[
            "--split",
            "val",
            "--json",
            "--plots",
            plots.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "map50",
        "map50_95",
        "per_class",
        "precision",
        "recall",
        "f1",
        "best_f1_conf",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert!((v["map50"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{v}");
    assert!(v["map50_95"].as_f64().unwrap() > 0.99, "{v}");
    for png in ["pr_curve.png", "f1_curve.png"] {
        let img = image::open(plots.join(png)).unwrap();
        assert!(img.width() > 100);
    }
    let o = eval(&yaml, &pf, &[]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("mAP50-95") && stdout(&o).contains("lionfish"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn eval_rejects_bad_predictions_naming_each_item() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), "ds", 20, 5);
    let yaml = ds.join("dataset.yaml");
    let stem = std::fs::read_dir(ds.join("images/val"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let bad = format!(
        r#"[{{"image": "{stem}", "class": 0, "score": 0.5, "bbox": [1, 2, 3, 4]}},
{{"image": "no_such_image", "class": 0, "score": 0.5, "bbox": [1, 2, 3, 4]}},
{{"image": "{stem}", "class": 9, "score": 0.5, "bbox": [1, 2, 3, 4]}},
{{"image": "{stem}", "class": 1, "score": 0.5, "bbox": [1, 2, -3, 4]}}]"#
    );
    let pf = write(dir.path(), "bad.json", &bad);
    let o = eval(&yaml, &pf, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("item 1 (image \"no_such_image\"): unknown image"),
        "{err}"
    );
    assert!(
        err.contains("item 2") && err.contains("class 9 out of range"),
        "{err}"
    );
    assert!(
        err.contains("item 3") && err.contains("negative size"),
        "{err}"
    );

    let pf = write(
        dir.path(),
        "broken.json",
        "[\n  {\"image\": \"x\", \"class\": 0,\n   \"score\": 0.5 \"bbox\": [1,2,3,4]}\n]",
    );
    let o = eval(&yaml, &pf, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("broken.json:3:"), "{}", stderr(&o));

    // A missing prediction file.
    let none = dir.path().join("none.json");
    let o = eval(&yaml, &none, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("none.json"), "{}", stderr(&o));

    // A missing image: its ground truth would silently vanish from the metrics.
    let empty = write(dir.path(), "empty.json", "[]");
    std::fs::remove_file(ds.join("images/val").join(format!("{stem}.jpg"))).unwrap();
    let o = eval(&yaml, &empty, &[]);
    assert_eq!(o.status.code(), Some(2));
    let expected = format!("{stem}.txt: label file has no matching image");
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));
}

#[test]
fn train_predict_eval_chain_and_training_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 24, 9);
    let yaml = data.join("dataset.yaml");
    let runs = dir.path().join("runs");
    let base = |extra: &[&str]| train(&data, &runs, extra);

    let o = base(&["--variant", "wide_angle"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("high_recall, balanced, high_precision"),
        "{}",
        stderr(&o)
    );
    let o = base(&["--imgsz", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("imgsz"), "{}", stderr(&o));

    let o = base(&["--variant", "high_precision"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("high_precision") && stdout(&o).contains("mAP50"),
        "{}",
        stdout(&o)
    );
    let best = runs.join("high_precision/best.safetensors");
    assert!(best.exists());

    let preds = dir.path().join("preds.json");
    let o = trident(&[
        "predict",
        "--checkpoint",
        best.to_str().unwrap(),
        "--source",
        data.join("images/val").to_str().unwrap(),
        "--out",
        preds.to_str().unwrap(),
        "--conf",
        "0.001",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = eval(&yaml, &preds, &["--json"]);
    assert!(
        o.status.success(),
        "the prediction file is what eval reads: {}",
        stderr(&o)
    );

    // A corrupt checkpoint is named; nothing is written.
    let bad = write(dir.path(), "bad.safetensors", "garbage");
    let out = dir.path().join("never.json");
    let o = trident(&[
        "predict",
        "--checkpoint",
        bad.to_str().unwrap(),
        "--source",
        data.join("images/val").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.safetensors"), "{}", stderr(&o));
    assert!(!out.exists());
}
