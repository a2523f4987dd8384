//! Start weights for `trident train --weights`: fine-tuning from a trident checkpoint or from an
//! Ultralytics YOLOv8 state dict saved as safetensors (`safetensors.torch.save_file(
//! model.state_dict(), …)`), which uses the same tensor names as trident's model.
//!
//! Tensors are matched by name and shape, as Ultralytics' `intersect_dicts` does: what matches is
//! copied, what the file lacks or has in another shape keeps its fresh initialisation (the class
//! branch of the head when the class count differs), and what the model has no place for is
//! reported unused. A trident checkpoint also knows its class names: when they differ from the
//! dataset's, the class branch is re-initialised even if the count is the same, since its rows
//! would detect the wrong species. `--freeze N` then stops gradients in the first N layers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Serialize;
use tch::{Kind, Tensor};
use trident_core::checkpoint::{CheckpointFile, FORMAT};
use trident_core::model_spec::{LayerKind, ModelSpec};

use crate::error::{Error, Result};

/// What `--weights` loaded into the model, written to the run's `weights.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightsReport {
    pub source: PathBuf,
    /// `trident` (a checkpoint of `trident train`) or `state_dict` (plain safetensors).
    pub format: &'static str,
    /// Tensors copied from the file.
    pub loaded: usize,
    /// The model's tensors, by name.
    pub model_tensors: usize,
    /// Tensors that kept their fresh initialisation, with the reason.
    pub reinitialised: BTreeMap<String, String>,
    /// Tensors of the file the model has no place for.
    pub unused: Vec<String>,
    /// Layers whose parameters receive no gradient (`--freeze`).
    pub frozen_layers: usize,
    pub frozen_tensors: usize,
}

impl WeightsReport {
    /// One line for the log and the command's output.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "start weights {} ({}): {} of {} tensors loaded, {} re-initialised, {} unused",
            self.source.display(),
            self.format,
            self.loaded,
            self.model_tensors,
            self.reinitialised.len(),
            self.unused.len()
        );
        if self.frozen_layers > 0 {
            s.push_str(&format!(
                "; first {} layers frozen ({} tensors)",
                self.frozen_layers, self.frozen_tensors
            ));
        }
        s
    }
}

/// The start weights of `variant`: `path` itself, or `<path>/<variant>/best.safetensors` when
/// `path` is a folder of runs (each variant fine-tuned from its own baseline).
pub fn resolve(path: &Path, variant: &str) -> Result<PathBuf> {
    if path.is_dir() {
        let file = path.join(variant).join("best.safetensors");
        if !file.is_file() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "--weights names a folder, so it must hold a run of variant `{variant}` ({} is missing)",
                    file.display()
                ),
            ));
        }
        return Ok(file);
    }
    if !path.is_file() {
        return Err(Error::checkpoint(
            path,
            "--weights: no such file (expected a trident checkpoint, a safetensors state dict or a folder of runs)",
        ));
    }
    Ok(path.to_path_buf())
}

/// Checks that `path` is a file `--weights` can read (before any training starts); returns its
/// format (`trident` or `state_dict`).
pub fn peek(path: &Path) -> Result<&'static str> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::checkpoint(path, format!("cannot read: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| not_safetensors(path, e))?;
    SafeTensors::deserialize(&bytes).map_err(|e| not_safetensors(path, e))?;
    let is_trident = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format"))
        .is_some_and(|f| f == FORMAT);
    if is_trident {
        CheckpointFile::open(path)?;
        return Ok("trident");
    }
    Ok("state_dict")
}

fn not_safetensors(path: &Path, e: safetensors::SafeTensorError) -> Error {
    Error::checkpoint(
        path,
        format!(
            "not a safetensors file ({e}); --weights takes a trident checkpoint or a state dict saved with safetensors"
        ),
    )
}

/// Names of a state dict that have no variable in trident's model by design: BatchNorm's batch
/// counter and the DFL's fixed `arange` convolution (trident decodes the DFL in code).
fn fixed_in_trident(name: &str) -> bool {
    name.ends_with(".num_batches_tracked") || name.ends_with(".dfl.conv.weight")
}

