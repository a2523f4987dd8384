//! From a baseline to field data through the binary: `data import --coco`, `trident val`,
//! `trident select` and `train --weights`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use trident_core::dataset::DatasetConfig;

use crate::common;
use common::{s, stderr, stdout, synth, train, trident, write};

fn names_of(data: &Path) -> Vec<String> {
    DatasetConfig::load(&data.join("dataset.yaml"))
        .unwrap()
        .names
}

/// The train split of `data` as a labelling service returns it: COCO, `file_name`s relative to
/// `images/train`, category ids that are not class indices (the import maps them by name) and
/// in another order than the dataset's classes.
fn coco_of_train_split(data: &Path) -> Value {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("images/train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (i, f) in files.iter().enumerate() {
        let (w, h) = image::image_dimensions(f).unwrap();
        images.push(
            json!({"id": 100 + i, "file_name": f.file_name().unwrap().to_str().unwrap(),
                           "width": w, "height": h}),
        );
        let label = data
            .join("labels/train")
            .join(f.with_extension("txt").file_name().unwrap());
        for line in std::fs::read_to_string(label).unwrap_or_default().lines() {
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let (w, h) = (f64::from(w), f64::from(h));
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": 100 + i,
                "category_id": 50 - v[0] as usize,
                "bbox": [(v[1] - v[3] / 2.0) * w, (v[2] - v[4] / 2.0) * h, v[3] * w, v[4] * h],
                "iscrowd": 0,
            }));
        }
    }
    let categories: Vec<Value> = names_of(data)
        .iter()
        .enumerate()
        .rev()
        .map(|(c, n)| json!({"id": 50 - c, "name": n}))
        .collect();
    json!({"images": images, "annotations": annotations, "categories": categories})
}

/// `trident data import --coco COCO --images IMAGES [--data DATA] --out OUT`.
fn import(coco: &Path, images: &Path, data: Option<&Path>, out: &Path) -> std::process::Output {
    let mut args = vec![
        "data",
        "import",
        "--coco",
        s(coco),
        "--images",
        s(images),
        "--out",
        s(out),
    ];
    if let Some(d) = data {
        args.extend(["--data", s(d)]);
    }
    trident(&args)
}

fn label_values(path: &Path) -> Vec<Vec<f64>> {
    let mut rows: Vec<Vec<f64>> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[test]
fn import_brings_coco_back_as_the_labels_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 12, 5);
    let mut coco = coco_of_train_split(&data);
    // A crowd region is left out, as Ultralytics' converter does.
    coco["annotations"].as_array_mut().unwrap().push(json!({
        "id": 9999, "image_id": 100, "category_id": 50, "bbox": [1.0, 1.0, 5.0, 5.0], "iscrowd": 1
    }));
    let file = write(dir.path(), "annotations.json", &coco.to_string());
    let out = dir.path().join("imported");
    let o = import(
        &file,
        &data.join("images/train"),
        Some(&data.join("dataset.yaml")),
        &out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 crowd"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("classes.txt")).unwrap(),
        names_of(&data).join("\n") + "\n"
    );
    let mut compared = 0;
    for e in std::fs::read_dir(data.join("labels/train")).unwrap() {
        let original = e.unwrap().path();
        let imported = out.join("labels").join(original.file_name().unwrap());
        let (a, b) = (label_values(&original), label_values(&imported));
        assert_eq!(a.len(), b.len(), "{}", imported.display());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x[0], y[0], "class ids follow the dataset's names");
            for k in 1..5 {
                assert!((x[k] - y[k]).abs() < 1e-5, "{x:?} vs {y:?}");
            }
        }
        assert!(
            out.join("images")
                .join(original.with_extension("jpg").file_name().unwrap())
                .is_file()
        );
        compared += 1;
    }
    assert!(compared > 5);
    // The imported pool is a train source a dataset.yaml can list beside its own folder.
    let merged = write(
        dir.path(),
        "merged.yaml",
        &format!(
            "train: {}\nval: {}\nnames: [{}]\n",
            s(&out.join("images")),
            s(&data.join("images/val")),
            names_of(&data).join(", ")
        ),
    );
    let o = trident(&["data", "check", "--data", s(&merged)]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Without --data, the classes are the categories in id order.
    let out2 = dir.path().join("imported2");
    let o = import(&file, &data.join("images/train"), None, &out2);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut reversed = names_of(&data);
    reversed.reverse();
    assert_eq!(
        std::fs::read_to_string(out2.join("classes.txt")).unwrap(),
        reversed.join("\n") + "\n"
    );
}

