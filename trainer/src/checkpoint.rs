//! Checkpoints to and from tch. The file contract (layout, header, atomic writes) lives in
//! [`trident_core::checkpoint`] so that readers need no libtorch; this module converts tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use trident_core::checkpoint::{CheckpointFile, NamedTensor};
pub use trident_core::checkpoint::{CheckpointMeta, FORMAT, TrainingState};

use crate::error::Result;

/// Writes `tensors` (name → tensor, any device) and `meta` to `path` atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &CheckpointMeta) -> Result<()> {
    let mut values: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        values.push((name.clone(), shape, Vec::try_from(t.view(-1))?));
    }
    let named: Vec<NamedTensor<'_>> = values
        .iter()
        .map(|(name, shape, v)| NamedTensor {
            name,
            shape: shape.clone(),
            values: v,
        })
        .collect();
    trident_core::checkpoint::write(path, &named, meta)?;
    Ok(())
}

/// A checkpoint read into memory and validated.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    file: CheckpointFile,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let file = CheckpointFile::open(path)?;
        Ok(Checkpoint {
            path: file.path.clone(),
            meta: file.meta.clone(),
            file,
        })
    }

    /// Every tensor as flat float32 values by name (for comparisons and tools).
    pub fn tensors_f32(&self) -> Result<HashMap<String, Vec<f32>>> {
        let mut out = HashMap::new();
        for name in self.file.names() {
            let (_, v) = self.file.tensor_f32(&name, None)?;
            out.insert(name, v);
        }
        Ok(out)
    }

    /// Copies `<prefix><name>` into every variable of `vars`, checking presence, dtype and shape.
    pub fn restore(&self, prefix: &str, vars: &HashMap<String, Tensor>) -> Result<()> {
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let target = &vars[name];
            let expected: Vec<usize> = target.size().iter().map(|&d| d as usize).collect();
            let (_, bytes) = self
                .file
                .tensor_bytes(&format!("{prefix}{name}"), Some(&expected))?;
            let src = Tensor::from_data_size(bytes, &target.size(), Kind::Float);
            tch::no_grad(|| {
                target
                    .shallow_clone()
                    .copy_(&src.to_device(target.device()))
            });
        }
        Ok(())
    }
}

/// Every variable of `vars` under its own name prefixed by `prefix`, sorted by name.
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
    use trident_core::model_spec::ModelSpec;

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
