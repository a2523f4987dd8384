//! `trident select`: active learning's selection step — the models run over an unlabelled pool,
//! each frame is scored (`trident_data::active`), and the most informative ones go into an
//! annotation package for a labelling service.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use trident_core::blame::Usage;
use trident_core::dataset::{DatasetConfig, Split};
use trident_core::postprocess::NmsOptions;
use trident_core::prediction::Prediction;
use trident_data::active::{Frame, PackageOptions, Strategy, select, write_package};
use trident_trainer::predict::{Predictor, list_source};
use trident_trainer::train::select_device;

use crate::cli::{FuseMethod, SelectArgs, StrategyArg};
use crate::predict::{EnsembleSettings, start_ensemble};
use crate::ui::progress;

/// Example crops per class in the guidelines, and their longest side.
const EXAMPLES_PER_CLASS: usize = 3;
const EXAMPLE_SIDE: u32 = 128;

pub fn run(a: SelectArgs) -> anyhow::Result<ExitCode> {
    let strategy = match a.strategy {
        StrategyArg::Uncertainty => {
            let [lo, hi] = a.band[..] else {
                return Err(Usage(format!(
                    "--band: expected two scores low,high; got {}",
                    a.band.len()
                ))
                .into());
            };
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo >= hi {
                return Err(Usage(format!("--band {lo},{hi}: expected 0 ≤ low < high ≤ 1")).into());
            }
            Strategy::Uncertainty { lo, hi }
        }
        StrategyArg::Entropy => Strategy::Entropy,
        StrategyArg::Disagreement => {
            if a.models.is_none() && a.checkpoint.len() < 2 {
                return Err(Usage(
                    "--strategy disagreement compares models: pass --models (the ensemble) or two or more --checkpoint".into(),
                )
                .into());
            }
            Strategy::Disagreement
        }
    };
    if a.num == 0 {
        return Err(Usage("--num: must be at least 1".into()).into());
    }
    if a.out.extension().is_none_or(|e| e != "zip") {
        return Err(Usage(format!(
            "--out {}: the annotation package is a .zip file",
            a.out.display()
        ))
        .into());
    }
    let dataset = a.data.as_deref().map(DatasetConfig::load).transpose()?;
    let images = list_source(&a.source)?;
    if images.is_empty() {
        return Err(Usage(format!("--source {}: no images", a.source.display())).into());
    }

    let (frames, names, model) = if a.checkpoint.is_empty() {
        ensemble_frames(&a, &images)?
    } else {
        checkpoint_frames(&a, &images)?
    };
    if let Some(ds) = &dataset
        && ds.names != names
    {
        return Err(Usage(format!(
            "{} names {} but the models detect {}",
            a.data.as_ref().expect("loaded").display(),
            ds.names.join(", "),
            names.join(", ")
        ))
        .into());
    }
    let selected = select(&frames, strategy, a.num);
    let examples = match &dataset {
        Some(ds) => examples_from_dataset(ds)?,
        None => examples_from_detections(&frames, &selected, names.len()),
    };
    let opts = PackageOptions {
        out: a.out.clone(),
        names: names.clone(),
        pre_annotation_conf: f64::from(a.pre_annotation_conf),
        strategy,
        examples,
        model: model.clone(),
    };
    let report = write_package(&frames, &selected, &opts)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let positive = frames
        .iter()
        .filter(|f| trident_data::active::score(f, strategy) > 0.0)
        .count();
    println!(
        "{} of {} frames selected by {} ({positive} had anything to learn from; scores {}), {} pre-annotations → {} ({:.1} MiB)",
        report.frames,
        frames.len(),
        strategy.name(),
        match (selected.first(), selected.last()) {
            (Some(hi), Some(lo)) => format!("{:.3}–{:.3}", lo.1, hi.1),
            _ => "-".into(),
        },
        report.pre_annotations,
        a.out.display(),
        report.bytes as f64 / (1 << 20) as f64
    );
    Ok(ExitCode::SUCCESS)
}

fn group_by_stem(preds: Vec<Prediction>) -> HashMap<String, Vec<Prediction>> {
    let mut by: HashMap<String, Vec<Prediction>> = HashMap::new();
    for p in preds {
        by.entry(p.image.clone()).or_default().push(p);
    }
    by
}