/// Copies matching tensors of `path` into `vars` (the model's variables, `model.…` names).
pub fn load(
    path: &Path,
    vars: &HashMap<String, Tensor>,
    spec: &ModelSpec,
) -> Result<WeightsReport> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::checkpoint(path, format!("cannot read: {e}")))?;
    let unreadable = |e| not_safetensors(path, e);
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(unreadable)?;
    let is_trident = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format"))
        .is_some_and(|f| f == FORMAT);
    // A trident checkpoint is validated as one (its header, its spec); its class names decide
    // whether the class branch fits the dataset.
    let checkpoint_names = if is_trident {
        Some(CheckpointFile::open(path)?.meta.spec.names)
    } else {
        None
    };
    let file = SafeTensors::deserialize(&bytes).map_err(unreadable)?;
    let mut source: HashMap<String, safetensors::tensor::TensorView<'_>> = HashMap::new();
    for (name, view) in file.tensors() {
        // `last` checkpoints also hold the raw weights and optimizer state under `train.`.
        if is_trident && name.starts_with("train.") {
            continue;
        }
        source.insert(name, view);
    }
    // A state dict saved from the `YOLO` wrapper rather than its `.model` has one more `model.`.
    if !is_trident
        && !source.keys().any(|k| k.starts_with("model.0."))
        && source.keys().any(|k| k.starts_with("model.model.0."))
    {
        source = source
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("model.").unwrap_or(&k).to_string(), v))
            .collect();
    }

    let head = head_index(spec);
    let class_rows = format!("model.{head}.cv3.");
    let names_differ = checkpoint_names
        .as_ref()
        .filter(|n| **n != spec.names)
        .map(|n| format!("class names differ (the checkpoint's: {})", n.join(", ")));

    let mut report = WeightsReport {
        source: path.to_path_buf(),
        format: if is_trident { "trident" } else { "state_dict" },
        loaded: 0,
        model_tensors: vars.len(),
        reinitialised: BTreeMap::new(),
        unused: Vec::new(),
        frozen_layers: 0,
        frozen_tensors: 0,
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let target = &vars[name];
        let Some(view) = source.get(name.as_str()) else {
            report
                .reinitialised
                .insert(name.clone(), "not in the file".into());
            continue;
        };
        let want: Vec<usize> = target.size().iter().map(|&d| d as usize).collect();
        if view.shape() != want.as_slice() {
            report.reinitialised.insert(
                name.clone(),
                format!(
                    "shape {:?} in the file, {want:?} in the model",
                    view.shape()
                ),
            );
            continue;
        }
        if let Some(why) = &names_differ
            && is_class_output(name, &class_rows)
        {
            report.reinitialised.insert(name.clone(), why.clone());
            continue;
        }
        let values = to_f32(view.dtype(), view.data()).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!(
                    "tensor `{name}` is {:?}; expected F32, F16, BF16 or F64",
                    view.dtype()
                ),
            )
        })?;
        let src = Tensor::from_slice(&values).reshape(target.size());
        tch::no_grad(|| {
            target
                .shallow_clone()
                .copy_(&src.to_kind(Kind::Float).to_device(target.device()))
        });
        report.loaded += 1;
    }
    let mut unused: Vec<String> = source
        .keys()
        .filter(|k| !vars.contains_key(k.as_str()) && !fixed_in_trident(k))
        .cloned()
        .collect();
    unused.sort();
    report.unused = unused;

    // Fewer than half matching is not fine-tuning but another architecture or size (Ultralytics
    // would report "Transferred 12/355 items" and go on).
    if report.loaded * 2 < report.model_tensors {
        let mut sample: Vec<&String> = source.keys().collect();
        sample.sort();
        sample.truncate(3);
        return Err(Error::checkpoint(
            path,
            format!(
                "only {} of the model's {} tensors are in the file with the same name and shape (model preset `{}`; the file's first tensors: {}); set `model:` to the preset the weights were trained with",
                report.loaded,
                vars.len(),
                spec.preset.as_deref().unwrap_or("custom"),
                sample
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(report)
}

/// The class branch's output convolution: `model.<head>.cv3.<level>.2.{weight,bias}`.
fn is_class_output(name: &str, class_rows: &str) -> bool {
    name.strip_prefix(class_rows)
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(_, rest)| rest.starts_with("2."))
}

/// The index of the detection head in the layer list.
pub fn head_index(spec: &ModelSpec) -> usize {
    spec.layers()
        .into_iter()
        .find(|l| matches!(l.kind, LayerKind::Detect { .. }))
        .map(|l| l.index)
        .expect("every architecture ends in a detection head")
}

/// Stops gradients in layers `0..n` (Ultralytics' `freeze=N`); returns how many tensors.
pub fn freeze(vars: &HashMap<String, Tensor>, n: usize) -> usize {
    let mut frozen = 0;
    for (name, t) in vars {
        let layer = name
            .strip_prefix("model.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        if layer.is_some_and(|l| l < n) && t.requires_grad() {
            let _ = t.shallow_clone().set_requires_grad(false);
            frozen += 1;
        }
    }
    frozen
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointMeta, named, save};
    use crate::model::Detector;
    use tch::{Device, nn};

    fn spec(names: &[&str]) -> ModelSpec {
        ModelSpec::preset("tiny", names.iter().map(|n| n.to_string()).collect(), 64).unwrap()
    }

    fn model(names: &[&str], seed: i64) -> nn::VarStore {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Detector::new(&vs.root(), &spec(names));
        vs
    }

    /// A plain safetensors state dict of `vs` (as `safetensors.torch.save_file` writes one),
    /// in `dtype`, plus `extra` tensors.
    fn state_dict(vs: &nn::VarStore, half: bool, extra: &[(&str, Vec<usize>)]) -> Vec<u8> {
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in vs.variables() {
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let v: Vec<f32> = Vec::try_from(t.detach().view(-1)).unwrap();
            let bytes = if half {
                v.iter()
                    .flat_map(|x| ::half::f16::from_f32(*x).to_le_bytes())
                    .collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            data.push((name, shape, bytes));
        }
        for (name, shape) in extra {
            let n: usize = shape.iter().product();
            data.push((name.to_string(), shape.clone(), vec![0u8; n * 4]));
        }
        let dtype = |n: &str| {
            if half && !extra.iter().any(|(e, _)| *e == n) {
                Dtype::F16
            } else {
                Dtype::F32
            }
        };
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(dtype(n), s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::tensor::serialize(views, None).unwrap()
    }

    #[test]
    fn a_state_dict_loads_by_name_and_shape_and_a_new_class_count_restarts_the_class_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let src = model(&["a", "b"], 1);
        let file = dir.path().join("yolo.safetensors");
        std::fs::write(
            &file,
            state_dict(
                &src,
                false,
                &[
                    ("model.0.bn.num_batches_tracked", vec![]),
                    ("model.22.dfl.conv.weight", vec![1, 16, 1, 1]),
                    ("model.99.extra.weight", vec![2]),
                ],
            ),
        )
        .unwrap();
        let dst = model(&["a", "b", "c"], 2);
        let r = load(&file, &dst.variables(), &spec(&["a", "b", "c"])).unwrap();
        assert_eq!(r.format, "state_dict");
        let reinit: Vec<&String> = r.reinitialised.keys().collect();
        assert_eq!(reinit.len(), 6, "{reinit:?}");
        assert!(
            reinit
                .iter()
                .all(|k| k.starts_with("model.22.cv3.") && k.contains(".2."))
        );
        assert_eq!(r.loaded + 6, r.model_tensors);
        assert_eq!(r.unused, vec!["model.99.extra.weight".to_string()]);
        let (a, b) = (src.variables(), dst.variables());
        assert!(a["model.0.conv.weight"].equal(&b["model.0.conv.weight"]));
        assert!(a["model.22.cv2.0.2.bias"].equal(&b["model.22.cv2.0.2.bias"]));
    }

    #[test]
    fn half_precision_state_dicts_are_widened() {
        let dir = tempfile::tempdir().unwrap();
        let src = model(&["a"], 3);
        let file = dir.path().join("half.safetensors");
        std::fs::write(&file, state_dict(&src, true, &[])).unwrap();
        let dst = model(&["a"], 4);
        let r = load(&file, &dst.variables(), &spec(&["a"])).unwrap();
        assert_eq!(r.loaded, r.model_tensors);
        let diff = (&src.variables()["model.2.cv1.conv.weight"]
            - &dst.variables()["model.2.cv1.conv.weight"])
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-2, "{diff}");
    }

    #[test]
    fn a_checkpoint_of_other_species_restarts_the_class_outputs_even_with_the_same_count() {
        let dir = tempfile::tempdir().unwrap();
        let src = model(&["a", "b"], 5);
        let file = dir.path().join("best.safetensors");
        let meta = CheckpointMeta {
            spec: spec(&["a", "b"]),
            variant: Some("balanced".into()),
            conf_floor: 0.25,
            epoch: 1,
            metrics: None,
            training: None,
        };
        save(&file, &named("", &src.variables()), &meta).unwrap();
        let same = model(&["a", "b"], 6);
        let r = load(&file, &same.variables(), &spec(&["a", "b"])).unwrap();
        assert_eq!((r.format, r.loaded), ("trident", r.model_tensors));
        let other = model(&["x", "y"], 6);
        let r = load(&file, &other.variables(), &spec(&["x", "y"])).unwrap();
        assert_eq!(r.reinitialised.len(), 6);
        assert!(
            r.reinitialised
                .values()
                .all(|w| w.contains("class names differ"))
        );
    }

    #[test]
    fn weights_of_another_model_size_are_refused_with_the_preset_named() {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let nano = ModelSpec::preset("nano", vec!["a".into()], 64).unwrap();
        let _m = Detector::new(&vs.root(), &nano);
        let file = dir.path().join("nano.safetensors");
        std::fs::write(&file, state_dict(&vs, false, &[])).unwrap();
        let tiny = model(&["a"], 8);
        let err = load(&file, &tiny.variables(), &spec(&["a"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`tiny`") && err.contains("nano.safetensors"),
            "{err}"
        );
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"junk").unwrap();
        let err = peek(&junk).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
    }

    #[test]
    fn freeze_stops_gradients_in_the_first_layers_only() {
        let vs = model(&["a"], 9);
        let vars = vs.variables();
        let n = freeze(&vars, 10);
        assert!(n > 0);
        for (name, t) in &vars {
            let layer: usize = name.split('.').nth(1).unwrap().parse().unwrap();
            let trainable_param = !name.contains("running_");
            if layer < 10 {
                assert!(!t.requires_grad(), "{name}");
            } else if trainable_param {
                assert!(t.requires_grad(), "{name}");
            }
        }
    }
}
