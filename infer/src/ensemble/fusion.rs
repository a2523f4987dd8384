//! Fusing the detections of several models: weighted boxes fusion (WBF; Solovyev, Wang,
//! Gabruseva, "Weighted boxes fusion: Ensembling boxes from different object detection models",
//! Image and Vision Computing 107, 2021) and weighted NMS.
//!
//! Both reproduce `ensemble-boxes` 1.0.9 (`weighted_boxes_fusion`, `nms`), the package the
//! ensemble was tuned with, to the bit (`tests/fusion_parity.rs`), float32 steps included.
//! Fixed here where the package is unspecified or unsafe:
//! - Ties: its `argsort()[::-1]` is an unstable quicksort (numpy's SIMD sort on AVX-512 hosts
//!   reorders equal keys from 4 elements on), so equal scores come in a platform-dependent order.
//!   Here the later input comes first, as on numpy's and numba's insertion-sort paths.
//! - Bad weights (count, sign, NaN, all zero; more than 64 models) are an error, NaN detections
//!   are dropped, clipping to `[0, 1]` is optional (`clip_unit`; the runtime fuses pixel boxes)
//!   and warned once per call. Model weights are summed left to right (numpy's order, ≤ 9 models).
//!
//! Cost for `n` detections and `k` clusters (WBF) or kept boxes (NMS) per class: O(n log n + n·k),
//! as the package; a call allocates a fixed handful of buffers (two sorts' scratch included), none
//! per box.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use trident_core::calibration::{FusionMethod, FusionTable};
use trident_core::geometry::BoxXyxy;
use trident_core::postprocess::Detection;

use crate::error::{Error, Result};

/// How WBF scores a fused box; shared with the calibration tables.
pub use trident_core::calibration::ConfType;

/// Settings of [`weighted_boxes_fusion`]; the defaults are the package's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WbfOptions {
    /// A box joins the cluster whose current fused box it overlaps most if that IoU is > this.
    pub iou_thr: f64,
    /// Detections whose own (unweighted) score is below this are dropped first.
    pub skip_box_thr: f64,
    /// One weight per model (default: all 1); scales scores and the box average.
    pub weights: Option<Vec<f64>>,
    pub conf_type: ConfType,
    /// Clip coordinates to `[0, 1]` as the package does (normalised boxes); false for pixels.
    pub clip_unit: bool,
}

impl Default for WbfOptions {
    fn default() -> Self {
        Self {
            iou_thr: 0.55,
            skip_box_thr: 0.0,
            weights: None,
            conf_type: ConfType::Avg,
            clip_unit: true,
        }
    }
}

/// Settings of [`nms_fusion_with`]; the defaults are those of the package's `nms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NmsFusionOptions {
    /// A box overlapping a kept box of its class by IoU > this is suppressed.
    pub iou_thr: f64,
    /// One weight per model: scores become `score · w / Σw`.
    pub weights: Option<Vec<f64>>,
    /// Clip coordinates to `[0, 1]` as the package does; false for pixel boxes.
    pub clip_unit: bool,
}

impl Default for NmsFusionOptions {
    fn default() -> Self {
        Self {
            iou_thr: 0.5,
            weights: None,
            clip_unit: true,
        }
    }
}

/// The ensemble's fusion step as configured: `method: wbf` or `method: nms` with its options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Fusion {
    Wbf(WbfOptions),
    Nms(NmsFusionOptions),
}

impl Fusion {
    /// The fusion calibration fitted, for members in `variants` order. Boxes are in frame
    /// pixels on the device, so nothing is clipped to `[0, 1]`.
    pub fn from_table(table: &FusionTable, variants: &[String]) -> Fusion {
        let weights = (!table.weights.is_empty()).then(|| {
            variants
                .iter()
                .map(|v| table.weights.get(v).copied().unwrap_or(1.0))
                .collect()
        });
        match table.method {
            FusionMethod::Wbf => Fusion::Wbf(WbfOptions {
                iou_thr: table.iou_thr,
                skip_box_thr: table.skip_box_thr,
                weights,
                conf_type: table.conf_type,
                clip_unit: false,
            }),
            FusionMethod::Nms => Fusion::Nms(NmsFusionOptions {
                iou_thr: table.iou_thr,
                weights,
                clip_unit: false,
            }),
        }
    }