#[test]
fn import_names_every_bad_annotation_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 8, 6);
    let mut coco = coco_of_train_split(&data);
    let first = coco["images"][0].clone();
    let (w, h) = (
        first["width"].as_u64().unwrap(),
        first["height"].as_u64().unwrap(),
    );
    coco["categories"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 77, "name": "octopus"}));
    let bad = [
        json!({"id": 501, "image_id": 100, "category_id": 50, "bbox": [10.0, 10.0, -4.0, 5.0]}),
        json!({"id": 502, "image_id": 100, "category_id": 50, "bbox": [w as f64 - 5.0, 10.0, 40.0, 5.0]}),
        json!({"id": 503, "image_id": 4242, "category_id": 50, "bbox": [1.0, 1.0, 2.0, 2.0]}),
        json!({"id": 504, "image_id": 100, "category_id": 12345, "bbox": [1.0, 1.0, 2.0, 2.0]}),
    ];
    coco["annotations"].as_array_mut().unwrap().extend(bad);
    coco["images"].as_array_mut().unwrap().extend([
        json!({"id": 900, "file_name": "not_there.jpg", "width": 200, "height": 120}),
        json!({"id": 901, "file_name": first["file_name"].clone(), "width": w + 1, "height": h}),
        json!({"id": 100, "file_name": "dup.jpg", "width": 1, "height": 1}),
        json!({"id": 902, "file_name": "../escape.jpg", "width": 1, "height": 1}),
    ]);
    let file = write(dir.path(), "annotations.json", &coco.to_string());
    let out = dir.path().join("imported");
    let o = import(
        &file,
        &data.join("images/train"),
        Some(&data.join("dataset.yaml")),
        &out,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    for expected in [
        "category 77 `octopus` is not a class of the dataset",
        "annotation 501: bbox",
        "annotation 502: bbox",
        "lies outside image 100",
        "annotation 503: image_id 4242 is not in `images`",
        "annotation 504: category_id 12345 is not in `categories`",
        "image 900 `not_there.jpg`: missing",
        "image 901",
        "the annotation file says",
        "image 100 `dup.jpg`: id 100 appears twice",
        "image 902 `../escape.jpg`: file_name must be a path inside --images",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(!out.exists(), "nothing is written for a bad file");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Not JSON at all: the line and column.
    let broken = write(
        dir.path(),
        "broken.json",
        "{\n  \"images\": [\n    {oops}\n",
    );
    let o = import(&broken, &data.join("images/train"), None, &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("broken.json:3:"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// The members of a zip by name, with their bytes.
fn unzip(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        out.insert(f.name().to_string(), bytes);
    }
    out
}

/// One active-learning round at toy scale: a baseline → `val` → `select` from an unlabelled
/// pool → the package's pre-annotations imported back → fine-tuned with `--weights` → `val`.
#[test]
fn a_round_of_select_import_fine_tune_and_val() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 24, 9);
    let yaml = data.join("dataset.yaml");
    let runs = dir.path().join("runs");
    let o = train(&data, &runs, &["--variant", "high_precision"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let best = runs.join("high_precision/best.safetensors");

    // val equals predict (conf 0.001) + eval.
    let o = trident(&[
        "val",
        "--checkpoint",
        s(&best),
        "--data",
        s(&yaml),
        "--json",
        "--critical",
        &names_of(&data)[0],
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let val: Value = serde_json::from_slice(&o.stdout).unwrap();
    let preds = dir.path().join("preds.json");
    let o = trident(&[
        "predict",
        "--checkpoint",
        s(&best),
        "--source",
        s(&data.join("images/val")),
        "--out",
        s(&preds),
        "--conf",
        "0.001",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = trident(&[
        "eval",
        "--data",
        s(&yaml),
        "--predictions",
        s(&preds),
        "--json",
    ]);
    let eval: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(val["evaluation"]["map50"], eval["map50"]);
    assert_eq!(val["evaluation"]["map50_95"], eval["map50_95"]);
    assert_eq!(
        val["critical_recall"][0]["class"],
        names_of(&data)[0].as_str()
    );
    // A recall gate a one-epoch model cannot meet: exit 1, the class named.
    let o = trident(&[
        "val",
        "--checkpoint",
        s(&best),
        "--data",
        s(&yaml),
        "--critical",
        &names_of(&data)[0],
        "--min-recall",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&names_of(&data)[0]), "{}", stderr(&o));

    // select from an unlabelled pool (another synthetic set, labels ignored).
    let pool = synth(dir.path(), "pool", 12, 77);
    let package = dir.path().join("package.zip");
    let o = trident(&[
        "select",
        "--checkpoint",
        s(&best),
        "--source",
        s(&pool.join("images")),
        "--num",
        "5",
        "--strategy",
        "entropy",
        "--conf",
        "0.001",
        "--data",
        s(&yaml),
        "--out",
        s(&package),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let members = unzip(&package);
    for m in [
        "annotations.json",
        "selection.csv",
        "guidelines.md",
        "contact_sheet.png",
    ] {
        assert!(members.contains_key(m), "{m} missing: {:?}", members.keys());
    }
    let images: Vec<&String> = members
        .keys()
        .filter(|k| k.starts_with("images/"))
        .collect();
    assert_eq!(images.len(), 5);
    assert!(members.keys().any(|k| k.starts_with("examples/")));
    let coco: Value = serde_json::from_slice(&members["annotations.json"]).unwrap();
    assert_eq!(coco["images"].as_array().unwrap().len(), 5);
    let csv = String::from_utf8(members["selection.csv"].clone()).unwrap();
    let scores: Vec<f64> = csv
        .lines()
        .skip(2)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "ranked: {scores:?}"
    );
    let guide = String::from_utf8(members["guidelines.md"].clone()).unwrap();
    for n in names_of(&data) {
        assert!(guide.contains(&n), "{guide}");
    }

    // The annotators' answer: here the pool's own labels, as COCO; back in through import.
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir_all(unpacked.join("images")).unwrap();
    for (name, bytes) in &members {
        if name.starts_with("images/") {
            std::fs::write(unpacked.join(name), bytes).unwrap();
        }
    }
    let imported = dir.path().join("imported");
    let coco_file = write(dir.path(), "answer.json", &coco.to_string());
    let o = import(&coco_file, &unpacked.join("images"), Some(&yaml), &imported);
    assert!(o.status.success(), "{}", stderr(&o));
    let merged = write(
        dir.path(),
        "merged.yaml",
        &format!(
            "train: [{}, {}]\nval: {}\nnames: [{}]\n",
            s(&data.join("images/train")),
            s(&imported.join("images")),
            s(&data.join("images/val")),
            names_of(&data).join(", ")
        ),
    );

    // Fine-tune from the baseline's run folder: every tensor loaded, nothing re-initialised.
    let runs2 = dir.path().join("runs2");
    let o = trident(&[
        "train",
        "--config",
        s(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/training.yaml")),
        "--data",
        s(&merged),
        "--out",
        s(&runs2),
        "--epochs",
        "1",
        "--imgsz",
        "96",
        "--batch",
        "8",
        "--device",
        "cpu",
        "--variant",
        "high_precision",
        "--weights",
        s(&runs),
        "--freeze",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("start weights"), "{}", stdout(&o));
    let report: Value = common::json(&runs2.join("high_precision/weights.json"));
    assert_eq!(report["format"], "trident");
    assert_eq!(report["loaded"], report["model_tensors"]);
    assert_eq!(report["reinitialised"], json!({}));
    assert_eq!(report["frozen_layers"], 3);
    assert!(report["frozen_tensors"].as_u64().unwrap() > 0);
    let tuned = runs2.join("high_precision/best.safetensors");
    let o = trident(&["val", "--checkpoint", s(&tuned), "--data", s(&yaml)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("mAP50"), "{}", stdout(&o));

    // disagreement between the baseline and the fine-tuned model.
    let package2 = dir.path().join("package2.zip");
    let o = trident(&[
        "select",
        "--checkpoint",
        s(&best),
        "--checkpoint",
        s(&tuned),
        "--source",
        s(&pool.join("images")),
        "--num",
        "3",
        "--strategy",
        "disagreement",
        "--conf",
        "0.001",
        "--out",
        s(&package2),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Classes that differ: the class branch starts afresh, the rest is loaded.
    let other = dir.path().join("other");
    let o = trident(&[
        "data",
        "synth",
        "--out",
        s(&other),
        "--images",
        "24",
        "--seed",
        "3",
        "--width",
        "200",
        "--height",
        "120",
        "--classes",
        "crab,eel",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs3 = dir.path().join("runs3");
    let o = train(
        &other,
        &runs3,
        &["--variant", "high_precision", "--weights", s(&best)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = common::json(&runs3.join("high_precision/weights.json"));
    let reinit = report["reinitialised"].as_object().unwrap();
    assert!(!reinit.is_empty());
    assert!(
        reinit.keys().all(|k| k.starts_with("model.22.cv3.")),
        "only the class branch: {reinit:?}"
    );
    assert_eq!(
        report["loaded"].as_u64().unwrap() + reinit.len() as u64,
        report["model_tensors"].as_u64().unwrap()
    );

    // A critical species: its images drawn 3× per epoch, its recall reported on its own; a
    // critical name the dataset does not have is refused with its place. (Batches at sizes
    // from a list: multi_scale.)
    let critical = &names_of(&data)[0];
    let config = |critical: &str| {
        write(
            dir.path(),
            "critical.yaml",
            &format!(
                "name: critical\ndefaults:\n  model: tiny\n  imgsz: 96\n  epochs: 1\n  batch: 8\n  \
                 device: cpu\n  critical: [{critical}]\n  oversample: 3.0\n  multi_scale: [64, 96, 128]\nvariants:\n  balanced:\n"
            ),
        )
    };
    let runs5 = dir.path().join("runs5");
    let cfg = config(critical);
    let o = trident(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&yaml),
        "--out",
        s(&runs5),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: Value = common::json(&runs5.join("balanced/metadata.json"));
    assert_eq!(meta["critical"]["classes"], json!([critical]));
    assert_eq!(meta["critical"]["oversample"], 3.0);
    assert!(
        meta["critical"]["train_images_oversampled"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(meta["critical"]["recall"][0]["class"], critical.as_str());
    let header = std::fs::read_to_string(runs5.join("balanced/metrics.csv")).unwrap();
    assert!(
        header
            .lines()
            .next()
            .unwrap()
            .ends_with(&format!(",metrics/recall({critical})")),
        "{header}"
    );
    // …and travels with the checkpoint into the model card.
    let models5 = dir.path().join("models5");
    let o = trident(&[
        "export",
        "--checkpoint",
        s(&runs5.join("balanced/best.safetensors")),
        "--out",
        s(&models5),
        "--no-validate",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let card: Value = common::json(&models5.join("balanced.card.json"));
    assert!(
        card["metrics"]["critical_recall_at_floor"][critical.as_str()].is_number(),
        "{card}"
    );
    let cfg = config("kraken");
    let o = trident(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&yaml),
        "--out",
        s(&dir.path().join("runs6")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("critical") && stderr(&o).contains("kraken"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("runs6").exists());

    // Weights that are not a safetensors file: exit 2 before any training, nothing written.
    let garbage = write(dir.path(), "garbage.safetensors", "not weights");
    let runs4 = dir.path().join("runs4");
    let o = train(&data, &runs4, &["--weights", s(&garbage)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("garbage.safetensors"), "{}", stderr(&o));
    assert!(!runs4.exists());
}

/// `data split --group-by` keeps each dive in one split; `data check` then finds a frame copied
/// across splits by its perceptual hash.
#[test]
fn group_split_keeps_dives_whole_and_check_finds_a_leaked_frame() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let o = trident(&[
        "data",
        "synth",
        "--out",
        s(&pool),
        "--images",
        "36",
        "--seed",
        "4",
        "--width",
        "200",
        "--height",
        "120",
        "--layout",
        "flat",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Rename the frames as 9 dives of 4 frames each.
    let mut files: Vec<PathBuf> = std::fs::read_dir(pool.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (k, f) in files.iter().enumerate() {
        let stem = format!("dive{:02}_f{}", k / 4, k % 4);
        let label = pool
            .join("labels")
            .join(f.with_extension("txt").file_name().unwrap());
        std::fs::rename(f, pool.join("images").join(format!("{stem}.jpg"))).unwrap();
        if label.exists() {
            std::fs::rename(&label, pool.join("labels").join(format!("{stem}.txt"))).unwrap();
        }
    }
    let out = dir.path().join("ds");
    let split = |pattern: &str, out: &Path| {
        trident(&[
            "data",
            "split",
            "--images",
            s(&pool.join("images")),
            "--labels",
            s(&pool.join("labels")),
            "--out",
            s(out),
            "--group-by",
            pattern,
            "--mode",
            "copy",
        ])
    };
    let o = split(r"^(dive\d+)_", &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("groups kept whole"), "{}", stdout(&o));
    let mut split_of: std::collections::HashMap<String, String> = Default::default();
    for sp in ["train", "val", "test"] {
        for e in std::fs::read_dir(out.join("images").join(sp)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let dive = name.split('_').next().unwrap().to_string();
            if let Some(prev) = split_of.insert(dive.clone(), sp.to_string()) {
                assert_eq!(prev, sp, "{dive} is in {prev} and {sp}");
            }
        }
    }
    assert_eq!(split_of.len(), 9);

    // A pattern some names do not match: exit 2, the file named, nothing written.
    let bad = dir.path().join("bad");
    let o = split(r"^(site\d+)_", &bad);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--group-by") && stderr(&o).contains("dive00_f0"),
        "{}",
        stderr(&o)
    );
    assert!(!bad.exists());

    // The check is clean, until a train frame is copied into val under another name.
    let o = trident(&["data", "check", "--data", s(&out.join("dataset.yaml"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("looks like"), "{}", stderr(&o));
    let train_frame = std::fs::read_dir(out.join("images/train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let leaked = out.join("images/val/copied_frame.jpg");
    // Re-encoded, not byte-identical: a hash of the bytes would miss it.
    image::open(&train_frame)
        .unwrap()
        .save_with_format(&leaked, image::ImageFormat::Jpeg)
        .unwrap();
    let o = trident(&["data", "check", "--data", s(&out.join("dataset.yaml"))]);
    assert!(
        o.status.success(),
        "warnings do not fail the check: {}",
        stderr(&o)
    );
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        text.contains("looks like") && text.contains("copied_frame") && text.contains("--group-by"),
        "{text}"
    );
}

/// Synthetic background footage (no animals): `images` frames, a flat pool in `dir/bg`.
fn background(dir: &Path, images: usize, seed: u64) -> PathBuf {
    let config = write(
        dir,
        "background.yaml",
        &format!(
            "images: {images}\nseed: {seed}\nwidth: 200\nheight: 120\nmax_objects: 0\nlayout: flat\n"
        ),
    );
    let bg = dir.join("bg");
    let o = trident(&["data", "synth", "--config", s(&config), "--out", s(&bg)]);
    assert!(o.status.success(), "{}", stderr(&o));
    bg
}

/// `trident mine`: false positives counted on the labelled split, background frames with any
/// detection collected as background images, and a dataset.yaml that trains on both.
#[test]
fn mine_counts_false_positives_and_collects_background_frames() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 24, 12);
    let runs = dir.path().join("runs");
    let best = common::train_one_epoch(&data, &runs);
    let bg = background(dir.path(), 8, 5);
    let mined = dir.path().join("mined");
    // A one-epoch model at conf 0.001 sees something everywhere: mistakes to mine.
    let o = trident(&[
        "mine",
        "--checkpoint",
        s(&best),
        "--data",
        s(&data.join("dataset.yaml")),
        "--source",
        s(&bg.join("images")),
        "--out",
        s(&mined),
        "--conf",
        "0.001",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("train split") && out.contains("per image"),
        "{out}"
    );
    assert!(
        out.contains("background:") && out.contains("per frame"),
        "{out}"
    );
    let images: Vec<PathBuf> = std::fs::read_dir(mined.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!images.is_empty() && images.len() <= 8, "{images:?}");
    for i in &images {
        let name = i.file_stem().unwrap().to_str().unwrap();
        assert!(name.starts_with("hardneg_"), "{name}");
        let label = mined.join("labels").join(format!("{name}.txt"));
        assert_eq!(std::fs::read_to_string(label).unwrap(), "", "background");
    }
    let csv = std::fs::read_to_string(mined.join("mined.csv")).unwrap();
    assert_eq!(csv.lines().count(), images.len() + 1);
    // The dataset with the mined frames checks clean and trains.
    let yaml = mined.join("dataset.yaml");
    let o = trident(&["data", "check", "--data", s(&yaml)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = trident(&[
        "mine",
        "--checkpoint",
        s(&best),
        "--source",
        s(&bg.join("images")),
        "--out",
        s(&mined),
        "--conf",
        "0.001",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an existing output needs --force: {}",
        stderr(&o)
    );
}

/// `train --hard-negatives 2 --background …`: train, mine, fine-tune on the dataset plus the
/// mined frames, mine again; a table of the rounds.
#[test]
fn hard_negative_rounds_train_mine_and_fine_tune() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 16, 21);
    let bg = background(dir.path(), 6, 8);
    let runs = dir.path().join("runs");
    let o = train(
        &data,
        &runs,
        &[
            "--variant",
            "high_recall",
            "--hard-negatives",
            "2",
            "--background",
            s(&bg.join("images")),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("FP per frame"), "{}", stdout(&o));
    for round in ["round1", "round2"] {
        assert!(
            runs.join(round)
                .join("high_recall/best.safetensors")
                .is_file()
        );
        assert!(
            runs.join(round)
                .join("high_recall-mined/mined.csv")
                .is_file()
        );
    }
    let report: Value = common::json(&runs.join("round2/high_recall/weights.json"));
    assert_eq!(
        report["loaded"], report["model_tensors"],
        "round 2 starts from round 1"
    );
    // Without background footage there is nothing to mine.
    let o = train(&data, &dir.path().join("runs2"), &["--hard-negatives", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--background"), "{}", stderr(&o));
}

/// `trident val` of exported models: the ensemble of a models folder and one ONNX alone, each
/// equal to `predict` + `eval` of the same models; an ONNX without its card is refused.
#[test]
fn val_of_an_ensemble_and_of_one_onnx_equals_predict_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 16, 31);
    let yaml = data.join("dataset.yaml");
    let names = names_of(&data);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (models, _) = trident_e2e::fixture_models(
        dir.path(),
        &["high_recall", "balanced", "high_precision"],
        &names,
    );
    let val_json = |args: &[&str]| -> Value {
        let mut all = vec!["val", "--data", s(&yaml), "--backend", "tract", "--json"];
        all.extend_from_slice(args);
        let o = trident(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let val_images = data.join("images/val");
    let eval_of = |args: &[&str]| -> Value {
        let preds = dir.path().join("preds.json");
        let mut all = vec![
            "predict",
            "--source",
            s(&val_images),
            "--out",
            s(&preds),
            "--backend",
            "tract",
        ];
        all.extend_from_slice(args);
        let o = trident(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = trident(&[
            "eval",
            "--data",
            s(&yaml),
            "--predictions",
            s(&preds),
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let ensemble = val_json(&["--models", s(&models)]);
    let reference = eval_of(&["--models", s(&models)]);
    assert_eq!(ensemble["evaluation"]["map50"], reference["map50"]);
    assert_eq!(
        ensemble["evaluation"]["predictions"],
        reference["predictions"]
    );
    assert!(ensemble["model"].as_str().unwrap().starts_with("models "));

    let onnx = models.join("balanced.onnx");
    let single = val_json(&["--onnx", s(&onnx)]);
    assert!(single["model"].as_str().unwrap().starts_with("ONNX "));
    assert!(single["evaluation"]["predictions"].as_u64().is_some());

    let bare = dir.path().join("bare.onnx");
    std::fs::copy(&onnx, &bare).unwrap();
    let o = trident(&["val", "--onnx", s(&bare), "--data", s(&yaml)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no model card"), "{}", stderr(&o));
}
