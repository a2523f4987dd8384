//! Per-class COCO evaluation, step for step as pycocotools' `evaluateImg` and `accumulate`.
//!
//! Ordering matters for exact agreement: detections of an image and class are sorted by score
//! with a stable sort (file order breaks ties) and cut to [`MAX_DETS`]; matching is greedy in
//! that order, each detection taking the unmatched ground truth of highest IoU (a later one on
//! equal IoU); the class's detections are then stably sorted by score in image order.

use trident_core::dataset::ImageTruth;
use trident_core::prediction::Prediction;

use crate::input::PredictionIndex;
use crate::{MAX_DETS, iou_thresholds, recall_thresholds};

pub(crate) const T: usize = 10;
pub(crate) const R: usize = 101;

pub(crate) struct ClassEval {
    pub n_gt: usize,
    /// Detections kept for evaluation, sorted by descending score.
    pub scores: Vec<f64>,
    /// `matched[d][t]`: detection `d` is a true positive at IoU threshold `t`.
    pub matched: Vec<[bool; T]>,
    /// Interpolated precision at each recall threshold, per IoU threshold; `None` without
    /// ground truth (pycocotools' -1: the class does not count towards the mean).
    pub precision: Option<Vec<[f64; R]>>,
}

impl ClassEval {
    pub fn ap(&self, t: usize) -> Option<f64> {
        self.precision
            .as_ref()
            .map(|p| p[t].iter().sum::<f64>() / R as f64)
    }

    pub fn ap50_95(&self) -> Option<f64> {
        self.precision
            .as_ref()
            .map(|p| p.iter().flatten().sum::<f64>() / (T * R) as f64)
    }
}

/// IoU of two `[x, y, w, h]` boxes with pycocotools' arithmetic (areas from w·h).
fn iou_xywh(d: &[f64; 4], g: &[f64; 4]) -> f64 {
    let iw = (d[0] + d[2]).min(g[0] + g[2]) - d[0].max(g[0]);
    if iw <= 0.0 {
        return 0.0;
    }
    let ih = (d[1] + d[3]).min(g[1] + g[3]) - d[1].max(g[1]);
    if ih <= 0.0 {
        return 0.0;
    }
    let inter = iw * ih;
    inter / (d[2] * d[3] + g[2] * g[3] - inter)
}

pub(crate) fn evaluate_class(
    class: usize,
    truths: &[ImageTruth],
    preds: &[Prediction],
    index: &PredictionIndex,
) -> ClassEval {
    let thr = iou_thresholds();
    let mut n_gt = 0;
    let mut dets: Vec<(f64, [bool; T])> = Vec::new();
    let mut ious: Vec<f64> = Vec::new();
    for (img, truth) in truths.iter().enumerate() {
        let gts: Vec<[f64; 4]> = truth
            .boxes
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, b)| b.to_array())
            .collect();
        let mut order = index.by_image_class[img][class].clone();
        if gts.is_empty() && order.is_empty() {
            continue;
        }
        n_gt += gts.len();
        order.sort_by(|&a, &b| preds[b].score.total_cmp(&preds[a].score));
        order.truncate(MAX_DETS);
        ious.clear();
        for &d in &order {
            for g in &gts {
                ious.push(iou_xywh(&preds[d].bbox, g));
            }
        }
        let ng = gts.len();
        let mut gt_taken = vec![[false; T]; ng];
        for (di, &d) in order.iter().enumerate() {
            let mut flags = [false; T];
            for (t, flag) in flags.iter_mut().enumerate() {
                let mut best = thr[t].min(1.0 - 1e-10);
                let mut m = None;
                for g in 0..ng {
                    if gt_taken[g][t] {
                        continue;
                    }
                    let v = ious[di * ng + g];
                    if v < best {
                        continue;
                    }
                    best = v;
                    m = Some(g);
                }
                if let Some(g) = m {
                    gt_taken[g][t] = true;
                    *flag = true;
                }
            }
            dets.push((preds[d].score, flags));
        }
    }
    // Stable: equal scores keep image order, as numpy's mergesort does.
    dets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let precision = (n_gt > 0).then(|| accumulate(&dets, n_gt));
    ClassEval {
        n_gt,
        scores: dets.iter().map(|d| d.0).collect(),
        matched: dets.iter().map(|d| d.1).collect(),
        precision,
    }
}