    pub fn fuse(&self, per_model: &[Vec<Detection>]) -> Result<Vec<Detection>> {
        match self {
            Fusion::Wbf(o) => weighted_boxes_fusion(per_model, o),
            Fusion::Nms(o) => nms_fusion_with(per_model, o),
        }
    }
}

/// Weighted boxes fusion (`ensemble_boxes_wbf.weighted_boxes_fusion`, `allows_overflow=False`).
/// Per class, by descending weighted score, each box joins the cluster whose *current* fused box
/// it overlaps most if that IoU is strictly above `iou_thr` (`find_matching_box_fast`), else
/// starts one; a cluster's box is its boxes' average weighted by weighted score
/// (`get_weighted_box`) and its score is rescaled per `conf_type`. Sorted by descending score.
pub fn weighted_boxes_fusion(
    per_model: &[Vec<Detection>],
    opts: &WbfOptions,
) -> Result<Vec<Detection>> {
    let models = per_model.len();
    let weights = opts.weights.as_deref();
    check_weights(weights, models)?;
    let weight = |t: usize| weights.map_or(1.0, |w| w[t]);
    // `prefilter_boxes` drops `score < skip_box_thr` on the raw score, sorts on the weighted one.
    let below = |s: f64| matches!(s.partial_cmp(&opts.skip_box_thr), Some(Ordering::Less));
    let key = |t: usize, s: f64| (!below(s)).then(|| s * weight(t));
    let entries = admit_sorted(per_model, opts.clip_unit, key);

    // Clustering, one class at a time.
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut class_start = 0;
    for (i, e) in entries.iter().enumerate() {
        if i > 0 && e.label != entries[i - 1].label {
            class_start = clusters.len();
        }
        match best_match(&clusters[class_start..], &e.b, opts.iou_thr) {
            Some(c) => clusters[class_start + c].add(e, weight(e.model), opts.conf_type),
            None => clusters.push(Cluster::new(e, weight(e.model))),
        }
    }

    // "Rescale confidence based on number of models and boxes".
    let total = (0..models).map(weight).fold(0.0, |s, w| s + w);
    let max_w = (0..models).map(weight).fold(f64::NEG_INFINITY, f64::max);
    // Weights of the models present in a cluster (`np.unique` of model ids) or absent, in order.
    let weight_of = |set: u64, present: bool| {
        let models = (0..models).filter(|t| (set >> t & 1 == 1) == present);
        models.map(weight).fold(0.0, |s, w| s + w)
    };
    for c in &mut clusters {
        let (s, n, w) = (c.score, c.n as f64, c.weight);
        c.score = match opts.conf_type {
            ConfType::BoxAndModelAvg => s * n / w * weight_of(c.models, true) / total,
            ConfType::AbsentModelAwareAvg => s * n / (w + weight_of(c.models, false)),
            ConfType::Max => s / max_w,
            ConfType::Avg => s * models.min(c.n) as f64 / total,
        };
    }
    // `argsort()[::-1]` over the clusters of all classes: among equals, the later class, then the
    // later cluster first.
    clusters.reverse();
    clusters.sort_by(|a, b| descending(a.score, b.score));
    let fused = clusters
        .iter()
        .map(|c| detection(c.label, c.score, &c.fused));
    Ok(fused.collect())
}

/// Weighted NMS across models, the package's `nms(boxes, scores, labels, weights, iou_thr)`;
/// clips to `[0, 1]` like it ([`nms_fusion_with`] can fuse pixel boxes).
pub fn nms_fusion(
    per_model: &[Vec<Detection>],
    weights: Option<&[f64]>,
    iou_thr: f64,
) -> Result<Vec<Detection>> {
    let weights = weights.map(<[f64]>::to_vec);
    let opts = NmsFusionOptions {
        iou_thr,
        weights,
        clip_unit: true,
    };
    nms_fusion_with(per_model, &opts)
}

