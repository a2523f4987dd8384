//! The checkpoint file contract: safetensors with the model spec and training state in the header.
//!
//! Written by the trainer, read by `trident predict`, the exporter and the calibration tools —
//! none of the readers needs libtorch. Layout (all tensors float32, little-endian):
//! - `model.*`: the deployable weights (the EMA of training) under Ultralytics' names, BatchNorm
//!   statistics included;
//! - `train.model.*`, `train.optim.<slot>.*`: raw weights and optimizer moments, only in `last`.
//!
//! Header metadata (`__metadata__`, strings): `format`, `spec` (JSON [`ModelSpec`]), `variant`,
//! `conf_floor`, `epoch`, `metrics` (JSON) and, in `last`, `training` (JSON [`TrainingState`]).
//! Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model_spec::ModelSpec;

pub const FORMAT: &str = "trident-detector/1";

/// What a checkpoint says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub spec: ModelSpec,
    pub variant: Option<String>,
    /// The variant's confidence floor, applied by the runtime.
    pub conf_floor: f32,
    /// Epochs completed.
    pub epoch: usize,
    pub metrics: Option<serde_json::Value>,
    pub training: Option<TrainingState>,
}

/// Everything beyond tensors that `--resume` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    pub ema_updates: u64,
    pub best_fitness: f64,
    pub best_epoch: usize,
    /// Epochs the schedule is planned for (changes under a time budget).
    pub planned_epochs: usize,
    /// Wall seconds spent so far over all sessions.
    pub elapsed_s: f64,
    /// The resolved variant config as JSON, to refuse a resume with different settings.
    pub config: serde_json::Value,
}

/// One tensor to write: name, shape and float32 values.
pub struct NamedTensor<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub values: &'a [f32],
}

/// Writes `tensors` and `meta` to `path` atomically.
pub fn write(path: &Path, tensors: &[NamedTensor<'_>], meta: &CheckpointMeta) -> Result<()> {
    let bad = |m: String| Error::invalid(format!("checkpoint {}", path.display()), m);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| TensorView::new(Dtype::F32, t.shape.clone(), b).map(|v| (t.name, v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert("spec".to_string(), json(&meta.spec));
    if let Some(v) = &meta.variant {
        info.insert("variant".to_string(), v.clone());
    }
    info.insert("conf_floor".to_string(), meta.conf_floor.to_string());
    info.insert("epoch".to_string(), meta.epoch.to_string());
    if let Some(m) = &meta.metrics {
        info.insert("metrics".to_string(), m.to_string());
    }
    if let Some(t) = &meta.training {
        info.insert("training".to_string(), json(t));
    }
    let out = safetensors::tensor::serialize(views, Some(info)).map_err(|e| bad(e.to_string()))?;
    crate::fsutil::write_atomic(path, &out)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

/// A checkpoint read into memory, its header parsed and every tensor's byte range checked.
pub struct CheckpointFile {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    bytes: Vec<u8>,
    /// Every tensor's dtype, shape and byte range in `bytes`, from one parse of the header.
    index: HashMap<String, (Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

impl CheckpointFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
        let location = format!("checkpoint {}", path.display());
        let bad = |m: String| Error::invalid(location.clone(), m);
        let unreadable = |e: safetensors::SafeTensorError| {
            bad(format!(
                "not a readable safetensors file ({e}); truncated or corrupt?"
            ))
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(unreadable)?;
        let index = SafeTensors::deserialize(&bytes)
            .map_err(unreadable)?
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                // Views borrow from `bytes`; keep their offsets instead of re-parsing later.
                let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
                let range = start..start + view.data().len();
                (name, (view.dtype(), view.shape().to_vec(), range))
            })
            .collect();
        let info = header.metadata().clone().ok_or_else(|| {
            bad("no trident metadata in the header (not written by trident train?)".into())
        })?;
        let field = |k: &str| {
            info.get(k)
                .ok_or_else(|| bad(format!("header field `{k}` is missing")))
        };
        let format = field("format")?;
        if format != FORMAT {
            return Err(bad(format!("format `{format}` is not `{FORMAT}`")));
        }
        let parse_json = |k: &str, text: &str| -> Result<serde_json::Value> {
            serde_json::from_str(text).map_err(|e| bad(format!("header field `{k}`: {e}")))
        };
        let spec: ModelSpec = serde_json::from_value(parse_json("spec", field("spec")?)?)
            .map_err(|e| bad(format!("header field `spec`: {e}")))?;
        spec.validate(&format!("{location}: spec"))?;
        let number = |k: &str| -> Result<f64> {
            field(k)?
                .parse()
                .map_err(|_| bad(format!("header field `{k}` is not a number")))
        };
        let training = match info.get("training") {
            Some(t) => Some(
                serde_json::from_value(parse_json("training", t)?)
                    .map_err(|e| bad(format!("header field `training`: {e}")))?,
            ),
            None => None,
        };
        let meta = CheckpointMeta {
            spec,
            variant: info.get("variant").cloned(),
            conf_floor: number("conf_floor")? as f32,
            epoch: number("epoch")? as usize,
            metrics: info
                .get("metrics")
                .map(|m| parse_json("metrics", m))
                .transpose()?,
            training,
        };
        Ok(CheckpointFile {
            path: path.to_path_buf(),
            meta,
            bytes,
            index,
        })
    }

    /// A float32 tensor's shape and little-endian bytes; `expected` (when given) must match.
    pub fn tensor_bytes(
        &self,
        name: &str,
        expected: Option<&[usize]>,
    ) -> Result<(Vec<usize>, &[u8])> {
        let location = || format!("checkpoint {}", self.path.display());
        let (dtype, shape, range) = self.index.get(name).ok_or_else(|| {
            Error::invalid(
                location(),
                match expected {
                    Some(s) => format!("tensor `{name}` is missing (expected shape {s:?})"),
                    None => format!("tensor `{name}` is missing"),
                },
            )
        })?;
        if *dtype != Dtype::F32 {
            return Err(Error::invalid(
                location(),
                format!("tensor `{name}` is {dtype:?}, expected F32"),
            ));
        }
        let shape = shape.clone();
        if let Some(s) = expected
            && s != shape.as_slice()
        {
            return Err(Error::invalid(
                location(),
                format!("tensor `{name}` has shape {shape:?} but the model expects {s:?}"),
            ));
        }
        Ok((shape, &self.bytes[range.clone()]))
    }

    /// A float32 tensor's shape and values.
    pub fn tensor_f32(
        &self,
        name: &str,
        expected: Option<&[usize]>,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, bytes) = self.tensor_bytes(name, expected)?;
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((shape, values))
    }

    /// Names of every tensor, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.index.keys().cloned().collect();
        n.sort();
        n
    }

    /// SHA-256 of the file's bytes (provenance for exported models).
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(&self.bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
