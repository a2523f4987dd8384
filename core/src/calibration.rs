//! Calibration tables (`calibration.yaml`, schema `trident-calibration/1`): what `trident
//! calibrate` fits on validation data and what the edge runtime applies to every frame.
//!
//! They say how far to trust each model (a temperature on the logit of its scores, optionally
//! per class), how to fuse the three (method and parameters, weights by variant), where each
//! class's threshold sits on the fused, calibrated score, and which test-time augmentations are
//! worth their cost. They are tied to the exact model files they were fitted for: the runtime
//! refuses tables whose sha256 list does not match the models it loaded.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The schema tag written to and required in every file.
pub const SCHEMA: &str = "trident-calibration/1";
/// The file name inside a models folder or a package.
pub const FILE_NAME: &str = "calibration.yaml";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationTables {
    pub schema: String,
    /// Class names, in class-index order; must equal the models'.
    pub names: Vec<String>,
    /// One entry per model the tables were fitted for.
    pub models: Vec<ModelCalibration>,
    pub fusion: FusionTable,
    /// Per-class threshold on the fused, calibrated score, by class name. A class not listed
    /// keeps every fused detection.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    /// Test-time augmentations kept by calibration, each one extra forward pass per model.
    #[serde(default)]
    pub tta: Vec<TtaTransform>,
    /// Where the tables came from (dataset, split, image count); informational.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fitted_on: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCalibration {
    /// `high_recall`, `balanced`, `high_precision` (the model card's variant or file stem).
    pub variant: String,
    /// SHA-256 of the ONNX file the tables were fitted for.
    pub sha256: String,
    /// Temperature on the logit: `sigmoid(logit(p) / T)`; 1 leaves scores as they are.
    #[serde(default = "one")]
    pub temperature: f32,
    /// Optional per-class temperatures (class-index order); they replace `temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_temperatures: Option<Vec<f32>>,
}

fn one() -> f32 {
    1.0
}

/// The fusion step as fitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionTable {
    pub method: FusionMethod,
    pub iou_thr: f64,
    /// WBF only: detections below this (unweighted) score are dropped before fusion.
    #[serde(default)]
    pub skip_box_thr: f64,
    /// WBF only.
    #[serde(default = "default_conf_type")]
    pub conf_type: ConfType,
    /// Weight per model variant; a variant not listed weighs 1.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
}

fn default_conf_type() -> ConfType {
    ConfType::Avg
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMethod {
    Wbf,
    Nms,
}

/// How WBF scores a fused box (`conf_type` of `ensemble-boxes`); `s` is the mean weighted score
/// of its `n` boxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfType {
    /// `s · min(models, n) / Σw`: a box fewer models found scores lower.
    Avg,
    /// Largest weighted score over the largest weight.
    Max,
    /// `s · n / cluster weight · (weights of the models present) / Σw`.
    BoxAndModelAvg,
    /// `s · n / (cluster weight + weights of the absent models)`.
    AbsentModelAwareAvg,
}

impl ConfType {
    pub const ALL: [ConfType; 4] = [
        ConfType::Avg,
        ConfType::Max,
        ConfType::BoxAndModelAvg,
        ConfType::AbsentModelAwareAvg,
    ];

    /// The package's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfType::Avg => "avg",
            ConfType::Max => "max",
            ConfType::BoxAndModelAvg => "box_and_model_avg",
            ConfType::AbsentModelAwareAvg => "absent_model_aware_avg",
        }
    }
}

impl std::str::FromStr for ConfType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let found = ConfType::ALL.into_iter().find(|c| c.as_str() == s);
        let valid = "avg, max, box_and_model_avg or absent_model_aware_avg";
        found.ok_or_else(|| format!("unknown conf_type {s:?}: expected {valid}"))
    }
}

/// One test-time view of a frame: optionally mirrored left–right, the content scaled by
/// `scale` inside the model input (Ultralytics' TTA uses 1, 0.83 and 0.67), the rest padded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtaTransform {
    #[serde(default)]
    pub flip: bool,
    #[serde(default = "one")]
    pub scale: f32,
    /// mAP50-95 gain measured by calibration with this view added.
    #[serde(default)]
    pub gain: f64,
    /// Latency multiplier of the ensemble with this view added (1 = free).
    #[serde(default = "one_f64")]
    pub cost: f64,
}

fn one_f64() -> f64 {
    1.0
}

impl TtaTransform {
    /// `flip`, `scale0.83`, `flip+scale0.67`.
    pub fn label(&self) -> String {
        match (self.flip, self.scale == 1.0) {
            (true, true) => "flip".into(),
            (false, _) => format!("scale{}", self.scale),
            (true, false) => format!("flip+scale{}", self.scale),
        }
    }
}