fn stem(p: &std::path::Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn checkpoint_frames(
    a: &SelectArgs,
    images: &[PathBuf],
) -> anyhow::Result<(Vec<Frame>, Vec<String>, String)> {
    let device = select_device(&a.run.device)?;
    let opts = NmsOptions {
        iou: a.run.iou,
        max_det: a.run.max_det,
        ..NmsOptions::inference(a.conf)
    };
    let mut per_checkpoint = Vec::new();
    let mut names: Option<Vec<String>> = None;
    for ck in &a.checkpoint {
        let predictor = Predictor::load(ck, device)?;
        match &names {
            Some(n) if *n != predictor.meta.spec.names => {
                return Err(Usage(format!(
                    "{} detects {} but {} detects {}",
                    ck.display(),
                    predictor.meta.spec.names.join(", "),
                    a.checkpoint[0].display(),
                    n.join(", ")
                ))
                .into());
            }
            _ => names = Some(predictor.meta.spec.names.clone()),
        }
        let bar = progress("predict");
        let (preds, _) = predictor.predict_images(images, &opts, a.run.batch, &bar)?;
        bar.finish_and_clear();
        per_checkpoint.push(group_by_stem(preds));
    }
    let mut frames = Vec::new();
    for img in images {
        let Ok((width, height)) = image::image_dimensions(img) else {
            continue;
        };
        let s = stem(img);
        let per_model: Vec<Vec<Prediction>> = per_checkpoint
            .iter()
            .map(|m| m.get(&s).cloned().unwrap_or_default())
            .collect();
        frames.push(Frame {
            image: img.clone(),
            width,
            height,
            detections: per_model[0].clone(),
            per_model,
        });
    }
    let model = a
        .checkpoint
        .iter()
        .map(|c| c.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok((frames, names.unwrap_or_default(), model))
}

fn ensemble_frames(
    a: &SelectArgs,
    images: &[PathBuf],
) -> anyhow::Result<(Vec<Frame>, Vec<String>, String)> {
    use trident_infer::deployment::{Deployment, ModelsFrom, TablesChoice};
    let dir = a.models.as_ref().expect("clap requires a model");
    let deployment = Deployment::load(ModelsFrom::Dir(dir), TablesChoice::Auto)?;
    let settings = EnsembleSettings {
        backend: &a.run.backend,
        fusion: FuseMethod::Wbf,
        fusion_iou: 0.55,
        iou: a.run.iou,
        max_det: a.run.max_det,
        conf: Some(a.conf),
        tta: false,
    };
    let mut ensemble = start_ensemble(&deployment, &settings)?;
    let bar = progress("predict");
    bar.set_length(images.len() as u64);
    let mut frames = Vec::new();
    for path in images {
        bar.inc(1);
        let Some(img) = crate::predict::decode_or_skip(path) else {
            continue;
        };
        let out = ensemble
            .detect(img.as_raw(), img.width(), img.height(), None, false)
            .with_context(|| format!("{}", path.display()))?;
        let s = stem(path);
        let to_preds = |ds: &[trident_core::postprocess::Detection]| -> Vec<Prediction> {
            ds.iter()
                .map(|d| Prediction {
                    image: s.clone(),
                    class: d.class,
                    score: f64::from(d.score),
                    bbox: d.bbox.to_xywh().to_array(),
                })
                .collect()
        };
        frames.push(Frame {
            image: path.clone(),
            width: img.width(),
            height: img.height(),
            detections: to_preds(&out.fused),
            per_model: out
                .per_model
                .iter()
                .map(|m| m.as_deref().map(to_preds).unwrap_or_default())
                .collect(),
        });
    }
    bar.finish_and_clear();
    let members: Vec<String> = ensemble.members.iter().map(|m| m.name.clone()).collect();
    Ok((
        frames,
        deployment.set.names.clone(),
        format!("the ensemble {} ({})", dir.display(), members.join(", ")),
    ))
}

/// Up to three of the largest labelled boxes of each class from the train split.
fn examples_from_dataset(ds: &DatasetConfig) -> anyhow::Result<Vec<(usize, image::RgbImage)>> {
    let bar = indicatif::ProgressBar::hidden();
    let truths = trident_data::truth::load_ground_truth(ds, Split::Train, &bar)?;
    let paths: HashMap<String, PathBuf> = ds
        .list_images(Split::Train)?
        .into_iter()
        .map(|e| (e.stem, e.image))
        .collect();
    let mut candidates: Vec<Vec<(f64, String, [f64; 4])>> = vec![Vec::new(); ds.names.len()];
    for t in &truths {
        for (class, b) in &t.boxes {
            if let Some(c) = candidates.get_mut(*class) {
                c.push((b.w * b.h, t.stem.clone(), b.to_array()));
            }
        }
    }
    let mut out = Vec::new();
    for (class, mut c) in candidates.into_iter().enumerate() {
        c.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, s, bbox) in c.into_iter().take(EXAMPLES_PER_CLASS) {
            if let Some(img) = paths.get(&s).and_then(|p| image::open(p).ok()) {
                out.push((class, crop(&img.into_rgb8(), bbox)));
            }
        }
    }
    Ok(out)
}

/// The most confident detections of each class among the selected frames.
fn examples_from_detections(
    frames: &[Frame],
    selected: &[(usize, f64)],
    classes: usize,
) -> Vec<(usize, image::RgbImage)> {
    let mut candidates: Vec<Vec<(f64, usize, [f64; 4])>> = vec![Vec::new(); classes];
    for &(i, _) in selected {
        for d in &frames[i].detections {
            if let Some(c) = candidates.get_mut(d.class) {
                c.push((d.score, i, d.bbox));
            }
        }
    }
    let mut out = Vec::new();
    for (class, mut c) in candidates.into_iter().enumerate() {
        c.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, i, bbox) in c.into_iter().take(EXAMPLES_PER_CLASS) {
            if let Ok(img) = image::open(&frames[i].image) {
                out.push((class, crop(&img.into_rgb8(), bbox)));
            }
        }
    }
    out
}

fn crop(img: &image::RgbImage, [x, y, w, h]: [f64; 4]) -> image::RgbImage {
    let x0 = (x.max(0.0) as u32).min(img.width().saturating_sub(1));
    let y0 = (y.max(0.0) as u32).min(img.height().saturating_sub(1));
    let cw = (w.ceil() as u32).clamp(1, img.width() - x0);
    let ch = (h.ceil() as u32).clamp(1, img.height() - y0);
    let c = image::imageops::crop_imm(img, x0, y0, cw, ch).to_image();
    let scale = f64::from(EXAMPLE_SIDE) / f64::from(cw.max(ch));
    if scale >= 1.0 {
        return c;
    }
    image::imageops::resize(
        &c,
        ((f64::from(cw) * scale) as u32).max(1),
        ((f64::from(ch) * scale) as u32).max(1),
        image::imageops::FilterType::Triangle,
    )
}
