//! The full evaluation: COCO mAP plus the best-F1 operating point, per class and overall.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use trident_core::dataset::ImageTruth;
use trident_core::prediction::Prediction;

use crate::coco::{ClassEval, evaluate_class};
use crate::error::{Error, Result};
use crate::input::PredictionIndex;

/// Confidence grid for the F1 curve and the operating point (as Ultralytics: 1000 points in 0–1).
pub const F1_GRID: usize = 1000;

/// Metrics of one class. AP fields are `None` for a class without ground truth in the split.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    pub class: usize,
    pub name: String,
    /// Ground-truth boxes.
    pub instances: usize,
    /// Predictions evaluated (after the per-image cap of 100).
    pub predictions: usize,
    pub ap50: Option<f64>,
    pub ap50_95: Option<f64>,
    /// At the overall best-F1 confidence.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

/// The result of [`evaluate`]; `--json` prints it as is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub images: usize,
    pub instances: usize,
    pub predictions: usize,
    pub map50: f64,
    pub map50_95: f64,
    /// Mean over classes with ground truth, at `best_f1_conf`.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub best_f1_conf: f64,
    pub per_class: Vec<ClassMetrics>,
    #[serde(skip)]
    pub curves: Curves,
}

/// Curves behind the figures, for plots.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curves {
    /// Confidence grid.
    pub conf: Vec<f64>,
    /// Per class (`None` without ground truth): interpolated precision at recall 0:.01:1, IoU .5.
    pub pr50: Vec<Option<Vec<f64>>>,
    /// Per class: precision, recall and F1 over `conf` at IoU .5 (empty without ground truth).
    pub precision: Vec<Vec<f64>>,
    pub recall: Vec<Vec<f64>>,
    pub f1: Vec<Vec<f64>>,
}

impl Evaluation {
    /// Recall of `class` at IoU .5 counting predictions scored at least `conf` (from the
    /// curves' confidence grid); `None` when the class has no ground truth.
    pub fn recall_at(&self, class: usize, conf: f64) -> Option<f64> {
        let curve = self.curves.recall.get(class).filter(|c| !c.is_empty())?;
        let i = self
            .curves
            .conf
            .partition_point(|&c| c < conf)
            .min(curve.len() - 1);
        curve.get(i).copied()
    }
}

/// Evaluates predictions (already checked by [`crate::match_predictions`]) against ground truth.
pub fn evaluate(
    truths: &[ImageTruth],
    preds: &[Prediction],
    index: &PredictionIndex,
    names: &[String],
) -> Result<Evaluation> {
    let per_class: Vec<ClassEval> = (0..names.len())
        .into_par_iter()
        .map(|c| evaluate_class(c, truths, preds, index))
        .collect();
    let valid: Vec<usize> = (0..names.len())
        .filter(|&c| per_class[c].n_gt > 0)
        .collect();
    if valid.is_empty() {
        return Err(Error::Core(trident_core::Error::invalid(
            "ground truth",
            "the split has no labelled objects; there is nothing to evaluate against",
        )));
    }
    let conf: Vec<f64> = (0..F1_GRID)
        .map(|i| i as f64 / (F1_GRID - 1) as f64)
        .collect();
    let mut curves = Curves {
        conf: conf.clone(),
        ..Default::default()
    };
    for e in &per_class {
        curves
            .pr50
            .push(e.precision.as_ref().map(|p| p[0].to_vec()));
        let (p, r, f) = if e.n_gt > 0 {
            f1_curves(e, &conf)
        } else {
            Default::default()
        };
        curves.precision.push(p);
        curves.recall.push(r);
        curves.f1.push(f);
    }
    // Best operating point: the confidence of maximal mean F1 over classes with ground truth.
    let mean_at = |curve: &Vec<Vec<f64>>, i: usize| {
        valid.iter().map(|&c| curve[c][i]).sum::<f64>() / valid.len() as f64
    };
    let mean_f1: Vec<f64> = (0..F1_GRID).map(|i| mean_at(&curves.f1, i)).collect();
    let best = (0..F1_GRID).fold(0, |b, i| if mean_f1[i] > mean_f1[b] { i } else { b });
    let best_conf = conf[best];

    let mean = |f: &dyn Fn(&ClassEval) -> Option<f64>| {
        valid.iter().filter_map(|&c| f(&per_class[c])).sum::<f64>() / valid.len() as f64
    };
    let class_metrics = per_class
        .iter()
        .enumerate()
        .map(|(c, e)| {
            let above = e.scores.partition_point(|&s| s >= best_conf);
            let tp = e.matched[..above].iter().filter(|m| m[0]).count();
            let at = |curve: &Vec<Vec<f64>>| curve[c].get(best).copied().unwrap_or(0.0);
            ClassMetrics {
                class: c,
                name: names[c].clone(),
                instances: e.n_gt,
                predictions: e.scores.len(),
                ap50: e.ap(0),
                ap50_95: e.ap50_95(),
                precision: at(&curves.precision),
                recall: at(&curves.recall),
                f1: at(&curves.f1),
                tp,
                fp: above - tp,
                fn_: e.n_gt - tp,
            }
        })
        .collect();
    Ok(Evaluation {
        images: truths.len(),
        instances: per_class.iter().map(|e| e.n_gt).sum(),
        predictions: per_class.iter().map(|e| e.scores.len()).sum(),
        map50: mean(&|e| e.ap(0)),
        map50_95: mean(&|e| e.ap50_95()),
        precision: mean_at(&curves.precision, best),
        recall: mean_at(&curves.recall, best),
        f1: mean_at(&curves.f1, best),
        best_f1_conf: best_conf,
        per_class: class_metrics,
        curves,
    })
}

