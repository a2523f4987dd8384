//! What calibration measured: `metrics.json`, and the figures `report.md` is written from.

use std::collections::BTreeMap;

use serde::Serialize;
use trident_core::calibration::{FusionTable, TtaTransform};
use trident_eval::Curves;

use crate::scoring::{ClassThreshold, ReliabilityBin};

#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    pub images: usize,
    pub instances: usize,
    pub names: Vec<String>,
    pub models: Vec<ModelMetrics>,
    pub fusion: FusionMetrics,
    pub ensemble: EnsembleMetrics,
    pub thresholds: Vec<ClassThreshold>,
    pub tta: TtaMetrics,
    pub coverage: Coverage,
    pub bar: Bar,
}

/// One model alone, at its device floor, plain view.
#[derive(Clone, Debug, Serialize)]
pub struct ModelMetrics {
    pub variant: String,
    pub sha256: String,
    pub backend: String,
    pub floor: f32,
    pub detections: usize,
    /// Detections matched to an object (IoU ≥ match_iou).
    pub matched: usize,
    pub map50: f64,
    pub map50_95: f64,
    /// mAP50-95 at floor 0.001 (Ultralytics' validation convention), for reference.
    pub map50_95_low_floor: f64,
    pub temperature: f32,
    pub class_temperatures: Option<Vec<f32>>,
    pub nll_before: f64,
    pub nll_after: f64,
    pub dece_before: f64,
    pub dece_after: f64,
    pub reliability_before: Vec<ReliabilityBin>,
    pub reliability_after: Vec<ReliabilityBin>,
    /// Why a fitted value was not kept, when it was not.
    pub notes: Vec<String>,
    /// Mean seconds of one pass per view (plain first, then the TTA candidates).
    pub seconds_per_view: Vec<f64>,
    #[serde(skip)]
    pub curves: Curves,
}

#[derive(Clone, Debug, Serialize)]
pub struct FusionCandidate {
    pub table: FusionTable,
    /// Weights in ensemble order, for tables.
    pub weights: Vec<f64>,
    pub map50: f64,
    pub map50_95: f64,
}

