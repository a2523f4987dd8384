//! `trident calibrate` as a library call: check every input, run the models, fit, and write the
//! output folder in one move (staged beside it, renamed into place; nothing on failure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use trident_core::calibration::{CalibrationTables, FILE_NAME};
use trident_core::dataset::{DatasetConfig, Split};
use trident_core::fsutil::StagingDir;
use trident_infer::OnnxDetector;
use trident_infer::backend::{self, BackendKind, BackendOptions, OnnxModel};
use trident_infer::models::ModelSet;

use crate::collect::{CalibModel, SplitImage, collect};
use crate::config::CalibrateConfig;
use crate::error::{Error, Result};
use crate::fit::fit;
use crate::metrics::Metrics;
use crate::plots::{PR_CURVES, RELIABILITY, pr_curves, reliability};

pub const REPORT: &str = "report.md";
pub const METRICS: &str = "metrics.json";

/// What to calibrate.
#[derive(Clone, Debug)]
pub struct CalibrateRequest {
    pub models: PathBuf,
    pub data: PathBuf,
    pub split: Split,
    pub out: PathBuf,
    pub config: CalibrateConfig,
    /// Where the config came from, for messages.
    pub config_origin: String,
    pub backends: Vec<BackendKind>,
    pub max_images: Option<usize>,
    /// Replace a non-empty output folder.
    pub force: bool,
}

/// What was written.
#[derive(Debug)]
pub struct Outcome {
    pub tables: CalibrationTables,
    pub metrics: Metrics,
    pub out: PathBuf,
    pub files: Vec<String>,
}

/// The models of a folder, checked, and the split's images with their ground truth.
pub fn load_inputs(
    req: &CalibrateRequest,
) -> Result<(Vec<String>, Vec<CalibModel>, Vec<SplitImage>)> {
    let set = ModelSet::load_dir(&req.models)?;
    let ds = DatasetConfig::load(&req.data)?;
    if ds.names != set.names {
        return Err(Error::input(
            format!("{}: field `names`", req.data.display()),
            format!(
                "the dataset names [{}], the models in {} name [{}]; calibrate on data labelled with the models' classes, in their order",
                ds.names.join(", "),
                req.models.display(),
                set.names.join(", ")
            ),
        ));
    }
    // An error is placed at its field in the config file, read again only then (the default
    // config has no file: its place is the origin alone).
    let origin = Path::new(&req.config_origin);
    req.config.check_against(
        &|field| {
            let text = std::fs::read_to_string(origin).unwrap_or_default();
            trident_core::yaml::place(&text, origin, field)
        },
        set.models.len(),
        &set.names,
    )?;
    let images = split_images(&ds, req.split, &req.data, req.max_images)?;
    let mut models = Vec::new();
    for m in &set.models {
        let side = m.card.imgsz as usize;
        let onnx = OnnxModel {
            path: &m.onnx_path,
            bytes: &m.bytes,
        };
        let b = backend::load_first(
            &req.backends,
            &onnx,
            [1, 3, side, side],
            &BackendOptions::default(),
        )?;
        tracing::info!("{}: {} at {side}×{side}", m.name(), b.kind());
        models.push(CalibModel {
            name: m.name().to_string(),
            sha256: m.card.sha256.clone(),
            floor: m.card.conf_floor.unwrap_or(0.25),
            detector: OnnxDetector::new(b, set.names.len())?,
        });
    }
    Ok((set.names.clone(), models, images))
}

/// The images of a split with their labels; refuses a split with no images or no objects.
pub fn split_images(
    ds: &DatasetConfig,
    split: Split,
    yaml: &Path,
    max_images: Option<usize>,
) -> Result<Vec<SplitImage>> {
    let entries = ds.list_images(split)?;
    let truths = trident_data::truth::load_ground_truth(ds, split, &ProgressBar::hidden())?;
    let mut images: Vec<SplitImage> = entries
        .into_iter()
        .zip(truths)
        .map(|(e, truth)| {
            debug_assert_eq!(e.stem, truth.stem);
            SplitImage {
                path: e.image,
                truth,
            }
        })
        .collect();
    if let Some(n) = max_images {
        images.truncate(n);
    }
    let location = format!("{}: split `{split}`", yaml.display());
    if images.is_empty() {
        return Err(Error::input(
            location,
            "has no images; calibration needs validation data",
        ));
    }
    if images.iter().all(|i| i.truth.boxes.is_empty()) {
        return Err(Error::input(
            location,
            "has no labelled objects; nothing to calibrate against",
        ));
    }
    Ok(images)
}

/// Checks the inputs, runs the models, fits and writes `req.out`.
pub fn calibrate(req: &CalibrateRequest, progress: &ProgressBar) -> Result<Outcome> {
    // Refuse a non-empty output folder before any work.
    let staging = StagingDir::new(&req.out, req.force)?;
    let (names, models, images) = load_inputs(req)?;
    let mut fitted_on = BTreeMap::new();
    fitted_on.insert("dataset".to_string(), req.data.display().to_string());
    fitted_on.insert("split".to_string(), req.split.to_string());
    fitted_on.insert("models".to_string(), req.models.display().to_string());
    calibrate_models(
        &names,
        models,
        &images,
        &req.config,
        fitted_on,
        staging,
        progress,
    )
}

/// [`calibrate`] on models already loaded (tests, tools with their own detectors).
pub fn calibrate_models(
    names: &[String],
    models: Vec<CalibModel>,
    images: &[SplitImage],
    config: &CalibrateConfig,
    fitted_on: BTreeMap<String, String>,
    staging: StagingDir,
    progress: &ProgressBar,
) -> Result<Outcome> {
    let collected = collect(names, models, images, &config.tta.candidates, progress)?;
    progress.finish_and_clear();
    let origin = fitted_on
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (tables, metrics) = fit(&collected, config, fitted_on)?;
    let dir = staging.path().to_path_buf();
    tables.save(&dir.join(FILE_NAME))?;
    let json = serde_json::to_vec_pretty(&metrics).expect("metrics serialise");
    trident_core::fsutil::write_atomic(&dir.join(METRICS), &json)?;
    reliability(&dir.join(RELIABILITY), &metrics)?;
    pr_curves(&dir.join(PR_CURVES), &metrics)?;
    let report = crate::report::render(&metrics, &origin);
    trident_core::fsutil::write_atomic(&dir.join(REPORT), report.as_bytes())?;
    let out = staging.commit()?;
    Ok(Outcome {
        tables,
        metrics,
        out,
        files: [FILE_NAME, REPORT, METRICS, RELIABILITY, PR_CURVES]
            .map(String::from)
            .to_vec(),
    })
}
