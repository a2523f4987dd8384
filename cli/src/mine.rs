//! `trident mine`: hard negatives for the next training round (`trident_data::mine`). The
//! checkpoint runs over a labelled split, whose false positives are counted, and over
//! background footage, whose frames with any detection are collected as background images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use trident_core::blame::Usage;
use trident_core::dataset::DatasetConfig;
use trident_core::postprocess::NmsOptions;
use trident_core::prediction::Prediction;
use trident_data::mine::{background_frames, false_positives, write_pool};
use trident_trainer::predict::{Predictor, list_source};
use trident_trainer::train::select_device;

use crate::cli::MineArgs;
use crate::ui::progress;

pub fn run(a: MineArgs) -> anyhow::Result<ExitCode> {
    if a.max_frames == Some(0) {
        return Err(Usage("--max-frames: must be at least 1".into()).into());
    }
    let dataset = a.data.as_deref().map(DatasetConfig::load).transpose()?;
    let predictor = Predictor::load(&a.checkpoint, select_device(&a.run.device)?)?;
    let names = predictor.meta.spec.names.clone();
    if let Some(ds) = &dataset
        && ds.names != names
    {
        return Err(Usage(format!(
            "{} detects {} but {} names {}",
            a.checkpoint.display(),
            names.join(", "),
            a.data.as_ref().expect("loaded").display(),
            ds.names.join(", ")
        ))
        .into());
    }
    let conf = a.conf.unwrap_or(predictor.meta.conf_floor);
    let opts = NmsOptions {
        iou: a.run.iou,
        max_det: a.run.max_det,
        ..NmsOptions::inference(conf)
    };
    let predict = |images: &[PathBuf], what: &'static str| -> anyhow::Result<Vec<Prediction>> {
        let bar = progress(what);
        let (preds, _) = predictor.predict_images(images, &opts, a.run.batch, &bar)?;
        bar.finish_and_clear();
        Ok(preds)
    };

    if let Some(ds) = &dataset {
        let bar = progress("labels");
        let truths = trident_data::truth::load_ground_truth(ds, a.split, &bar)?;
        bar.finish_and_clear();
        let images: Vec<PathBuf> = ds
            .list_images(a.split)?
            .into_iter()
            .map(|e| e.image)
            .collect();
        let preds = predict(&images, "predict")?;
        let mut by_stem: std::collections::HashMap<&str, Vec<Prediction>> = Default::default();
        for p in &preds {
            by_stem.entry(p.image.as_str()).or_default().push(p.clone());
        }
        let mut fp = 0usize;
        let mut with_fp = 0usize;
        for t in &truths {
            let n = false_positives(
                by_stem.get(t.stem.as_str()).map_or(&[][..], Vec::as_slice),
                t,
                f64::from(conf),
            )
            .len();
            fp += n;
            with_fp += usize::from(n > 0);
        }
        println!(
            "{} split of {}: {fp} false positives at conf ≥ {conf:.2} on {} images ({:.3} per image; {with_fp} images with any)",
            a.split,
            a.data.as_ref().expect("loaded").display(),
            truths.len(),
            fp as f64 / truths.len().max(1) as f64
        );
    }

    if a.source.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let out = a.out.as_ref().expect("clap: --source requires --out");
    let mut images = Vec::new();
    for dir in &a.source {
        images.extend(list_source(dir)?);
    }
    if images.is_empty() {
        return Err(Usage("--source: no images in the background footage".into()).into());
    }
    let preds = predict(&images, "background")?;
    let mut by_stem: std::collections::HashMap<String, Vec<Prediction>> = Default::default();
    for p in preds {
        by_stem.entry(p.image.clone()).or_default().push(p);
    }
    let frames: Vec<(PathBuf, Vec<Prediction>)> = images
        .iter()
        .map(|i| {
            let stem = i
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (i.clone(), by_stem.remove(&stem).unwrap_or_default())
        })
        .collect();
    let mut mined = background_frames(&frames, f64::from(conf));
    let total_fp: usize = mined.iter().map(|m| m.false_positives).sum();
    if let Some(max) = a.max_frames {
        mined.truncate(max);
    }
    let extra: Vec<(&str, String)> = match &dataset {
        Some(ds) => vec![("dataset.yaml", dataset_yaml(ds, out))],
        None => Vec::new(),
    };
    write_pool(
        &mined,
        &names,
        out,
        &a.prefix,
        a.force,
        crate::data::file_mode(a.mode),
        &extra,
    )
    .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "background: {total_fp} false positives at conf ≥ {conf:.2} on {} frames ({:.3} per frame); {} frames → {}{}",
        images.len(),
        total_fp as f64 / images.len() as f64,
        mined.len(),
        out.display(),
        if dataset.is_some() {
            format!(" (train on {})", out.join("dataset.yaml").display())
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `<out>/dataset.yaml`: the dataset's splits, with the mined frames as one more train source.
fn dataset_yaml(ds: &DatasetConfig, out: &std::path::Path) -> String {
    use trident_core::dataset::Split;
    let list = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| {
                format!(
                    "\"{}\"",
                    std::path::absolute(p).unwrap_or(p.clone()).display()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut train: Vec<PathBuf> = ds.sources(Split::Train).to_vec();
    train.push(
        std::path::absolute(out)
            .unwrap_or(out.to_path_buf())
            .join("images"),
    );
    let mut text = format!(
        "# {} with the hard negatives mined into this folder (`trident mine`).\ntrain: [{}]\n",
        ds.yaml_path.display(),
        list(&train)
    );
    for split in [Split::Val, Split::Test] {
        if ds.has_split(split) {
            text.push_str(&format!("{split}: [{}]\n", list(ds.sources(split))));
        }
    }
    text.push_str("names:\n");
    for (i, n) in ds.names.iter().enumerate() {
        text.push_str(&format!("  {i}: \"{n}\"\n"));
    }
    text
}