/// `ensemble_boxes_nms.nms_method(method=3)`: scores become `score · w_model / Σw`, all models'
/// boxes are pooled, greedy NMS runs per class (`nms_float_fast`: IoU > thr suppresses). Like
/// the package's, the output is grouped by ascending class id, each by descending score.
pub fn nms_fusion_with(
    per_model: &[Vec<Detection>],
    opts: &NmsFusionOptions,
) -> Result<Vec<Detection>> {
    let weights = opts.weights.as_deref();
    check_weights(weights, per_model.len())?;
    let total = weights.map_or(1.0, |w| w.iter().fold(0.0, |s, x| s + x));
    let key = |t: usize, s: f64| Some(weights.map_or(s, |w| s * w[t] / total));
    let entries = admit_sorted(per_model, opts.clip_unit, key);
    let mut kept: Vec<Detection> = Vec::with_capacity(entries.len());
    let mut class_start = 0;
    for (i, e) in entries.iter().enumerate() {
        if i > 0 && e.label != entries[i - 1].label {
            class_start = kept.len();
        }
        // The package keeps the boxes with `ovr <= thresh`, so a NaN overlap suppresses.
        let suppressed = kept[class_start..].iter().any(|k| {
            let k = [k.bbox.x1, k.bbox.y1, k.bbox.x2, k.bbox.y2];
            not_at_most(iou_np(&k, &e.b), opts.iou_thr)
        });
        if !suppressed {
            kept.push(detection(e.label, e.score, &e.b));
        }
    }
    Ok(kept)
}

/// A detection admitted to fusion: class, sort key (the weighted score), model, checked box.
struct Entry {
    label: usize,
    score: f64,
    model: usize,
    b: [f64; 4],
}

/// `prefilter_boxes` (WBF) / `prepare_boxes` (NMS) and the sort after them: the detections `key`
/// admits (`Some(weighted score)`) with a valid box, by class id, then by descending key, later
/// input first among equals. (The package takes WBF's classes in order of first appearance;
/// that only orders exact ties between classes, which its unstable sort leaves open anyway.)
fn admit_sorted(
    per_model: &[Vec<Detection>],
    clip_unit: bool,
    key: impl Fn(usize, f64) -> Option<f64>,
) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(per_model.iter().map(Vec::len).sum());
    let (mut clipped, mut nan) = (0, 0);
    for (model, dets) in per_model.iter().enumerate() {
        for d in dets {
            let Some(score) = key(model, f64::from(d.score)) else {
                continue;
            };
            let mut b = [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2];
            if score.is_nan() || b.iter().any(|x| x.is_nan()) {
                nan += 1;
                continue;
            }
            // Corners swapped into order, then clipped (NMS clips first: the same box).
            for k in 0..2 {
                if b[k + 2] < b[k] {
                    b.swap(k, k + 2);
                }
            }
            if clip_unit {
                for x in b.iter_mut().filter(|x| !(0.0..=1.0).contains(*x)) {
                    *x = x.clamp(0.0, 1.0);
                    clipped += 1;
                }
            }
            if (b[2] - b[0]) * (b[3] - b[1]) == 0.0 {
                continue; // zero area
            }
            entries.push(Entry {
                label: d.class,
                score,
                model,
                b,
            });
        }
    }
    if clipped + nan > 0 {
        tracing::warn!(clipped, nan, "ensemble fusion: boxes clipped or dropped");
    }
    // Stable on the reversed input: later input first among equal keys.
    entries.reverse();
    entries.sort_by(|a, b| a.label.cmp(&b.label).then(descending(a.score, b.score)));
    entries
}

/// One WBF cluster: the package's `weighted_boxes` row (`fused`, `score`, `weight`) and the sums
/// `get_weighted_box` recomputes over the cluster's list; adding in list order reproduces its
/// arithmetic exactly, `float32` accumulator included. A new cluster is the box's own `float64`
/// row until a second box joins.
struct Cluster {
    label: usize,
    fused: [f64; 4],
    score: f64,
    weight: f64,
    acc: [f32; 4],
    conf: f64,
    conf_max: f64,
    weight_sum: f64,
    n: usize,
    /// The models with a box in the cluster, as bits.
    models: u64,
}

