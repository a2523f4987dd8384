//! Verification of an exported graph on real images: numerical parity of raw outputs against a
//! reference (the checkpoint's tch forward pass, computed by the caller, or another backend) and
//! task parity (mAP of the decoded detections) on the validation split.
//!
//! Every runner's outputs go through the edge runtime's decoder and the same letterboxed inputs,
//! so the only thing that differs between two figures is the forward pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;
use trident_core::dataset::{DatasetConfig, ImageTruth, Split};
use trident_core::letterbox::{Letterbox, LetterboxPlan};
use trident_core::model_card::ParityFigure;
use trident_core::postprocess::{NmsOptions, decode};
use trident_core::prediction::Prediction;
use trident_eval::Evaluation;
use trident_infer::Backend;
use trident_infer::detector::to_source;

use crate::error::{Error, Result};

/// Scores are probabilities: 1e-4 absolute.
pub const SCORE_TOLERANCE: f32 = 1e-4;
/// Boxes are compared in the units the network computes them in — grid cells, i.e. pixels
/// divided by the stride of the anchor's level — to 1e-4. In pixels a box coordinate is
/// `(anchor ± DFL expectation) × stride`: two expectations of up to 15 bins that nearly cancel,
/// times up to 32, so a few float32 ulps of the expectations (which folding BatchNorm into some
/// 60 convolutions produces) show as ~1e-4 px on a 10 px value. Measured on trained tiny
/// models: ≤ 2e-5 grid units. A half-pixel anchor offset is 0.06 grid units at stride 8.
pub const BOX_TOLERANCE_GRID: f32 = 1e-4;

/// The stride of each anchor column of a `[.., 4 + nc, N]` output for a square input of `side`
/// (levels in order, row-major cells, as the YOLOv8 head concatenates them).
pub fn column_strides(side: u32, strides: &[u32]) -> Vec<f32> {
    strides
        .iter()
        .flat_map(|&s| {
            let cells = ((side / s) * (side / s)) as usize;
            std::iter::repeat_n(s as f32, cells)
        })
        .collect()
}

/// Letterboxed images of a dataset split with their ground truth.
pub struct VerifySet {
    pub dataset: PathBuf,
    pub split: Split,
    pub side: u32,
    pub truths: Vec<ImageTruth>,
    pub letterboxes: Vec<Letterbox>,
    /// CHW float32 in 0–1, one per image.
    pub inputs: Vec<Vec<f32>>,
}

