//! The model card: a JSON file beside every ONNX trident writes or imports. The edge runtime,
//! calibration and the package read models through it (names, input size, floor, hash), so it is
//! a contract between stages. No timestamps: a package built twice must be byte-identical.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const FORMAT: &str = "trident-model-card/1";

/// One dimension: fixed, or symbolic (`batch` with `--dynamic-batch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CardDim {
    Fixed(i64),
    Symbolic(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<CardDim>,
    pub dtype: String,
}

/// Where the model came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CardSource {
    /// `checkpoint` (exported by trident) or `onnx` (brought by the user).
    pub kind: String,
    /// File name of the source (no directories, so cards do not depend on where they were built).
    pub file: String,
    pub sha256: String,
}

/// How far one runtime's outputs are from the reference on the verification images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParityFigure {
    /// `tract`, `onnxruntime`.
    pub backend: String,
    /// What it was compared with: `tch` (the checkpoint's forward pass) or another backend.
    pub reference: String,
    pub images: usize,
    /// Largest absolute difference on box rows (pixels) and on class-score rows.
    pub max_abs_box: f32,
    pub max_abs_score: f32,
    pub passed: bool,
}

/// Detection quality on the verification split, evaluated through the runtime's code path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskFigure {
    /// Who produced the predictions: `tch`, `tract`, `tract-fp16-weights`.
    pub runner: String,
    pub map50: f64,
    pub map50_95: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Dataset YAML file name and split the figures were measured on.
    pub dataset: String,
    pub split: String,
    pub images: usize,
    pub parity: Vec<ParityFigure>,
    pub task: Vec<TaskFigure>,
    /// Backends that could not run here, with the reason (e.g. ONNX Runtime library missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Recall of the critical classes the export was gated on (`--min-recall`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recall: Vec<ClassRecall>,
}

/// One class's recall at IoU 0.5 among detections scored at least `conf` (the model's floor).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassRecall {
    pub class: String,
    pub conf: f32,
    /// `None` when the split holds no box of the class.
    pub recall: Option<f64>,
    /// The gate it had to pass.
    pub required: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    /// The ONNX file's name, beside this card.
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub opset: i64,
    /// `fp32`, or `fp16-weights` (float16 initializers, float32 IO and compute).
    pub precision: String,
    pub input: TensorInfo,
    pub output: TensorInfo,
    pub names: Vec<String>,
    pub imgsz: u32,
    pub strides: Vec<u32>,
    pub anchors: usize,
    pub variant: Option<String>,
    /// The confidence floor the runtime applies to this model.
    pub conf_floor: Option<f32>,
    pub source: CardSource,
    /// The checkpoint's own validation metrics from training.
    pub metrics: Option<serde_json::Value>,
    pub verification: Option<Verification>,
    /// TensorRT 8.2 lint findings accepted with `--allow-unsupported` (empty when clean).
    pub lint: Vec<String>,
    pub trident_version: String,
}

impl ModelCard {
    /// The card path for an ONNX path: `model.onnx` → `model.card.json`.
    pub fn path_for(onnx: &Path) -> std::path::PathBuf {
        onnx.with_extension("card.json")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let card: ModelCard = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: format!("not a trident model card: {e}"),
        })?;
        let location = || path.display().to_string();
        if card.format != FORMAT {
            return Err(Error::invalid(
                format!("{}: format", location()),
                format!("`{}`, expected `{FORMAT}`", card.format),
            ));
        }
        if card.names.is_empty() {
            return Err(Error::invalid(
                format!("{}: names", location()),
                "empty; a detection model has at least one class",
            ));
        }
        Ok(card)
    }

    /// Writes the card atomically (pretty JSON, trailing newline).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("model cards serialise");
        text.push('\n');
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}