impl Cluster {
    fn new(e: &Entry, weight: f64) -> Self {
        Cluster {
            label: e.label,
            fused: e.b,
            score: e.score,
            weight,
            acc: e.b.map(|x| (e.score * x) as f32),
            conf: e.score,
            conf_max: e.score,
            weight_sum: weight,
            n: 1,
            models: 1 << e.model,
        }
    }

    /// `get_weighted_box`: `box = zeros(8, float32)`, `box[4:] += b[1]·b[4:]`, `box[4:] /= conf`
    /// (float64 arithmetic rounded into the float32 box), score and weight stored as float32.
    fn add(&mut self, e: &Entry, weight: f64, conf_type: ConfType) {
        for (a, x) in self.acc.iter_mut().zip(e.b) {
            *a = (f64::from(*a) + e.score * x) as f32;
        }
        (self.conf, self.weight_sum, self.n) =
            (self.conf + e.score, self.weight_sum + weight, self.n + 1);
        self.conf_max = self.conf_max.max(e.score);
        self.models |= 1 << e.model;
        let conf = self.conf;
        self.fused = self.acc.map(|a| f64::from((f64::from(a) / conf) as f32));
        let score = match conf_type {
            ConfType::Max => self.conf_max,
            _ => self.conf / self.n as f64,
        };
        self.score = f64::from(score as f32);
        self.weight = f64::from(self.weight_sum as f32);
    }
}

/// `find_matching_box_fast`: the first cluster of highest IoU (`np.argmax`, to which a NaN is the
/// maximum), if that IoU is strictly above `thr` (`best_iou <= match_iou` means no match).
fn best_match(clusters: &[Cluster], b: &[f64; 4], thr: f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (c, cluster) in clusters.iter().enumerate() {
        let iou = iou_np(&cluster.fused, b);
        if best.is_none_or(|(_, m)| iou > m || iou.is_nan()) {
            best = Some((c, iou));
        }
        if iou.is_nan() {
            break;
        }
    }
    best.filter(|b| not_at_most(b.1, thr)).map(|b| b.0)
}

/// `!(x <= thr)`, the package's test: a NaN IoU matches (WBF) and suppresses (NMS).
fn not_at_most(x: f64, thr: f64) -> bool {
    !matches!(x.partial_cmp(&thr), Some(Ordering::Less | Ordering::Equal))
}

/// IoU as `bb_iou_array` and `nms_float_fast` compute it (`a` the cluster or kept box), with
/// `np.maximum`/`np.minimum`, which propagate NaN.
fn iou_np(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let np_max = |a: f64, b: f64| if a >= b || a.is_nan() { a } else { b };
    let np_min = |a: f64, b: f64| if a <= b || a.is_nan() { a } else { b };
    let iw = np_max(np_min(a[2], b[2]) - np_max(a[0], b[0]), 0.0);
    let ih = np_max(np_min(a[3], b[3]) - np_max(a[1], b[1]), 0.0);
    let inter = iw * ih;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter)
}

/// Descending order as `argsort()[::-1]` gives it: NaN first, `-0.0 == 0.0`, total.
fn descending(a: f64, b: f64) -> Ordering {
    let key = |x: f64| if x.is_nan() { f64::NAN } else { x + 0.0 };
    key(b).total_cmp(&key(a))
}

fn detection(class: usize, score: f64, b: &[f64; 4]) -> Detection {
    let (score, bbox) = (score as f32, BoxXyxy::new(b[0], b[1], b[2], b[3]));
    Detection { class, score, bbox }
}