impl CalibrationTables {
    /// Reads and validates a file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let tables: CalibrationTables = crate::yaml::load_yaml(path)?;
        tables.validate(&path.display().to_string())?;
        Ok(tables)
    }

    /// Writes the tables atomically (temp file + rename) after validating them.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate(&path.display().to_string())?;
        let text = serde_saphyr::to_string(self)
            .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
        crate::fsutil::write_atomic(path, text.as_bytes())
    }

    /// Checks what the types cannot: the schema, finite positive temperatures, thresholds in
    /// [0, 1], known class names, one entry per variant, sensible TTA views.
    pub fn validate(&self, file: &str) -> Result<()> {
        let at = |field: String| format!("{file}: {field}");
        if self.schema != SCHEMA {
            return Err(Error::invalid(
                at("schema".into()),
                format!("is {:?}; this build reads {SCHEMA:?}", self.schema),
            ));
        }
        if self.names.is_empty() {
            return Err(Error::invalid(at("names".into()), "no class names"));
        }
        if self.models.is_empty() {
            return Err(Error::invalid(at("models".into()), "no models"));
        }
        for (i, m) in self.models.iter().enumerate() {
            let field = |f: &str| at(format!("models[{i}].{f}"));
            if self.models[..i].iter().any(|o| o.variant == m.variant) {
                return Err(Error::invalid(
                    field("variant"),
                    format!("`{}` is listed twice", m.variant),
                ));
            }
            if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    field("sha256"),
                    "expected 64 hex digits (the ONNX file's SHA-256)",
                ));
            }
            let positive = |t: f32| t.is_finite() && t > 0.0;
            if !positive(m.temperature) {
                return Err(Error::invalid(
                    field("temperature"),
                    format!("{} is not a positive number", m.temperature),
                ));
            }
            if let Some(ts) = &m.class_temperatures {
                if ts.len() != self.names.len() {
                    return Err(Error::invalid(
                        field("class_temperatures"),
                        format!("{} values for {} classes", ts.len(), self.names.len()),
                    ));
                }
                if let Some(t) = ts.iter().find(|&&t| !positive(t)) {
                    return Err(Error::invalid(
                        field("class_temperatures"),
                        format!("{t} is not a positive number"),
                    ));
                }
            }
        }
        let f = &self.fusion;
        if !(0.0..=1.0).contains(&f.iou_thr) {
            return Err(Error::invalid(
                at("fusion.iou_thr".into()),
                format!("{} is outside [0, 1]", f.iou_thr),
            ));
        }
        if !(0.0..=1.0).contains(&f.skip_box_thr) {
            return Err(Error::invalid(
                at("fusion.skip_box_thr".into()),
                format!("{} is outside [0, 1]", f.skip_box_thr),
            ));
        }
        for (variant, w) in &f.weights {
            if !self.models.iter().any(|m| &m.variant == variant) {
                return Err(Error::invalid(
                    at(format!("fusion.weights.{variant}")),
                    "not one of the models",
                ));
            }
            if !(w.is_finite() && *w >= 0.0) {
                return Err(Error::invalid(
                    at(format!("fusion.weights.{variant}")),
                    format!("{w} is not a non-negative number"),
                ));
            }
        }
        for (class, t) in &self.thresholds {
            if !self.names.contains(class) {
                return Err(Error::invalid(
                    at(format!("thresholds.{class}")),
                    format!("not a class name (names: {})", self.names.join(", ")),
                ));
            }
            if !(0.0..=1.0).contains(t) {
                return Err(Error::invalid(
                    at(format!("thresholds.{class}")),
                    format!("{t} is outside [0, 1]"),
                ));
            }
        }
        for (i, t) in self.tta.iter().enumerate() {
            if !(t.scale.is_finite() && t.scale > 0.1 && t.scale <= 1.0) {
                return Err(Error::invalid(
                    at(format!("tta[{i}].scale")),
                    format!("{} is outside (0.1, 1]", t.scale),
                ));
            }
            if !t.flip && t.scale == 1.0 {
                return Err(Error::invalid(
                    at(format!("tta[{i}]")),
                    "neither flips nor scales: it is the plain view, which always runs",
                ));
            }
        }
        Ok(())
    }

    /// The entry for a variant.
    pub fn model(&self, variant: &str) -> Option<&ModelCalibration> {
        self.models.iter().find(|m| m.variant == variant)
    }

    /// Refuses tables fitted for other models: every loaded model (variant, sha256) must have
    /// an entry with that digest, and the class names must agree. The error says which.
    pub fn check_models<'a>(
        &self,
        file: &str,
        names: &[String],
        models: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        if self.names != names {
            return Err(Error::invalid(
                file,
                format!(
                    "fitted for classes [{}], the models have [{}]",
                    self.names.join(", "),
                    names.join(", ")
                ),
            ));
        }
        for (variant, sha) in models {
            match self.model(variant) {
                None => {
                    return Err(Error::invalid(
                        file,
                        format!(
                            "has no entry for model `{variant}` (it lists {}); refit with `trident calibrate`",
                            self.models
                                .iter()
                                .map(|m| m.variant.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                Some(m) if !m.sha256.eq_ignore_ascii_case(sha) => {
                    return Err(Error::invalid(
                        file,
                        format!(
                            "was fitted for another `{variant}` model (sha256 {}…, the loaded one is {}…); refit with `trident calibrate`",
                            &m.sha256[..12],
                            &sha[..sha.len().min(12)]
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// `sigmoid(logit(p) / t)`, the temperature-scaled probability; exact at `t = 1`.
pub fn apply_temperature(p: f32, t: f32) -> f32 {
    if t == 1.0 {
        return p;
    }
    let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
    let logit = (p / (1.0 - p)).ln();
    (1.0 / (1.0 + (-logit / f64::from(t)).exp())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> CalibrationTables {
        CalibrationTables {
            schema: SCHEMA.into(),
            names: vec!["fish".into(), "crab".into()],
            models: vec![ModelCalibration {
                variant: "balanced".into(),
                sha256: "ab".repeat(32),
                temperature: 1.5,
                class_temperatures: None,
            }],
            fusion: FusionTable {
                method: FusionMethod::Wbf,
                iou_thr: 0.55,
                skip_box_thr: 0.0,
                conf_type: ConfType::Avg,
                weights: [("balanced".to_string(), 2.0)].into(),
            },
            thresholds: [("crab".to_string(), 0.4)].into(),
            tta: vec![TtaTransform {
                flip: true,
                scale: 1.0,
                gain: 0.01,
                cost: 2.0,
            }],
            fitted_on: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        tables().save(&path).unwrap();
        assert_eq!(CalibrationTables::load(&path).unwrap(), tables());
    }

    #[test]
    fn errors_name_the_field() {
        let mut t = tables();
        t.thresholds.insert("shark".into(), 0.5);
        let e = t.validate("c.yaml").unwrap_err().to_string();
        assert!(
            e.contains("c.yaml: thresholds.shark") && e.contains("not a class name"),
            "{e}"
        );
        let mut t = tables();
        t.models[0].temperature = 0.0;
        let e = t.validate("c.yaml").unwrap_err().to_string();
        assert!(e.contains("models[0].temperature"), "{e}");
        let mut t = tables();
        t.fusion.weights.insert("high_recall".into(), 1.0);
        let e = t.validate("c.yaml").unwrap_err().to_string();
        assert!(e.contains("fusion.weights.high_recall"), "{e}");
        let mut t = tables();
        t.tta[0].flip = false;
        assert!(t.validate("c.yaml").is_err());
    }

    #[test]
    fn unknown_keys_and_wrong_schema_are_refused_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let text = serde_saphyr::to_string(&tables()).unwrap();
        std::fs::write(&path, text.replace("iou_thr", "iou_threshold")).unwrap();
        let e = CalibrationTables::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}:", path.display())) && e.contains("iou_threshold"),
            "{e}"
        );
        let at = e[path.display().to_string().len() + 1..]
            .split(':')
            .next()
            .unwrap();
        assert!(
            at.parse::<usize>().is_ok_and(|line| line > 1),
            "no line in {e}"
        );
        std::fs::write(
            &path,
            serde_saphyr::to_string(&tables())
                .unwrap()
                .replace(SCHEMA, "trident-calibration/9"),
        )
        .unwrap();
        let e = CalibrationTables::load(&path).unwrap_err().to_string();
        assert!(e.contains("schema"), "{e}");
    }

    #[test]
    fn tables_for_other_models_are_refused() {
        let t = tables();
        let names = t.names.clone();
        let good = "ab".repeat(32);
        t.check_models("c.yaml", &names, [("balanced", good.as_str())])
            .unwrap();
        let other = "cd".repeat(32);
        let e = t
            .check_models("c.yaml", &names, [("balanced", other.as_str())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("another `balanced` model"), "{e}");
        let e = t
            .check_models("c.yaml", &names, [("high_recall", good.as_str())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no entry for model `high_recall`"), "{e}");
        let e = t
            .check_models("c.yaml", &["fish".into()], [])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fitted for classes"), "{e}");
    }

    #[test]
    fn the_example_in_configs_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/calibration.example.yaml");
        let t = CalibrationTables::load(&path).unwrap();
        assert_eq!(t.models.len(), 3);
        assert_eq!(t.tta[1].label(), "scale0.83");
        assert_eq!(t.thresholds["lionfish"], 0.22);
    }

    #[test]
    fn temperature_softens_and_sharpens_monotonically() {
        assert_eq!(apply_temperature(0.9, 1.0), 0.9);
        let soft = apply_temperature(0.9, 2.0);
        let sharp = apply_temperature(0.9, 0.5);
        assert!(soft < 0.9 && soft > 0.5, "{soft}");
        assert!(sharp > 0.9, "{sharp}");
        assert!((apply_temperature(0.5, 3.0) - 0.5).abs() < 1e-6);
        assert!(apply_temperature(0.3, 2.0) < apply_temperature(0.4, 2.0));
        // logit(0.9) = ln 9; halved: sigmoid(ln 3) = 0.75.
        assert!((soft - 0.75).abs() < 1e-5, "{soft}");
    }
}
