//! The demo's active-learning round (the core seed's weeks 2–4 at toy scale): the balanced
//! baseline → `trident select` ranks an unlabelled pool of field footage
//! (`configs/demo/field.yaml`) → the pool's synthetic ground truth stands in for the annotators,
//! returned as COCO as a labelling service would → `trident data import` → fine-tune from the
//! baseline with `--weights` → `trident val` on the field test split before and after.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::demo::{Demo, Stage, num, read_json, run_cmd};
use crate::demo_cache::Inputs;
use crate::demo_floors::{self as floors, Verdict};
use crate::root;

const FIELD: &str = "configs/demo/field.yaml";
/// Frames sent for annotation out of the pool's 240.
const SELECT: usize = 60;
/// The fine-tuning's epoch cap (the config's target can stop it sooner).
const FINE_TUNE_EPOCHS: &str = "4";
/// The class whose recall the round reports separately (the demo's critical species).
const CRITICAL: &str = "lionfish";

pub fn run(d: &mut Demo) -> Result<()> {
    let t = Instant::now();
    let field = d.dir.join("field");
    run_cmd(&mut d.trident(&[
        "data",
        "synth",
        "--config",
        FIELD,
        "--out",
        "demo/field",
        "--force",
    ]))?;
    let active = d.dir.join("active");
    std::fs::create_dir_all(&active)?;
    let package = active.join("annotation-package.zip");
    run_cmd(&mut d.trident(&[
        "select",
        "--checkpoint",
        "demo/runs/balanced/best.safetensors",
        "--source",
        "demo/field/images/train",
        "--num",
        &SELECT.to_string(),
        "--strategy",
        "uncertainty",
        "--data",
        "demo/dataset/dataset.yaml",
        "--out",
        "demo/active/annotation-package.zip",
    ]))?;
    let selected = unpack(&package, &active.join("package"))?;
    // The annotators: the pool's ground truth for exactly the frames sent, as COCO.
    let answer = active.join("annotations.json");
    std::fs::write(
        &answer,
        serde_json::to_string_pretty(&annotators(&selected, &field)?)?,
    )?;
    run_cmd(&mut d.trident(&[
        "data",
        "import",
        "--coco",
        "demo/active/annotations.json",
        "--images",
        "demo/active/package/images",
        "--data",
        "demo/dataset/dataset.yaml",
        "--out",
        "demo/active/imported",
        "--force",
    ]))?;
    let names =
        trident_core::dataset::DatasetConfig::load(&d.dir.join("dataset/dataset.yaml"))?.names;
    let finetune_yaml = active.join("finetune.yaml");
    std::fs::write(
        &finetune_yaml,
        format!(
            "# The demo's training split plus the imported field frames; validated on the field's val split.\n\
             train: [{}, {}]\nval: {}\nnames: [{}]\n",
            d.dir.join("dataset/images/train").display(),
            active.join("imported/images").display(),
            field.join("images/val").display(),
            names.join(", ")
        ),
    )?;
    let args = [
        "train",
        "--config",
        crate::demo::TRAINING,
        "--variant",
        "balanced",
        "--data",
        "demo/active/finetune.yaml",
        "--weights",
        "demo/runs",
        "--epochs",
        FINE_TUNE_EPOCHS,
        "--out",
        "demo/active/runs",
        "--exist-ok",
    ];
    let inputs = Inputs::new("fine-tune")
        .text(&args.join(" "))
        .file(&d.bin.join("trident"))?
        .file(&root().join(crate::demo::TRAINING))?
        .file(&d.dir.join("runs/balanced/best.safetensors"))?
        .dir(&active.join("imported"))?
        .dir(&field.join("images/val"))?;
    let tuned = active.join("runs/balanced/best.safetensors");
    let reused = d.cached("fine-tune", inputs, std::slice::from_ref(&tuned), || {
        run_cmd(&mut d.trident(&args))
    })?;
    let before = val(d, "demo/runs/balanced/best.safetensors")?;
    let after = val(d, "demo/active/runs/balanced/best.safetensors")?;
    let report = read_json(&active.join("runs/balanced/weights.json"))?;
    let (verdict, line) = floors::active_round(
        num(&before["evaluation"]["map50"]),
        num(&after["evaluation"]["map50"]),
    );
    d.push(Stage::new(
        "active learning",
        verdict,
        format!(
            "{} of {} field frames selected by uncertainty → demo/active/annotation-package.zip; \
             imported {} boxes; balanced fine-tuned from demo/runs ({} of {} tensors loaded){}",
            selected.len(),
            count_files(&field.join("images/train")),
            count_boxes(&active.join("imported/labels")),
            report["loaded"],
            report["model_tensors"],
            if reused { ", reused" } else { "" }
        ),
        t.elapsed().as_secs_f64(),
    ));
    for (name, v) in [("before", &before), ("after", &after)] {
        d.push(Stage::detail(
            name,
            Verdict::None,
            format!(
                "field test split: mAP50 {:.3}, mAP50-95 {:.3}, {CRITICAL} recall {:.3} at conf {:.2}",
                num(&v["evaluation"]["map50"]),
                num(&v["evaluation"]["map50_95"]),
                num(&v["critical_recall"][0]["recall"]),
                num(&v["operating_conf"])
            ),
        ));
    }
    d.push(Stage::detail("", verdict, line));
    Ok(())
}

