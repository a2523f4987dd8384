//! Checkpoints: safetensors files with the model spec and training state in the header.
//!
//! Layout (all tensors float32):
//! - `model.*`: the deployable weights (the EMA of training), Ultralytics names, BN statistics
//!   included. This is all `trident predict` and the exporter read.
//! - `train.model.*`, `train.optim.<slot>.*`: raw weights and optimizer moments, only in `last`,
//!   so `--resume` continues exactly where training stopped.
//!
//! Header metadata (`__metadata__`, strings): `format`, `spec` (JSON [`ModelSpec`]), `variant`,
//! `conf_floor`, `epoch`, `metrics` (JSON) and, in `last`, `training` (JSON [`TrainingState`]).
//! Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use trident_core::model_spec::ModelSpec;

use crate::error::{Error, Result};

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
    /// The resolved variant config as JSON, to detect a resume with different settings.
    pub config: serde_json::Value,
}

/// Writes `tensors` (name → tensor, any device) and `meta` to `path` atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &CheckpointMeta) -> Result<()> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let values: Vec<f32> = Vec::try_from(t.flatten(0, -1).view(-1))?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.clone(), shape, bytes));
    }
    let views: Vec<(&str, TensorView<'_>)> = buffers
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.as_str(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
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
    let bytes = safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    trident_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

/// A checkpoint read into memory and validated.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    bytes: Vec<u8>,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| trident_core::Error::io("cannot read", path, e))?;
        let bad = |m: String| Error::checkpoint(path, m);
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file ({e}); truncated or corrupt?"
            ))
        })?;
        // Also checks every tensor's byte range against the file size.
        SafeTensors::deserialize(&bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file ({e}); truncated or corrupt?"
            ))
        })?;
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
        let spec: ModelSpec = serde_json::from_str(field("spec")?)
            .map_err(|e| bad(format!("header field `spec`: {e}")))?;
        spec.validate(&format!("{}: spec", path.display()))?;
        let number = |k: &str| -> Result<f64> {
            field(k)?
                .parse()
                .map_err(|_| bad(format!("header field `{k}` is not a number")))
        };
        let meta = CheckpointMeta {
            spec,
            variant: info.get("variant").cloned(),
            conf_floor: number("conf_floor")? as f32,
            epoch: number("epoch")? as usize,
            metrics: match info.get("metrics") {
                Some(m) => Some(
                    serde_json::from_str(m)
                        .map_err(|e| bad(format!("header field `metrics`: {e}")))?,
                ),
                None => None,
            },
            training: match info.get("training") {
                Some(t) => Some(
                    serde_json::from_str(t)
                        .map_err(|e| bad(format!("header field `training`: {e}")))?,
                ),
                None => None,
            },
        };
        Ok(Checkpoint {
            path: path.to_path_buf(),
            meta,
            bytes,
        })
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in open")
    }

    /// Every tensor as flat float32 values by name (for comparisons and tools).
    pub fn tensors_f32(&self) -> Result<HashMap<String, Vec<f32>>> {
        let st = self.tensors();
        let mut out = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(Error::checkpoint(
                    &self.path,
                    format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
                ));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.insert(name, values);
        }
        Ok(out)
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// Copies `<prefix><name>` into every variable of `vars`, checking presence, dtype and shape.
    pub fn restore(&self, prefix: &str, vars: &HashMap<String, Tensor>) -> Result<()> {
        let st = self.tensors();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let key = format!("{prefix}{name}");
            let target = &vars[name];
            let view = st.tensor(&key).map_err(|_| {
                Error::checkpoint(
                    &self.path,
                    format!(
                        "tensor `{key}` is missing (expected shape {:?})",
                        target.size()
                    ),
                )
            })?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != target.size() {
                return Err(Error::checkpoint(
                    &self.path,
                    format!(
                        "tensor `{key}` has shape {shape:?} but the model expects {:?}",
                        target.size()
                    ),
                ));
            }
            if view.dtype() != Dtype::F32 {
                return Err(Error::checkpoint(
                    &self.path,
                    format!("tensor `{key}` is {:?}, expected F32", view.dtype()),
                ));
            }
            let src = Tensor::from_data_size(view.data(), &shape, Kind::Float);
            tch::no_grad(|| {
                target
                    .shallow_clone()
                    .copy_(&src.to_device(target.device()))
            });
        }
        Ok(())
    }
}

/// Every variable of `vs` under its own name prefixed by `prefix`.
pub fn named(prefix: &str, vars: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.shallow_clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Detector;
    use tch::{Device, nn};

    fn spec() -> ModelSpec {
        ModelSpec::preset("tiny", vec!["a".into(), "b".into()], 64).unwrap()
    }

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            spec: spec(),
            variant: Some("balanced".into()),
            conf_floor: 0.25,
            epoch: 3,
            metrics: Some(serde_json::json!({"map50": 0.5})),
            training: None,
        }
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.safetensors");
        tch::manual_seed(1);
        let a = nn::VarStore::new(Device::Cpu);
        let _ma = Detector::new(&a.root(), &spec());
        save(&path, &named("", &a.variables()), &meta()).unwrap();
        tch::manual_seed(2);
        let b = nn::VarStore::new(Device::Cpu);
        let _mb = Detector::new(&b.root(), &spec());
        let ck = Checkpoint::open(&path).unwrap();
        assert_eq!(ck.meta, meta());
        ck.restore("", &b.variables()).unwrap();
        let (va, vb) = (a.variables(), b.variables());
        for (k, t) in &va {
            assert!(t.equal(&vb[k]), "{k} differs after the round trip");
        }
    }

    #[test]
    fn truncated_and_mismatched_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Detector::new(&vs.root(), &spec());
        save(&path, &named("", &vs.variables()), &meta()).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = Checkpoint::open(&cut).err().unwrap().to_string();
        assert!(
            err.contains("cut.safetensors") && err.contains("truncated"),
            "{err}"
        );

        // Same file, model with 3 classes: the class head no longer fits.
        let other =
            ModelSpec::preset("tiny", vec!["a".into(), "b".into(), "c".into()], 64).unwrap();
        let vs3 = nn::VarStore::new(Device::Cpu);
        let _m3 = Detector::new(&vs3.root(), &other);
        let err = Checkpoint::open(&path)
            .unwrap()
            .restore("", &vs3.variables())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.22.cv3.0.2.bias") && err.contains("[2]") && err.contains("[3]"),
            "{err}"
        );

        let err = Checkpoint::open(&path)
            .unwrap()
            .restore("train.", &vs.variables())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is missing"), "{err}");
    }
}