fn accumulate(dets: &[(f64, [bool; T])], n_gt: usize) -> Vec<[f64; R]> {
    let rec_thr = recall_thresholds();
    let nd = dets.len();
    let mut out = vec![[0.0; R]; T];
    let mut rc = vec![0.0; nd];
    let mut pr = vec![0.0; nd];
    for (t, q) in out.iter_mut().enumerate() {
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        for (i, d) in dets.iter().enumerate() {
            if d.1[t] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            rc[i] = tp / n_gt as f64;
            pr[i] = tp / (fp + tp + f64::EPSILON);
        }
        for i in (1..nd).rev() {
            if pr[i] > pr[i - 1] {
                pr[i - 1] = pr[i];
            }
        }
        for (ri, &r) in rec_thr.iter().enumerate() {
            let idx = rc.partition_point(|&x| x < r);
            if idx >= nd {
                break;
            }
            q[ri] = pr[idx];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_core::BoxXywh;

    fn truth(stem: &str, boxes: &[(usize, [f64; 4])]) -> ImageTruth {
        ImageTruth {
            stem: stem.into(),
            width: 100,
            height: 100,
            boxes: boxes
                .iter()
                .map(|(c, b)| (*c, BoxXywh::new(b[0], b[1], b[2], b[3])))
                .collect(),
        }
    }

    fn pred(image: &str, class: usize, score: f64, bbox: [f64; 4]) -> Prediction {
        Prediction {
            image: image.into(),
            class,
            score,
            bbox,
        }
    }

    #[test]
    fn perfect_predictions_give_ap_one_and_a_false_positive_above_them_lowers_it() {
        let truths = vec![
            truth("a", &[(0, [10.0, 10.0, 20.0, 20.0])]),
            truth("b", &[(0, [50.0, 50.0, 30.0, 30.0])]),
        ];
        let mut preds = vec![
            pred("a", 0, 0.9, [10.0, 10.0, 20.0, 20.0]),
            pred("b", 0, 0.8, [50.0, 50.0, 30.0, 30.0]),
        ];
        let idx = crate::match_predictions("p", &truths, &preds, 1).unwrap();
        let e = evaluate_class(0, &truths, &preds, &idx);
        assert_eq!(e.ap(0), Some(1.0));
        assert_eq!(e.ap50_95(), Some(1.0));
        // A confident false positive ranks first: raw precision 0, 1/2, 2/3 at recall 0, 1/2, 1;
        // the monotone envelope lifts every recall threshold to 2/3.
        preds.push(pred("a", 0, 0.95, [70.0, 70.0, 10.0, 10.0]));
        let idx = crate::match_predictions("p", &truths, &preds, 1).unwrap();
        let e = evaluate_class(0, &truths, &preds, &idx);
        let ap = e.ap(0).unwrap();
        assert!((ap - 2.0 / 3.0).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn class_without_ground_truth_has_no_ap_and_missing_predictions_give_zero() {
        let truths = vec![truth("a", &[(0, [10.0, 10.0, 20.0, 20.0])])];
        let preds = vec![pred("a", 1, 0.9, [10.0, 10.0, 20.0, 20.0])];
        let idx = crate::match_predictions("p", &truths, &preds, 2).unwrap();
        assert_eq!(evaluate_class(1, &truths, &preds, &idx).ap(0), None);
        assert_eq!(evaluate_class(0, &truths, &preds, &idx).ap(0), Some(0.0));
    }

    #[test]
    fn a_box_shifted_to_iou_0_6_counts_at_050_and_055_only() {
        // Same height, x offset s: IoU = (20 - s) / (20 + s) = 0.6 at s = 5.
        let truths = vec![truth("a", &[(0, [10.0, 10.0, 20.0, 20.0])])];
        let preds = vec![pred("a", 0, 0.9, [15.0, 10.0, 20.0, 20.0])];
        let idx = crate::match_predictions("p", &truths, &preds, 1).unwrap();
        let e = evaluate_class(0, &truths, &preds, &idx);
        assert_eq!(
            e.matched[0],
            [
                true, true, true, false, false, false, false, false, false, false
            ]
        );
        assert!((e.ap50_95().unwrap() - 0.3).abs() < 1e-12);
    }
}