fn val(d: &Demo, checkpoint: &str) -> Result<Value> {
    let out = d
        .trident(&[
            "val",
            "--checkpoint",
            checkpoint,
            "--data",
            "demo/field/dataset.yaml",
            "--split",
            "test",
            "--critical",
            CRITICAL,
            "--json",
        ])
        .output()
        .context("running trident val")?;
    if !out.status.success() {
        bail!(
            "trident val --checkpoint {checkpoint} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A frame of the package: its file name there, the pool's stem, width and height.
type Selected = (String, String, u32, u32);

/// Extracts the package's images into `dir/images`; returns the selected frames.
fn unpack(package: &Path, dir: &Path) -> Result<Vec<Selected>> {
    let _ = std::fs::remove_dir_all(dir);
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    let mut zip = zip::ZipArchive::new(
        std::fs::File::open(package).with_context(|| format!("opening {}", package.display()))?,
    )?;
    let mut coco = String::new();
    zip.by_name("annotations.json")?.read_to_string(&mut coco)?;
    let coco: Value = serde_json::from_str(&coco)?;
    let mut selected = Vec::new();
    for im in coco["images"]
        .as_array()
        .context("annotations.json: images")?
    {
        let name = im["file_name"].as_str().context("file_name")?.to_string();
        let mut bytes = Vec::new();
        zip.by_name(&format!("images/{name}"))?
            .read_to_end(&mut bytes)?;
        std::fs::write(images.join(&name), bytes)?;
        // `select` names frames `<rank>_<original file>`.
        let original = name.split_once('_').map_or(name.as_str(), |(_, o)| o);
        let stem = Path::new(original)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        selected.push((
            name.clone(),
            stem,
            num(&im["width"]) as u32,
            num(&im["height"]) as u32,
        ));
    }
    Ok(selected)
}

/// What the annotators return: the pool's own labels of the selected frames, as COCO boxes in
/// pixels with the dataset's class ids.
fn annotators(selected: &[Selected], field: &Path) -> Result<Value> {
    let names = trident_core::dataset::DatasetConfig::load(&field.join("dataset.yaml"))?.names;
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (i, (file, stem, w, h)) in selected.iter().enumerate() {
        images.push(json!({"id": i + 1, "file_name": file, "width": w, "height": h}));
        let label = field.join("labels/train").join(format!("{stem}.txt"));
        let text = std::fs::read_to_string(&label)
            .with_context(|| format!("reading {}", label.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Vec<f64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: {line}", label.display()))?;
            let (fw, fh) = (f64::from(*w), f64::from(*h));
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": i + 1,
                "category_id": v[0] as usize,
                "bbox": [(v[1] - v[3] / 2.0) * fw, (v[2] - v[4] / 2.0) * fh, v[3] * fw, v[4] * fh],
                "area": v[3] * fw * v[4] * fh,
                "iscrowd": 0,
            }));
        }
    }
    let categories: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": i, "name": n}))
        .collect();
    Ok(json!({"images": images, "annotations": annotations, "categories": categories}))
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| r.count())
}

fn count_boxes(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| {
        r.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
            .sum()
    })
}
