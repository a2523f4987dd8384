//! What `trident calibrate` searches and how it decides (`configs/calibrate.yaml`). Every field
//! has a default, so an empty file (or none) is a complete configuration.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use trident_core::calibration::{ConfType, FusionMethod};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrateConfig {
    pub temperature: TemperatureConfig,
    pub fusion: FusionSearch,
    pub thresholds: ThresholdConfig,
    pub tta: TtaSearch,
    /// Confidence bins of D-ECE and the reliability diagrams (equal width over [0, 1]).
    pub dece_bins: usize,
    /// A detection is a true positive when it overlaps an unmatched ground-truth box of its
    /// class by at least this IoU (temperatures, D-ECE and thresholds).
    pub match_iou: f64,
}

impl Default for CalibrateConfig {
    fn default() -> Self {
        Self {
            temperature: TemperatureConfig::default(),
            fusion: FusionSearch::default(),
            thresholds: ThresholdConfig::default(),
            tta: TtaSearch::default(),
            dece_bins: 10,
            match_iou: 0.5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemperatureConfig {
    /// Also fit one temperature per class where the data allow (kept only when it lowers D-ECE
    /// further than the single temperature).
    pub per_class: bool,
    /// Matched and unmatched detections a class needs, each, for its own temperature.
    pub min_per_class: usize,
}

impl Default for TemperatureConfig {
    fn default() -> Self {
        Self {
            per_class: true,
            min_per_class: 30,
        }
    }
}

/// The fusion grid: every method × IoU threshold × weight vector (× conf_type and skip
/// threshold for WBF) is scored by ensemble mAP50-95 on the split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionSearch {
    pub methods: Vec<FusionMethod>,
    pub iou_thr: Vec<f64>,
    /// Weight vectors in ensemble order (high_recall, balanced, high_precision). Default: all
    /// ones, each model doubled, each pair doubled, and 3-2-1 both ways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<Vec<f64>>>,
    pub conf_type: Vec<ConfType>,
    pub skip_box_thr: Vec<f64>,
}

impl Default for FusionSearch {
    fn default() -> Self {
        Self {
            methods: vec![FusionMethod::Wbf, FusionMethod::Nms],
            iou_thr: vec![0.4, 0.5, 0.55, 0.6, 0.7],
            weights: None,
            conf_type: vec![ConfType::Avg],
            skip_box_thr: vec![0.0],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdConfig {
    /// F-beta of every class (1: F1, Ultralytics' choice).
    pub beta: f64,
    /// Per-class beta, by class name: > 1 weighs recall higher (critical species).
    pub class_beta: BTreeMap<String, f64>,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        Self {
            beta: 1.0,
            class_beta: BTreeMap::new(),
        }
    }
}

/// One candidate test-time view.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    #[serde(default)]
    pub flip: bool,
    #[serde(default = "one")]
    pub scale: f32,
}

fn one() -> f32 {
    1.0
}

impl ViewSpec {
    pub fn label(&self) -> String {
        match (self.flip, self.scale == 1.0) {
            (true, true) => "flip".into(),
            (false, _) => format!("scale{}", self.scale),
            (true, false) => format!("flip+scale{}", self.scale),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtaSearch {
    /// Views tried beside the plain one (Ultralytics: flip, scales 0.83 and 0.67).
    pub candidates: Vec<ViewSpec>,
    /// A view is kept only if adding it raises the ensemble's mAP50-95 by more than this.
    pub min_gain: f64,
}

impl Default for TtaSearch {
    fn default() -> Self {
        let v = |flip, scale| ViewSpec { flip, scale };
        Self {
            candidates: vec![
                v(true, 1.0),
                v(false, 0.83),
                v(false, 0.67),
                v(true, 0.83),
                v(true, 0.67),
            ],
            min_gain: 0.005,
        }
    }
}

/// Most candidate views whose every combination is evaluated (2^n subsets).
pub const MAX_TTA_CANDIDATES: usize = 6;

impl FusionSearch {
    /// The weight vectors searched for an ensemble of `n` models.
    pub fn weight_grid(&self, n: usize) -> Vec<Vec<f64>> {
        if let Some(w) = &self.weights {
            return w.clone();
        }
        let mut grid = vec![vec![1.0; n]];
        if n < 2 {
            return grid;
        }
        for i in 0..n {
            let mut w = vec![1.0; n];
            w[i] = 2.0;
            grid.push(w);
        }
        if n > 2 {
            for i in 0..n {
                let mut w = vec![2.0; n];
                w[i] = 1.0;
                grid.push(w);
            }
            let ramp: Vec<f64> = (0..n).map(|i| (n - i) as f64).collect();
            grid.push(ramp.clone());
            grid.push(ramp.into_iter().rev().collect());
        }
        grid
    }
}

impl CalibrateConfig {
    /// Reads and validates a config file; errors name the file and field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = trident_core::error::read_to_string(path)?;
        let config: CalibrateConfig = trident_core::yaml::parse_located(&text, path)?;
        config.validate(&|field| trident_core::yaml::place(&text, path, field))?;
        Ok(config)
    }

    /// Checks every setting; `at(field)` names where a field is (`file:line:column: field`).
    pub fn validate(&self, at: &dyn Fn(&str) -> String) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::input(at(field), message));
        let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !(2..=100).contains(&self.dece_bins) {
            return bad("dece_bins", format!("{} is outside 2–100", self.dece_bins));
        }
        if !(unit(self.match_iou) && self.match_iou > 0.0) {
            return bad("match_iou", format!("{} is outside (0, 1]", self.match_iou));
        }
        let f = &self.fusion;
        if f.methods.is_empty() {
            return bad("fusion.methods", "empty: list wbf and/or nms".into());
        }
        if f.iou_thr.is_empty() || f.iou_thr.iter().any(|&t| !unit(t)) {
            return bad(
                "fusion.iou_thr",
                format!("{:?}: expected values in [0, 1]", f.iou_thr),
            );
        }
        if f.skip_box_thr.is_empty() || f.skip_box_thr.iter().any(|&t| !unit(t)) {
            return bad(
                "fusion.skip_box_thr",
                format!("{:?}: expected values in [0, 1]", f.skip_box_thr),
            );
        }
        if f.conf_type.is_empty() {
            return bad("fusion.conf_type", "empty: list at least avg".into());
        }
        if f.weights.as_ref().is_some_and(Vec::is_empty) {
            return bad("fusion.weights", "empty: list at least [1, 1, 1]".into());
        }
        for (i, w) in f.weights.iter().flatten().enumerate() {
            if w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || w.iter().all(|x| *x == 0.0) {
                return bad(
                    &format!("fusion.weights[{i}]"),
                    format!("{w:?}: expected non-negative numbers, not all zero"),
                );
            }
        }
        let t = &self.thresholds;
        let beta_ok = |b: f64| b.is_finite() && b > 0.0;
        if !beta_ok(t.beta) {
            return bad(
                "thresholds.beta",
                format!("{} is not a positive number", t.beta),
            );
        }
        for (class, b) in &t.class_beta {
            if !beta_ok(*b) {
                return bad(
                    &format!("thresholds.class_beta.{class}"),
                    format!("{b} is not a positive number"),
                );
            }
        }
        let tta = &self.tta;
        if tta.candidates.len() > MAX_TTA_CANDIDATES {
            return bad(
                "tta.candidates",
                format!(
                    "{} views; at most {MAX_TTA_CANDIDATES} (every combination is evaluated)",
                    tta.candidates.len()
                ),
            );
        }
        for (i, v) in tta.candidates.iter().enumerate() {
            if !(v.scale.is_finite() && v.scale > 0.1 && v.scale <= 1.0) {
                return bad(
                    &format!("tta.candidates[{i}].scale"),
                    format!("{} is outside (0.1, 1]", v.scale),
                );
            }
            if !v.flip && v.scale == 1.0 {
                return bad(
                    &format!("tta.candidates[{i}]"),
                    "neither flips nor scales: the plain view always runs".into(),
                );
            }
            if tta.candidates[..i].contains(v) {
                return bad(
                    &format!("tta.candidates[{i}]"),
                    format!("{} is listed twice", v.label()),
                );
            }
        }
        if !(tta.min_gain.is_finite() && tta.min_gain >= 0.0) {
            return bad(
                "tta.min_gain",
                format!("{} is not a non-negative number", tta.min_gain),
            );
        }
        Ok(())
    }

    /// Checks what depends on the models and data: weight vectors as long as the ensemble,
    /// class names in `class_beta` that exist. `at(field)` names where a field is, as for
    /// [`Self::validate`].
    pub fn check_against(
        &self,
        at: &dyn Fn(&str) -> String,
        models: usize,
        names: &[String],
    ) -> Result<()> {
        for (i, w) in self.fusion.weights.iter().flatten().enumerate() {
            if w.len() != models {
                return Err(Error::input(
                    at(&format!("fusion.weights[{i}]")),
                    format!("{} weights for an ensemble of {models} models", w.len()),
                ));
            }
        }
        for class in self.thresholds.class_beta.keys() {
            if !names.contains(class) {
                return Err(Error::input(
                    at(&format!("thresholds.class_beta.{class}")),
                    format!("not a class of the models ({})", names.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        CalibrateConfig::default()
            .validate(&|f| format!("x: {f}"))
            .unwrap();
        let parsed: CalibrateConfig =
            trident_core::yaml::parse_yaml("{}", Path::new("c.yaml")).unwrap();
        assert_eq!(parsed, CalibrateConfig::default());
    }

    #[test]
    fn default_weight_grid_fits_the_ensemble() {
        let f = FusionSearch::default();
        assert_eq!(f.weight_grid(1), vec![vec![1.0]]);
        assert_eq!(f.weight_grid(2).len(), 3);
        let g = f.weight_grid(3);
        assert_eq!(g.len(), 9);
        assert!(g.contains(&vec![3.0, 2.0, 1.0]) && g.contains(&vec![1.0, 2.0, 2.0]));
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = CalibrateConfig::default();
        c.fusion.weights = Some(vec![vec![1.0; 3], vec![1.0, -1.0, 1.0]]);
        let e = c
            .validate(&|f| format!("c.yaml: {f}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml: fusion.weights[1]"), "{e}");
        let mut c = CalibrateConfig::default();
        c.tta.candidates.push(ViewSpec {
            flip: false,
            scale: 1.0,
        });
        let e = c
            .validate(&|f| format!("c.yaml: {f}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tta.candidates[5]"), "{e}");
        let mut c = CalibrateConfig::default();
        c.fusion.weights = Some(vec![vec![1.0; 3]]);
        let e = c
            .check_against(&|f| format!("c.yaml: {f}"), 2, &["a".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 weights for an ensemble of 2 models"), "{e}");
        let parse = trident_core::yaml::parse_yaml::<CalibrateConfig>(
            "tta:\n  min_gian: 0.1\n",
            Path::new("c.yaml"),
        );
        assert!(parse.unwrap_err().to_string().contains("min_gian"));
        // From a file, a bad value is placed at its line and column.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "dece_bins: 10\nmatch_iou: 1.5\n").unwrap();
        let e = CalibrateConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}:2:12: match_iou", path.display())),
            "{e}"
        );
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/calibrate.yaml");
        let c = CalibrateConfig::load(&path).unwrap();
        assert_eq!(c.thresholds.class_beta["lionfish"], 2.0);
        assert_eq!(c.tta.candidates, TtaSearch::default().candidates);
        assert_eq!(c.fusion, FusionSearch::default());
    }
}
