//! The models a unit runs: a folder of ONNX files with their model cards (what `trident export`
//! writes, and what a package carries). Loading checks what the ensemble relies on — every
//! file is the one its card describes, and every model names the same classes in the same order.

use std::path::{Path, PathBuf};

use trident_core::digest::sha256_hex;
use trident_core::model_card::ModelCard;

use crate::error::{Error, Result};

/// The ensemble's variants, best recall first: the order models are listed and fused in.
pub const VARIANT_ORDER: [&str; 3] = ["high_recall", "balanced", "high_precision"];

/// One model: its card and ONNX bytes (hash-checked against the card).
#[derive(Clone, Debug)]
pub struct LoadedModel {
    pub card: ModelCard,
    pub onnx_path: PathBuf,
    pub bytes: Vec<u8>,
}

impl LoadedModel {
    /// The variant, or the file stem for models brought without one.
    pub fn name(&self) -> &str {
        self.card
            .variant
            .as_deref()
            .unwrap_or_else(|| self.card.file.trim_end_matches(".onnx"))
    }
}

/// The models of a folder, in ensemble order, with the class names they share.
#[derive(Clone, Debug)]
pub struct ModelSet {
    pub models: Vec<LoadedModel>,
    pub names: Vec<String>,
}

fn rank(m: &LoadedModel) -> (usize, String) {
    let name = m.name().to_string();
    let pos = VARIANT_ORDER
        .iter()
        .position(|v| *v == name)
        .unwrap_or(VARIANT_ORDER.len());
    (pos, name)
}

impl ModelSet {
    /// Loads every FP32 model card in `dir` (FP16-weights twins are skipped: on the device the
    /// FP16 path is the TensorRT engine built from the FP32 graph).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| trident_core::Error::io("cannot read the model folder", dir, e))?;
        let mut cards: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".card.json"))
            .collect();
        cards.sort();
        let mut models = Vec::new();
        for card_path in cards {
            let card = ModelCard::load(&card_path)?;
            if card.precision != "fp32" {
                continue;
            }
            let onnx_path = dir.join(&card.file);
            let bytes = std::fs::read(&onnx_path)
                .map_err(|e| trident_core::Error::io("cannot read the model", &onnx_path, e))?;
            let actual = sha256_hex(&bytes);
            if actual != card.sha256 {
                return Err(Error::Models(format!(
                    "{}: sha256 {actual} does not match its card {} ({}); the file was changed or replaced",
                    onnx_path.display(),
                    card.sha256,
                    card_path.display()
                )));
            }
            models.push(LoadedModel {
                card,
                onnx_path,
                bytes,
            });
        }
        if models.is_empty() {
            return Err(Error::Models(format!(
                "{}: no FP32 model cards (*.card.json); export models with `trident export --out {}`",
                dir.display(),
                dir.display()
            )));
        }
        models.sort_by_key(rank);
        Self::from_models(models)
    }

    /// Checks that the models agree on their classes.
    pub fn from_models(models: Vec<LoadedModel>) -> Result<Self> {
        let first = models
            .first()
            .ok_or_else(|| Error::Models("no models".into()))?;
        let names = first.card.names.clone();
        let disagreeing: Vec<String> = models
            .iter()
            .filter(|m| m.card.names != names)
            .map(|m| format!("{} has {:?}", m.name(), m.card.names))
            .collect();
        if !disagreeing.is_empty() {
            return Err(Error::Models(format!(
                "the models disagree on class names: {} has {names:?}, {}; an ensemble fuses class by class, so every model must name the same classes in the same order",
                first.name(),
                disagreeing.join(", ")
            )));
        }
        Ok(ModelSet { models, names })
    }

    pub fn get(&self, name: &str) -> Option<&LoadedModel> {
        self.models.iter().find(|m| m.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_core::model_card::{CardDim, CardSource, FORMAT, TensorInfo};

    fn write_model(dir: &Path, variant: &str, names: &[&str], precision: &str) {
        let file = format!("{variant}.onnx");
        let bytes = format!("onnx bytes of {variant}").into_bytes();
        std::fs::write(dir.join(&file), &bytes).unwrap();
        let info = |name: &str| TensorInfo {
            name: name.into(),
            shape: vec![CardDim::Fixed(1)],
            dtype: "float32".into(),
        };
        let card = ModelCard {
            format: FORMAT.into(),
            file: file.clone(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            opset: 13,
            precision: precision.into(),
            input: info("images"),
            output: info("output0"),
            names: names.iter().map(|n| n.to_string()).collect(),
            imgsz: 320,
            strides: vec![8, 16, 32],
            anchors: 2100,
            variant: Some(variant.into()),
            conf_floor: Some(0.25),
            source: CardSource {
                kind: "checkpoint".into(),
                file: "best.safetensors".into(),
                sha256: "0".repeat(64),
            },
            metrics: None,
            verification: None,
            lint: vec![],
            trident_version: "0.1.0".into(),
        };
        card.save(&ModelCard::path_for(&dir.join(file))).unwrap();
    }

    #[test]
    fn models_load_in_ensemble_order_skipping_fp16_twins() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["high_precision", "balanced", "high_recall"] {
            write_model(dir.path(), v, &["fish", "urchin"], "fp32");
        }
        write_model(
            dir.path(),
            "balanced.fp16",
            &["fish", "urchin"],
            "fp16-weights",
        );
        let set = ModelSet::load_dir(dir.path()).unwrap();
        let order: Vec<&str> = set.models.iter().map(LoadedModel::name).collect();
        assert_eq!(order, VARIANT_ORDER);
        assert_eq!(set.names, ["fish", "urchin"]);
    }

    #[test]
    fn disagreeing_classes_changed_files_and_empty_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), "balanced", &["fish", "urchin"], "fp32");
        write_model(dir.path(), "high_recall", &["urchin", "fish"], "fp32");
        let err = ModelSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("disagree") && err.contains("balanced has"),
            "{err}"
        );

        std::fs::write(dir.path().join("high_recall.onnx"), b"tampered").unwrap();
        let err = ModelSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("high_recall.onnx") && err.contains("does not match"),
            "{err}"
        );

        let empty = tempfile::tempdir().unwrap();
        let err = ModelSet::load_dir(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no FP32 model cards"), "{err}");
    }
}