/// One finite, non-negative weight per model, not all zero; at most 64 models (a cluster's
/// models are the bits of a `u64`).
fn check_weights(weights: Option<&[f64]>, models: usize) -> Result<()> {
    let fine = |x: &f64| (0.0..f64::INFINITY).contains(x);
    let ok = |w: &[f64]| w.len() == models && w.iter().all(fine) && w.iter().any(|x| *x > 0.0);
    if models > 64 || !weights.is_none_or(|w| ok(w) || (models == 0 && w.is_empty())) {
        let e = format!("{models} models, weights {weights:?}");
        let want = "at most 64 models, one finite weight ≥ 0 each, not all 0";
        return Err(Error::Shape(format!("ensemble fusion: {e}: {want}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [f64; 4] = [0.0, 0.0, 10.0, 10.0];
    const B: [f64; 4] = [1.0, 1.0, 11.0, 11.0]; // IoU with A: 81 / 119 ≈ 0.68

    fn d(class: usize, score: f32, b: [f64; 4]) -> Detection {
        detection(class, f64::from(score), &b)
    }

    /// WBF of pixel boxes; no weights when `w` is empty.
    fn wbf(conf_type: ConfType, w: &[f64], models: &[Vec<Detection>]) -> Vec<Detection> {
        let weights = (!w.is_empty()).then(|| w.to_vec());
        let clip_unit = false;
        let opts = WbfOptions {
            weights,
            conf_type,
            clip_unit,
            ..Default::default()
        };
        weighted_boxes_fusion(models, &opts).unwrap()
    }

    fn close(a: impl Into<f64>, b: f64) -> bool {
        (a.into() - b).abs() < 1e-5
    }

    #[test]
    fn agreeing_boxes_average_disjoint_ones_stay_apart_weights_pull() {
        // x1 = (0.8·0 + 0.4·1) / 1.2, x2 = (0.8·10 + 0.4·11) / 1.2, score (0.8 + 0.4) / 2.
        let pair = [vec![d(0, 0.8, A)], vec![d(0, 0.4, B)]];
        let out = wbf(ConfType::Avg, &[], &pair);
        let (s, b) = (out[0].score, out[0].bbox);
        assert!(
            out.len() == 1 && close(s, 0.6) && close(b.x1, 0.4 / 1.2),
            "{out:?}"
        );
        assert!(close(b.x2, 12.4 / 1.2), "{out:?}");
        // Weighted scores 2.4 and 0.4: x1 = 0.4 / 2.8, score (2.4 + 0.4) / 2 · 2 / Σw=4.
        let out = wbf(ConfType::Avg, &[3.0, 1.0], &pair);
        assert!(
            close(out[0].bbox.x1, 0.4 / 2.8) && close(out[0].score, 0.7),
            "{out:?}"
        );
        // Far apart, or another class: each found by one model of two, half its score, own box.
        let far = [20.0, 20.0, 30.0, 30.0];
        let out = wbf(
            ConfType::Avg,
            &[],
            &[vec![d(0, 0.8, A), d(1, 0.7, A)], vec![d(0, 0.4, far)]],
        );
        let want = [d(0, 0.4, A), d(1, 0.35, A), d(0, 0.2, far)];
        assert_eq!(out, want);
    }

    #[test]
    fn absent_model_penalty_avg_versus_absent_model_aware_avg() {
        // Found by one model of three: a third under both.
        for ct in [ConfType::Avg, ConfType::AbsentModelAwareAvg] {
            let out = wbf(ct, &[], &[vec![d(0, 0.9, A)], vec![], vec![]]);
            assert!(close(out[0].score, 0.3), "{ct:?}: {out:?}");
        }
        // Model 0 finds the object twice, model 1 once, model 2 not: s = 2/3 over n = 3 boxes.
        // avg: s·min(3, 3)/3 misses the absent model, absent-aware: s·3/(3 + 1) does not;
        // box_and_model_avg: s·3/3 · (2 models of 3)/3; max: 0.9/1.
        let twice = vec![d(0, 0.9, A), d(0, 0.6, [0.5, 0.5, 10.5, 10.5])];
        let models = [twice, vec![d(0, 0.5, B)], vec![]];
        let s = 2.0 / 3.0;
        for (ct, want) in [
            (ConfType::Avg, s),
            (ConfType::AbsentModelAwareAvg, s * 0.75),
            (ConfType::BoxAndModelAvg, s * 2.0 / 3.0),
            (ConfType::Max, 0.9),
        ] {
            let out = wbf(ct, &[], &models);
            assert!(
                out.len() == 1 && close(out[0].score, want),
                "{ct:?}: {out:?}"
            );
        }
    }
}