/// Precision, recall and F1 at IoU .5 for detections with score ≥ each confidence. With no
/// detection above a confidence, precision is 1 and recall 0 (so F1 is 0).
fn f1_curves(e: &ClassEval, conf: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut cum_tp = Vec::with_capacity(e.matched.len());
    let mut tp = 0usize;
    for m in &e.matched {
        tp += usize::from(m[0]);
        cum_tp.push(tp);
    }
    let (mut ps, mut rs, mut fs) = (Vec::new(), Vec::new(), Vec::new());
    for &c in conf {
        let n = e.scores.partition_point(|&s| s >= c);
        let tp = if n == 0 { 0 } else { cum_tp[n - 1] } as f64;
        let p = if n == 0 { 1.0 } else { tp / n as f64 };
        let r = tp / e.n_gt as f64;
        ps.push(p);
        rs.push(r);
        fs.push(if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        });
    }
    (ps, rs, fs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_core::BoxXywh;

    #[test]
    fn operating_point_sits_between_true_and_false_positive_scores() {
        let truths: Vec<ImageTruth> = (0..4)
            .map(|i| ImageTruth {
                stem: format!("i{i}"),
                width: 100,
                height: 100,
                boxes: vec![(0, BoxXywh::new(10.0, 10.0, 30.0, 30.0))],
            })
            .collect();
        let mut preds: Vec<Prediction> = (0..4)
            .map(|i| Prediction {
                image: format!("i{i}"),
                class: 0,
                score: 0.8,
                bbox: [10.0, 10.0, 30.0, 30.0],
            })
            .collect();
        // Low-scored false positives: the best threshold must exclude them.
        preds.extend((0..4).map(|i| Prediction {
            image: format!("i{i}"),
            class: 0,
            score: 0.3,
            bbox: [60.0, 60.0, 20.0, 20.0],
        }));
        let names = vec!["a".to_string()];
        let idx = crate::match_predictions("p", &truths, &preds, 1).unwrap();
        let ev = evaluate(&truths, &preds, &idx, &names).unwrap();
        assert!(
            ev.best_f1_conf > 0.3 && ev.best_f1_conf <= 0.8,
            "{}",
            ev.best_f1_conf
        );
        assert_eq!((ev.precision, ev.recall, ev.f1), (1.0, 1.0, 1.0));
        assert_eq!(
            (ev.per_class[0].tp, ev.per_class[0].fp, ev.per_class[0].fn_),
            (4, 0, 0)
        );
        assert_eq!(ev.map50, 1.0);
    }

    #[test]
    fn a_split_without_labels_cannot_be_evaluated() {
        let truths = vec![ImageTruth {
            stem: "a".into(),
            width: 10,
            height: 10,
            boxes: vec![],
        }];
        let idx = crate::match_predictions("p", &truths, &[], 1).unwrap();
        assert!(evaluate(&truths, &[], &idx, &["a".into()]).is_err());
    }
}
