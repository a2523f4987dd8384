//! `configs/training.yaml`: shared defaults plus the ensemble variants that override them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use trident_core::model_spec::ModelSpec;

use crate::data::augment::Augmentation;
use crate::error::{Error, Result};
use crate::optim::OptimizerKind;

/// The resolved settings of one variant's training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Model size preset: tiny, nano or small.
    pub model: String,
    pub imgsz: u32,
    pub epochs: usize,
    /// Wall-clock budget in minutes; overrides `epochs` (the schedule is fitted to the budget).
    pub time: Option<f64>,
    pub batch: usize,
    pub optimizer: OptimizerKind,
    pub lr0: f64,
    /// Final learning rate as a fraction of lr0.
    pub lrf: f64,
    pub cos_lr: bool,
    pub momentum: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    pub warmup_momentum: f64,
    pub warmup_bias_lr: f64,
    /// Turn mosaic off for the last N epochs.
    pub close_mosaic: usize,
    /// Stop after this many epochs without a better validation fitness (0: never).
    pub patience: usize,
    /// Stop as soon as the EMA model's validation mAP50 reaches this quality target; `epochs`
    /// (or `time`) still caps the run. Makes a run end by what it learned, not by how fast the
    /// machine is (the demo's training uses it).
    #[serde(default)]
    pub target_map50: Option<f64>,
    /// `true`: each batch at a random size in 0.5–1.5 × imgsz (Ultralytics' `multi_scale`); a
    /// list of sizes (the seed's 480…768): each batch at one of them; `false`: imgsz only.
    pub multi_scale: MultiScale,
    pub grad_clip: f64,
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N.
    pub device: String,
    /// Intra-op threads for libtorch (0: all cores).
    pub threads: usize,
    /// An augmentation preset name or explicit strengths.
    pub augment: AugmentSpec,
    /// The confidence floor the runtime applies to this variant (stored in the checkpoint).
    pub conf_floor: f32,
    /// Layers `0..freeze` get no gradient (Ultralytics' `freeze=N`): with `--weights`, keeps a
    /// pretrained backbone (layers 0–9 in YOLOv8) as it is while the neck and head adapt.
    #[serde(default)]
    pub freeze: usize,
    /// Critical species (class names): images holding any of them are drawn `oversample` times
    /// per epoch, and their recall is reported on its own.
    #[serde(default)]
    pub critical: Vec<String>,
    /// How often an image with a critical species is drawn per epoch (the seed's
    /// `critical_species_ratio`); fractions draw the remainder at random. 1: no oversampling.
    #[serde(default = "one")]
    pub oversample: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MultiScale {
    Switch(bool),
    Sizes(Vec<u32>),
}