impl VerifySet {
    /// The first `max_images` images of `split` (sorted by path), letterboxed to `side`.
    pub fn load(
        yaml: &Path,
        split: Split,
        side: u32,
        max_images: usize,
        progress: &ProgressBar,
    ) -> Result<Self> {
        let ds = DatasetConfig::load(yaml)?;
        let truths = trident_data::truth::load_ground_truth(&ds, split, &ProgressBar::hidden())?;
        let mut by_stem: HashMap<String, ImageTruth> =
            truths.into_iter().map(|t| (t.stem.clone(), t)).collect();
        let mut entries = ds.list_images(split)?;
        entries.sort_by(|a, b| a.image.cmp(&b.image));
        entries.truncate(max_images.max(1));
        progress.set_length(entries.len() as u64);
        let loaded: Vec<Result<(Letterbox, Vec<f32>)>> = entries
            .par_iter()
            .map(|e| {
                let img = image::open(&e.image)
                    .map_err(|err| {
                        Error::Option(format!("{}: cannot decode image: {err}", e.image.display()))
                    })?
                    .into_rgb8();
                let plan = LetterboxPlan::new(img.width(), img.height(), side, side);
                let mut chw = vec![0f32; (3 * side * side) as usize];
                plan.run(img.as_raw(), &mut chw);
                progress.inc(1);
                Ok((plan.geometry, chw))
            })
            .collect();
        let mut set = VerifySet {
            dataset: yaml.to_path_buf(),
            split,
            side,
            truths: Vec::with_capacity(entries.len()),
            letterboxes: Vec::with_capacity(entries.len()),
            inputs: Vec::with_capacity(entries.len()),
        };
        for (e, r) in entries.iter().zip(loaded) {
            let (geometry, chw) = r?;
            let stem = e
                .image
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let truth = by_stem.remove(&stem).ok_or_else(|| {
                Error::Option(format!("{}: no ground truth loaded", e.image.display()))
            })?;
            set.truths.push(truth);
            set.letterboxes.push(geometry);
            set.inputs.push(chw);
        }
        if set.inputs.is_empty() {
            return Err(Error::Option(format!(
                "{}: split `{split}` has no images to verify on",
                yaml.display()
            )));
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Raw `[1, 4 + nc, N]` outputs of a batch-1 backend for every image.
    pub fn run(&self, backend: &mut dyn Backend, progress: &ProgressBar) -> Result<Vec<Vec<f32>>> {
        progress.set_length(self.len() as u64);
        progress.set_position(0);
        let mut outputs = Vec::with_capacity(self.len());
        for input in &self.inputs {
            let mut out = Vec::new();
            backend.run(input, &mut out)?;
            outputs.push(out);
            progress.inc(1);
        }
        Ok(outputs)
    }

    /// COCO mAP of raw outputs, decoded with the validation NMS settings (conf 0.001).
    pub fn evaluate(&self, outputs: &[Vec<f32>], names: &[String]) -> Result<Evaluation> {
        let nc = names.len();
        let opts = NmsOptions::validation();
        let preds: Vec<Prediction> = outputs
            .par_iter()
            .zip(&self.truths)
            .zip(&self.letterboxes)
            .flat_map_iter(|((out, truth), geometry)| {
                let n = out.len() / (4 + nc);
                to_source(decode(out, nc, n, &opts), geometry)
                    .into_iter()
                    .map(|d| Prediction {
                        image: truth.stem.clone(),
                        class: d.class,
                        score: f64::from(d.score),
                        bbox: d.bbox.to_xywh().to_array(),
                    })
            })
            .collect();
        let index = trident_eval::match_predictions("verification", &self.truths, &preds, nc)?;
        Ok(trident_eval::evaluate(&self.truths, &preds, &index, names)?)
    }
}

/// Largest differences between two runs' raw outputs (`rows` = 4 + nc per anchor column).
pub fn compare(
    backend: &str,
    reference_name: &str,
    reference: &[Vec<f32>],
    got: &[Vec<f32>],
    rows: usize,
    column_stride: &[f32],
) -> Result<ParityFigure> {
    if reference.len() != got.len() {
        return Err(Error::Option(format!(
            "{backend}: {} outputs against {} reference outputs",
            got.len(),
            reference.len()
        )));
    }
    let (mut max_abs_box, mut max_abs_score, mut passed) = (0f32, 0f32, true);
    for (r, g) in reference.iter().zip(got) {
        if r.len() != g.len() || r.len() != rows * column_stride.len() {
            return Err(Error::Option(format!(
                "{backend}: output of {} values against a reference of {} ([1, {rows}, N] expected)",
                g.len(),
                r.len()
            )));
        }
        let n = r.len() / rows;
        for (i, (a, b)) in r.iter().zip(g).enumerate() {
            let d = (a - b).abs();
            if d.is_nan() {
                passed = false;
                continue;
            }
            if i / n < 4 {
                max_abs_box = max_abs_box.max(d);
                passed &= d / column_stride[i % n] <= BOX_TOLERANCE_GRID;
            } else {
                max_abs_score = max_abs_score.max(d);
                passed &= d <= SCORE_TOLERANCE;
            }
        }
    }
    Ok(ParityFigure {
        backend: backend.into(),
        reference: reference_name.into(),
        images: got.len(),
        max_abs_box,
        max_abs_score,
        passed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_strides_follow_the_head_levels() {
        let s = column_strides(64, &[8, 16, 32]);
        assert_eq!(s.len(), 64 + 16 + 4);
        assert_eq!(
            (s[0], s[63], s[64], s[79], s[80], s[83]),
            (8.0, 8.0, 16.0, 16.0, 32.0, 32.0)
        );
    }

    #[test]
    fn parity_judges_boxes_in_grid_cells_and_scores_absolutely() {
        // rows = 5 (4 box rows + 1 class), n = 2 anchors: one at stride 8, one at stride 32.
        let strides = [8.0, 32.0];
        let reference = vec![vec![
            10.0, 10.0, 20.0, 20.0, 30.0, 30.0, 40.0, 40.0, 0.5, 0.25,
        ]];
        let mut close = reference.clone();
        close[0][1] += 2.5e-3; // 7.8e-5 cells at stride 32
        close[0][9] += 5e-5;
        let f = compare("tract", "tch", &reference, &close, 5, &strides).unwrap();
        assert!(f.passed, "{f:?}");
        assert!((f.max_abs_box - 2.5e-3).abs() < 1e-5 && (f.max_abs_score - 5e-5).abs() < 1e-6);

        let mut far = reference.clone();
        far[0][0] += 2.5e-3; // 3.1e-4 cells at stride 8
        assert!(
            !compare("tract", "tch", &reference, &far, 5, &strides)
                .unwrap()
                .passed
        );
        let mut far_score = reference.clone();
        far_score[0][8] += 2e-4;
        assert!(
            !compare("tract", "tch", &reference, &far_score, 5, &strides)
                .unwrap()
                .passed
        );
        let mut nan = reference.clone();
        nan[0][8] = f32::NAN;
        assert!(
            !compare("tract", "tch", &reference, &nan, 5, &strides)
                .unwrap()
                .passed
        );
        assert!(compare("tract", "tch", &reference, &[vec![0.0; 5]], 5, &strides).is_err());
    }
}

/// Raw outputs of the source model on a [`VerifySet`], e.g. the checkpoint's tch forward pass.
pub struct Reference {
    pub name: String,
    pub outputs: Vec<Vec<f32>>,
}

/// What verification runs and accepts.
#[derive(Clone, Debug)]
pub struct VerifySettings {
    /// Backends that run the graph; the first must load, later ones are skipped (and recorded)
    /// when their runtime is missing on this machine.
    pub backends: Vec<trident_infer::BackendKind>,
    /// Largest accepted |mAP50(ONNX) − mAP50(reference)|.
    pub task_tolerance: f64,
    /// Critical classes and the recall each must reach at the model's confidence floor on the
    /// verification images (the export fails below it).
    pub min_recall: Vec<(String, f64)>,
    pub threads: Option<usize>,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            backends: vec![
                trident_infer::BackendKind::Tract,
                trident_infer::BackendKind::OnnxRuntime,
            ],
            task_tolerance: 0.001,
            min_recall: Vec::new(),
            threads: None,
        }
    }
}

fn load_backend(
    kind: trident_infer::BackendKind,
    exported: &crate::export::Exported,
    side: u32,
    settings: &VerifySettings,
) -> trident_infer::Result<Box<dyn Backend>> {
    let s = side as usize;
    trident_infer::backend::load(
        kind,
        &trident_infer::backend::OnnxModel {
            path: Path::new(&exported.card.file),
            bytes: &exported.bytes,
        },
        [1, 3, s, s],
        &trident_infer::BackendOptions {
            threads: settings.threads,
            ..Default::default()
        },
    )
}

/// Runs `exported` on `set` with every configured backend and checks numerical parity (against
/// `reference`, or the first backend without one) and task parity (mAP50 within tolerance).
pub fn verify(
    exported: &crate::export::Exported,
    set: &VerifySet,
    reference: Option<&Reference>,
    settings: &VerifySettings,
    progress: &ProgressBar,
) -> Result<trident_core::model_card::Verification> {
    let names = &exported.card.names;
    let rows = 4 + names.len();
    let strides = column_strides(set.side, &exported.card.strides);
    let mut runs: Vec<(String, Vec<Vec<f32>>)> = Vec::new();
    let mut skipped = Vec::new();
    for (i, &kind) in settings.backends.iter().enumerate() {
        match load_backend(kind, exported, set.side, settings) {
            Ok(mut backend) => {
                progress.set_message(kind.name());
                runs.push((kind.name().into(), set.run(backend.as_mut(), progress)?));
            }
            // The first backend is the portable one: it must run.
            Err(e) if i == 0 => return Err(e.into()),
            Err(e) => {
                tracing::warn!("{}: verification skips {kind}: {e}", exported.card.file);
                skipped.push(format!("{kind}: {e}"));
            }
        }
    }
    let mut parity = Vec::new();
    for (idx, (name, outputs)) in runs.iter().enumerate() {
        let figure = match reference {
            Some(r) => compare(name, &r.name, &r.outputs, outputs, rows, &strides)?,
            None if idx > 0 => compare(name, &runs[0].0, &runs[0].1, outputs, rows, &strides)?,
            None => continue,
        };
        parity.push(figure);
    }
    let mut task = Vec::new();
    if set.truths.is_empty() {
        // Synthetic frames: numerical parity only.
    } else if let Some(r) = reference {
        let ev = set.evaluate(&r.outputs, names)?;
        task.push(trident_core::model_card::TaskFigure {
            runner: r.name.clone(),
            map50: ev.map50,
            map50_95: ev.map50_95,
        });
    }
    for (name, outputs) in runs.iter().filter(|_| !set.truths.is_empty()) {
        let ev = set.evaluate(outputs, names)?;
        task.push(trident_core::model_card::TaskFigure {
            runner: name.clone(),
            map50: ev.map50,
            map50_95: ev.map50_95,
        });
    }
    let mut recall = Vec::new();
    if !settings.min_recall.is_empty() {
        let Some((_, outputs)) = runs.first().filter(|_| !set.truths.is_empty()) else {
            return Err(Error::Verification(
                "--min-recall needs verification images with labels (a dataset)".into(),
            ));
        };
        let ev = set.evaluate(outputs, names)?;
        let conf = exported.card.conf_floor.unwrap_or(0.25);
        for (class, required) in &settings.min_recall {
            let idx = names.iter().position(|n| n == class).ok_or_else(|| {
                Error::Verification(format!(
                    "--min-recall: `{class}` is not a class of {} ({})",
                    exported.card.file,
                    names.join(", ")
                ))
            })?;
            recall.push(trident_core::model_card::ClassRecall {
                class: class.clone(),
                conf,
                recall: ev.recall_at(idx, f64::from(conf)),
                required: *required,
            });
        }
    }
    let verification = trident_core::model_card::Verification {
        dataset: set.dataset.display().to_string(),
        split: set.split.to_string(),
        images: set.len(),
        parity,
        task,
        skipped,
        recall,
    };
    check(&verification, settings.task_tolerance)?;
    Ok(verification)
}

/// Fails on any parity figure out of tolerance or a task figure away from the first one.
fn check(v: &trident_core::model_card::Verification, task_tolerance: f64) -> Result<()> {
    let mut problems = Vec::new();
    for p in v.parity.iter().filter(|p| !p.passed) {
        problems.push(format!(
            "{} differs from {} by up to {:.2e} px on boxes and {:.2e} on scores (tolerance {BOX_TOLERANCE_GRID:.0e} grid cells on boxes, {SCORE_TOLERANCE:.0e} on scores)",
            p.backend, p.reference, p.max_abs_box, p.max_abs_score
        ));
    }
    if let Some(first) = v.task.first() {
        for t in &v.task[1..] {
            if (t.map50 - first.map50).abs() > task_tolerance {
                problems.push(format!(
                    "mAP50 {:.4} with {} against {:.4} with {} (tolerance {task_tolerance})",
                    t.map50, t.runner, first.map50, first.runner
                ));
            }
        }
    }
    for r in &v.recall {
        match r.recall {
            Some(got) if got >= r.required => {}
            Some(got) => problems.push(format!(
                "recall of {} is {got:.3} at conf {:.2}, below --min-recall {}",
                r.class, r.conf, r.required
            )),
            None => problems.push(format!(
                "--min-recall {}: the verification images hold no {}, so its recall is unknown",
                r.class, r.class
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Verification(problems.join("; ")))
    }
}

/// Evaluates the FP16-weights twin with tract on `set`; fails when mAP50 drops more than
/// `max_drop_points` (percentage points) below `fp32_map50`.
pub fn verify_half(
    half: &crate::export::Exported,
    set: &VerifySet,
    fp32_map50: f64,
    max_drop_points: f64,
    progress: &ProgressBar,
) -> Result<trident_core::model_card::TaskFigure> {
    let settings = VerifySettings::default();
    let mut backend = load_backend(trident_infer::BackendKind::Tract, half, set.side, &settings)?;
    progress.set_message("fp16");
    let outputs = set.run(backend.as_mut(), progress)?;
    let ev = set.evaluate(&outputs, &half.card.names)?;
    let drop = (fp32_map50 - ev.map50) * 100.0;
    if drop > max_drop_points {
        return Err(Error::Verification(format!(
            "{}: mAP50 {:.4} with FP16 weights, {drop:.2} points below FP32 {fp32_map50:.4} (limit {max_drop_points} points, --fp16-max-drop)",
            half.card.file, ev.map50
        )));
    }
    Ok(trident_core::model_card::TaskFigure {
        runner: "tract-fp16-weights".into(),
        map50: ev.map50,
        map50_95: ev.map50_95,
    })
}

impl VerifySet {
    /// Deterministic pseudo-random frames without ground truth: numerical parity between
    /// backends for a model brought without a dataset.
    pub fn synthetic(side: u32, count: usize, seed: u64) -> Self {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            // PCG-style LCG step; the top 24 bits give a uniform value in [0, 1).
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let plane = (3 * side * side) as usize;
        let inputs = (0..count)
            .map(|_| (0..plane).map(|_| next()).collect())
            .collect();
        VerifySet {
            dataset: PathBuf::from("synthetic"),
            split: Split::Val,
            side,
            truths: Vec::new(),
            letterboxes: Vec::new(),
            inputs,
        }
    }
}