impl FusionCandidate {
    pub fn new(table: &FusionTable, variants: &[String], map50: f64, map50_95: f64) -> Self {
        Self {
            weights: variants
                .iter()
                .map(|v| table.weights.get(v).copied().unwrap_or(1.0))
                .collect(),
            table: table.clone(),
            map50,
            map50_95,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FusionMetrics {
    pub candidates: Vec<FusionCandidate>,
    pub chosen: usize,
    pub best_wbf: Option<usize>,
    pub best_nms: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EnsembleMetrics {
    /// The chosen fusion on raw scores.
    pub raw_map50: f64,
    pub raw_map50_95: f64,
    /// The chosen fusion on calibrated scores (what the tables make the device do, before
    /// thresholds and without TTA).
    pub map50: f64,
    pub map50_95: f64,
    /// D-ECE of the fused scores without and with the temperatures.
    pub dece_before: f64,
    pub dece_after: f64,
    /// Precision and recall (IoU 0.5) of what the per-class thresholds keep.
    pub precision_at_thresholds: f64,
    pub recall_at_thresholds: f64,
    #[serde(skip)]
    pub curves: Curves,
}

#[derive(Clone, Debug, Serialize)]
pub struct TtaSubset {
    pub views: Vec<String>,
    /// Latency multiplier of the ensemble with these views.
    pub cost: f64,
    /// mAP50-95 of each model with these views.
    pub models: Vec<f64>,
    pub ensemble: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TtaMetrics {
    pub candidates: Vec<String>,
    pub min_gain: f64,
    /// Every combination of the candidates, the plain view alone first.
    pub subsets: Vec<TtaSubset>,
    pub kept: Vec<TtaTransform>,
    pub ensemble_plain: f64,
    pub ensemble_with_kept: f64,
}

/// How much the variants could complement each other: which objects (IoU 0.5, device floors,
/// plain view) each finds.
#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    pub per_model: Vec<f64>,
    /// Found by at least one model.
    pub union: f64,
    /// Found by every model.
    pub all: f64,
}

/// The bar: calibrated WBF ensemble mAP50-95 ≥ best single model + `required`.
#[derive(Clone, Debug, Serialize)]
pub struct Bar {
    pub best_single: String,
    pub best_single_map50_95: f64,
    pub ensemble_wbf_map50_95: Option<f64>,
    pub margin: Option<f64>,
    pub required: f64,
    pub met: bool,
    /// Why not, when not.
    pub explanation: Option<String>,
}

impl Bar {
    pub fn judge(
        best: &ModelMetrics,
        wbf: Option<&FusionCandidate>,
        models: usize,
        coverage: &Coverage,
        required: f64,
    ) -> Bar {
        let ensemble = wbf.map(|w| w.map50_95);
        let margin = ensemble.map(|e| e - best.map50_95);
        let met = margin.is_some_and(|m| m >= required - 1e-12);
        let explanation = if met {
            None
        } else if models < 2 {
            Some("one model: there is nothing to fuse".into())
        } else if let (Some(e), Some(m)) = (ensemble, margin) {
            let best_cov = coverage.per_model.iter().copied().fold(0.0, f64::max);
            Some(format!(
                "The calibrated WBF ensemble reaches mAP50-95 {e:.4} against {} alone {:.4} ({m:+.4}; the bar is {required:+.2}). \
                 The variants find nearly the same objects: {:.1} % of the objects any of them finds (IoU 0.5, device floors) are found by all {models}, \
                 and together they find {:.1} % against {:.1} % for the best alone, so fusion has at most {:.1} points of recall to add \
                 and otherwise re-scores and re-places the same boxes. Variants trained apart for longer, or on different data or input \
                 sizes, disagree more and fuse better.",
                best.variant,
                best.map50_95,
                100.0 * coverage.all / coverage.union.max(1e-12),
                100.0 * coverage.union,
                100.0 * best_cov,
                100.0 * (coverage.union - best_cov),
            ))
        } else {
            Some("WBF was not searched (fusion.methods); add wbf to compare".into())
        };
        Bar {
            best_single: best.variant.clone(),
            best_single_map50_95: best.map50_95,
            ensemble_wbf_map50_95: ensemble,
            margin,
            required,
            met,
            explanation,
        }
    }
}

/// Headline figures, flat, for logs and the demo.
pub fn headline(m: &Metrics) -> BTreeMap<&'static str, String> {
    let mut h = BTreeMap::new();
    let best = &m.bar;
    h.insert(
        "best single",
        format!("{} {:.4}", best.best_single, best.best_single_map50_95),
    );
    if let Some(e) = best.ensemble_wbf_map50_95 {
        h.insert("calibrated WBF ensemble", format!("{e:.4}"));
    }
    h.insert(
        "chosen fusion",
        format!(
            "{} {:.4}",
            describe(&m.fusion.candidates[m.fusion.chosen]),
            m.ensemble.map50_95
        ),
    );
    h
}

/// `wbf iou 0.55 w 2-1-1 avg`.
pub fn describe(c: &FusionCandidate) -> String {
    let w = c
        .weights
        .iter()
        .map(|w| format!("{w}"))
        .collect::<Vec<_>>()
        .join("-");
    match c.table.method {
        trident_core::calibration::FusionMethod::Wbf => format!(
            "wbf iou {} w {w} {}{}",
            c.table.iou_thr,
            c.table.conf_type.as_str(),
            if c.table.skip_box_thr > 0.0 {
                format!(" skip {}", c.table.skip_box_thr)
            } else {
                String::new()
            }
        ),
        trident_core::calibration::FusionMethod::Nms => {
            format!("nms iou {} w {w}", c.table.iou_thr)
        }
    }
}