impl MultiScale {
    /// The sizes a batch is drawn from around `imgsz`, or `None` for a fixed size.
    pub fn sizes(&self, imgsz: u32) -> Option<Vec<u32>> {
        match self {
            MultiScale::Switch(false) => None,
            MultiScale::Switch(true) => {
                let lo = (imgsz / 2 / 32).max(2);
                let hi = imgsz * 3 / 2 / 32;
                Some((lo..=hi).map(|k| k * 32).collect())
            }
            MultiScale::Sizes(s) => Some(s.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AugmentSpec {
    Preset(String),
    Custom(Augmentation),
}

impl AugmentSpec {
    pub fn resolve(&self) -> Option<Augmentation> {
        match self {
            AugmentSpec::Preset(name) => Augmentation::preset(name),
            AugmentSpec::Custom(a) => Some(*a),
        }
    }
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            model: "tiny".into(),
            imgsz: 320,
            epochs: 30,
            time: None,
            batch: 16,
            optimizer: OptimizerKind::Adamw,
            lr0: 0.002,
            lrf: 0.01,
            cos_lr: false,
            momentum: 0.937,
            weight_decay: 0.0005,
            warmup_epochs: 1.0,
            warmup_momentum: 0.8,
            warmup_bias_lr: 0.1,
            close_mosaic: 2,
            patience: 10,
            target_map50: None,
            multi_scale: MultiScale::Switch(false),
            grad_clip: 10.0,
            seed: 0,
            device: "auto".into(),
            threads: 0,
            augment: AugmentSpec::Preset("standard".into()),
            conf_floor: 0.25,
            freeze: 0,
            critical: Vec::new(),
            oversample: 1.0,
        }
    }
}

impl TrainSettings {
    /// Checks ranges; `location` names the file and variant.
    pub fn validate(&self, location: &str) -> Result<()> {
        let bad =
            |field: &str, msg: String| Err(Error::config(format!("{location}: {field}"), msg));
        if self.imgsz < 64 || !self.imgsz.is_multiple_of(32) {
            return bad(
                "imgsz",
                format!("{} is not a multiple of 32 of at least 64", self.imgsz),
            );
        }
        if let MultiScale::Sizes(sizes) = &self.multi_scale
            && (sizes.is_empty() || sizes.iter().any(|z| *z < 64 || !z.is_multiple_of(32)))
        {
            return bad(
                "multi_scale",
                format!(
                    "{sizes:?}: expected true, false or a list of sizes, each a multiple of 32 of at least 64"
                ),
            );
        }
        if self.batch == 0 {
            return bad("batch", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if let Some(t) = self.time
            && (t.is_nan() || t <= 0.0)
        {
            return bad("time", format!("{t} minutes is not a positive budget"));
        }
        if let Some(t) = self.target_map50
            && !(t > 0.0 && t <= 1.0)
        {
            return bad("target_map50", format!("{t} is not in (0, 1]"));
        }
        if !(self.lr0 > 0.0 && self.lr0 < 1.0) {
            return bad("lr0", format!("{} is not in (0, 1)", self.lr0));
        }
        if !(0.0..=1.0).contains(&self.lrf) {
            return bad("lrf", format!("{} is not in [0, 1]", self.lrf));
        }
        if !(0.0..1.0).contains(&self.momentum) || !(0.0..1.0).contains(&self.warmup_momentum) {
            return bad(
                "momentum",
                "momentum and warmup_momentum must be in [0, 1)".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.conf_floor) {
            return bad(
                "conf_floor",
                format!("{} is not in [0, 1]", self.conf_floor),
            );
        }
        if !(self.oversample.is_finite() && (1.0..=100.0).contains(&self.oversample)) {
            return bad(
                "oversample",
                format!("{} is not in [1, 100]", self.oversample),
            );
        }
        if self.freeze > 0
            && let Ok(spec) = ModelSpec::preset(&self.model, vec!["x".into()], 64)
        {
            let head = crate::init::head_index(&spec);
            if self.freeze > head {
                return bad(
                    "freeze",
                    format!(
                        "{} would freeze the detection head (layer {head}); at most {head}",
                        self.freeze
                    ),
                );
            }
        }
        if let Some(a) = self.augment.resolve() {
            let probability = |v: f64| (0.0..=1.0).contains(&v);
            let problem = if !(0.0..1.0).contains(&a.scale) {
                Some(format!("scale {} is not in [0, 1)", a.scale))
            } else if !(0.0..=0.5).contains(&a.translate) {
                Some(format!("translate {} is not in [0, 0.5]", a.translate))
            } else if !probability(a.fliplr) || !probability(a.mosaic) {
                Some("fliplr and mosaic are probabilities in [0, 1]".into())
            } else if !(0.0..=0.5).contains(&a.hsv_h)
                || !probability(a.hsv_s)
                || !probability(a.hsv_v)
            {
                Some("hsv_h must be in [0, 0.5], hsv_s and hsv_v in [0, 1]".into())
            } else {
                None
            };
            if let Some(p) = problem {
                return bad("augment", p);
            }
        }
        if self.augment.resolve().is_none() {
            return bad(
                "augment",
                format!(
                    "{:?} is not a preset ({}) or a map of strengths",
                    self.augment,
                    Augmentation::PRESETS.join(", ")
                ),
            );
        }
        if !trident_core::model_spec::PRESETS
            .iter()
            .any(|(n, ..)| *n == self.model)
        {
            let known: Vec<_> = trident_core::model_spec::PRESETS
                .iter()
                .map(|(n, ..)| *n)
                .collect();
            return bad(
                "model",
                format!(
                    "unknown preset '{}' (expected one of {})",
                    self.model,
                    known.join(", ")
                ),
            );
        }
        Ok(())
    }
}

/// A training config file: shared settings and named variants.
#[derive(Clone, Debug)]
pub struct TrainingConfig {
    pub path: PathBuf,
    /// Run name: outputs go to `runs/<name>/<variant>/`.
    pub name: String,
    /// Dataset YAML (relative paths resolve against the config's folder).
    pub data: Option<PathBuf>,
    /// Variants in file order, with their resolved settings.
    pub variants: Vec<(String, TrainSettings)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_name")]
    name: String,
    #[serde(default)]
    data: Option<PathBuf>,
    #[serde(default)]
    defaults: serde_json::Map<String, Value>,
    variants: serde_json::Map<String, Value>,
}

fn default_name() -> String {
    "train".into()
}

impl TrainingConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = trident_core::error::read_to_string(path)?;
        let raw: RawConfig = trident_core::yaml::parse_located(&text, path)?;
        let at = |field: &str| trident_core::yaml::place(&text, path, field);
        if raw.variants.is_empty() {
            return Err(Error::config(
                at("variants"),
                "at least one variant is required",
            ));
        }
        let base = serde_json::to_value(TrainSettings::default()).expect("settings serialise");
        let mut variants = Vec::new();
        for (name, over) in &raw.variants {
            let mut merged = base.clone();
            let obj = merged.as_object_mut().expect("settings are a map");
            for (k, v) in raw.defaults.iter() {
                obj.insert(k.clone(), v.clone());
            }
            match over {
                Value::Object(m) => obj.extend(m.clone()),
                Value::Null => {}
                other => {
                    return Err(Error::config(
                        at(&format!("variants.{name}")),
                        format!("expected a map of settings, found {other}"),
                    ));
                }
            }
            let place = at(&format!("variants.{name}"));
            let settings: TrainSettings = serde_json::from_value(merged)
                .map_err(|e| Error::config(place.clone(), e.to_string()))?;
            settings.validate(&place)?;
            variants.push((name.clone(), settings));
        }
        let data = raw.data.map(|d| {
            if d.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(d)
            } else {
                d
            }
        });
        Ok(TrainingConfig {
            path: path.to_path_buf(),
            name: raw.name,
            data,
            variants,
        })
    }

    pub fn variant(&self, name: &str) -> Result<&TrainSettings> {
        self.variants
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                let known: Vec<&str> = self.variants.iter().map(|(n, _)| n.as_str()).collect();
                Error::config(
                    format!("--variant {name}"),
                    format!(
                        "{} has no such variant (it has {})",
                        self.path.display(),
                        known.join(", ")
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<TrainingConfig> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("training.yaml");
        std::fs::write(&p, text).unwrap();
        TrainingConfig::load(&p)
    }

    #[test]
    fn multi_scale_takes_a_switch_or_a_list_of_sizes() {
        let c = load("variants:\n  a:\n    multi_scale: [480, 544, 608, 672, 736, 768]\n  b:\n    multi_scale: true\n  c: {}\n").unwrap();
        let sizes = |i: usize| c.variants[i].1.multi_scale.sizes(320);
        assert_eq!(sizes(0), Some(vec![480, 544, 608, 672, 736, 768]));
        // On: 0.5–1.5 × imgsz in steps of 32, as before.
        assert_eq!(sizes(1), Some((5..=15).map(|k| k * 32).collect()));
        assert_eq!(sizes(2), None);
        for bad in ["[500]", "[]", "[32]"] {
            let e = load(&format!("variants:\n  a:\n    multi_scale: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("multi_scale"), "{bad}: {e}");
        }
    }

    #[test]
    fn variants_override_defaults_in_file_order() {
        let c = load(
            "name: ens\ndefaults:\n  epochs: 7\n  augment: light\nvariants:\n  zeta: {augment: heavy, conf_floor: 0.15}\n  alpha: {}\n",
        )
        .unwrap();
        assert_eq!(c.name, "ens");
        let names: Vec<_> = c.variants.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        assert_eq!(c.variants[0].1.epochs, 7);
        assert_eq!(c.variants[0].1.augment, AugmentSpec::Preset("heavy".into()));
        assert_eq!(c.variants[1].1.augment, AugmentSpec::Preset("light".into()));
        assert_eq!(c.variants[0].1.conf_floor, 0.15);
    }

    #[test]
    fn errors_name_the_variant_and_field() {
        let e = load("variants:\n  a: {augmnt: heavy}\n")
            .unwrap_err()
            .to_string();
        // `file:line:column: variants.a: …`, the variant's place in the file.
        assert!(
            e.contains("training.yaml:2:") && e.contains("variants.a") && e.contains("augmnt"),
            "{e}"
        );
        let e = load("variants:\n  a: {imgsz: 300}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("variants.a: imgsz"), "{e}");
        let e = load("variants:\n  a: {augment: wild}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("augment"), "{e}");
        let e = load("variants:\n  a:\n    augment: {hsv_h: 0, hsv_s: 0, hsv_v: 0, translate: 0.1, scale: 1.5, fliplr: 0.5, mosaic: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("variants.a: augment") && e.contains("scale 1.5"),
            "{e}"
        );
        let e = load("variants: {}\n").unwrap_err().to_string();
        assert!(e.contains("at least one variant"), "{e}");
    }

    #[test]
    fn the_shipped_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/training.yaml");
        let c = TrainingConfig::load(&p).unwrap();
        let names: Vec<_> = c.variants.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["high_recall", "balanced", "high_precision"]);
        let floors: Vec<f32> = c.variants.iter().map(|(_, s)| s.conf_floor).collect();
        assert_eq!(floors, [0.15, 0.25, 0.40]);
    }
}
