//! Detections judged against ground truth, and what is fitted on the judgement: temperatures
//! (NLL), D-ECE with its reliability bins (Küppers et al. 2020), F-beta thresholds.

use serde::Serialize;
use trident_core::calibration::apply_temperature;
use trident_core::dataset::ImageTruth;
use trident_core::geometry::BoxXyxy;
use trident_core::postprocess::Detection;

/// One detection as calibration sees it: its score, class and whether it found an object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judged {
    pub score: f32,
    pub class: usize,
    pub tp: bool,
}

/// Greedy matching as COCO does it at one IoU: by descending score, a detection takes the
/// unmatched ground-truth box of its class it overlaps most, if that IoU is at least `iou`.
/// Returns one flag per detection (in the given order) and which ground-truth boxes were found.
pub fn match_image(dets: &[Detection], truth: &ImageTruth, iou: f64) -> (Vec<bool>, Vec<bool>) {
    let gts: Vec<BoxXyxy> = truth.boxes.iter().map(|(_, b)| b.to_xyxy()).collect();
    let mut taken = vec![false; gts.len()];
    let mut flags = vec![false; dets.len()];
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|&a, &b| dets[b].score.total_cmp(&dets[a].score));
    for i in order {
        let d = &dets[i];
        let mut best: Option<(usize, f64)> = None;
        for (g, gt) in gts.iter().enumerate() {
            if taken[g] || truth.boxes[g].0 != d.class {
                continue;
            }
            let o = d.bbox.iou(gt);
            if o >= iou && best.is_none_or(|(_, b)| o > b) {
                best = Some((g, o));
            }
        }
        if let Some((g, _)) = best {
            taken[g] = true;
            flags[i] = true;
        }
    }
    (flags, taken)
}

/// Every detection of every image, judged.
pub fn judge(per_image: &[Vec<Detection>], truths: &[ImageTruth], iou: f64) -> Vec<Judged> {
    let mut out = Vec::new();
    for (dets, truth) in per_image.iter().zip(truths) {
        let (flags, _) = match_image(dets, truth, iou);
        out.extend(dets.iter().zip(flags).map(|(d, tp)| Judged {
            score: d.score,
            class: d.class,
            tp,
        }));
    }
    out
}

/// Mean negative log-likelihood of the match labels under the scores rescaled by `t`.
pub fn nll(samples: &[Judged], t: f32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|s| {
            let p = f64::from(apply_temperature(s.score, t)).clamp(1e-7, 1.0 - 1e-7);
            if s.tp { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    sum / samples.len() as f64
}

/// The temperature minimising [`nll`]. With `a = 1/T` the NLL is that of a one-coefficient
/// logistic regression on the logit, convex in `a`, so a golden-section search over
/// `a ∈ [1/20, 20]` finds the minimum. Returns 1 without both matched and unmatched samples.
pub fn fit_temperature(samples: &[Judged]) -> f32 {
    let positives = samples.iter().filter(|s| s.tp).count();
    if positives == 0 || positives == samples.len() {
        return 1.0;
    }
    let f = |a: f64| nll(samples, (1.0 / a) as f32);
    let (mut lo, mut hi) = (0.05f64, 20.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut x1, mut x2) = (hi - g * (hi - lo), lo + g * (hi - lo));
    let (mut f1, mut f2) = (f(x1), f(x2));
    for _ in 0..80 {
        if f1 <= f2 {
            hi = x2;
            (x2, f2) = (x1, f1);
            x1 = hi - g * (hi - lo);
            f1 = f(x1);
        } else {
            lo = x1;
            (x1, f1) = (x2, f2);
            x2 = lo + g * (hi - lo);
            f2 = f(x2);
        }
        if hi - lo < 1e-6 {
            break;
        }
    }
    let a = (lo + hi) / 2.0;
    // Round to what the tables print, so the file applies exactly what was measured.
    let t = (1.0 / a) as f32;
    (t * 10_000.0).round() / 10_000.0
}

/// One confidence bin of a reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ReliabilityBin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean score of the bin's detections.
    pub confidence: f64,
    /// Fraction of them that are true positives.
    pub precision: f64,
}

/// Detection expected calibration error over confidence alone (Küppers et al. 2020, eq. 3 with
/// one dimension): `Σ_b |b|/N · |precision(b) − confidence(b)|` over `bins` equal-width bins of
/// `[0, 1]`, with each sample's score rescaled by `temperature(class)`.
pub fn dece(
    samples: &[Judged],
    bins: usize,
    temperature: impl Fn(usize) -> f32,
) -> (f64, Vec<ReliabilityBin>) {
    let mut count = vec![0usize; bins];
    let mut conf = vec![0.0f64; bins];
    let mut tp = vec![0usize; bins];
    for s in samples {
        let p = f64::from(apply_temperature(s.score, temperature(s.class)));
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += p;
        tp[b] += usize::from(s.tp);
    }
    let n = samples.len().max(1) as f64;
    let mut error = 0.0;
    let table = (0..bins)
        .map(|b| {
            let c = count[b].max(1) as f64;
            let bin = ReliabilityBin {
                lo: b as f64 / bins as f64,
                hi: (b + 1) as f64 / bins as f64,
                count: count[b],
                confidence: conf[b] / c,
                precision: tp[b] as f64 / c,
            };
            error += count[b] as f64 / n * (bin.precision - bin.confidence).abs();
            bin
        })
        .collect();
    (error, table)
}

/// A class's operating point on the fused score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassThreshold {
    pub class: String,
    pub beta: f64,
    /// Keep fused detections scoring at least this (0: keep all).
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
    pub fbeta: f64,
    pub instances: usize,
}

/// The threshold maximising F-beta for one class. `samples` are that class's judged detections,
/// `instances` its ground-truth count. The cut sits halfway between the last kept score and the
/// next one down (0 when keeping everything is best), so it does not hinge on one exact value.
/// `None` without ground truth or detections.
pub fn best_threshold(
    class: &str,
    samples: &[Judged],
    instances: usize,
    beta: f64,
) -> Option<ClassThreshold> {
    if instances == 0 || samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<&Judged> = samples.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let b2 = beta * beta;
    let (mut tp, mut best) = (0usize, None::<(f64, usize, f64, f64)>);
    for (k, s) in sorted.iter().enumerate() {
        tp += usize::from(s.tp);
        // Only cut between distinct scores: a threshold keeps every detection at its score.
        if sorted.get(k + 1).is_some_and(|n| n.score == s.score) {
            continue;
        }
        let p = tp as f64 / (k + 1) as f64;
        let r = tp as f64 / instances as f64;
        let f = if p + r > 0.0 {
            (1.0 + b2) * p * r / (b2 * p + r)
        } else {
            0.0
        };
        if best.is_none_or(|(bf, ..)| f > bf) {
            best = Some((f, k, p, r));
        }
    }
    let (fbeta, k, precision, recall) = best?;
    let threshold = match sorted.get(k + 1) {
        Some(next) => (sorted[k].score + next.score) / 2.0,
        None => 0.0,
    };
    Some(ClassThreshold {
        class: class.to_string(),
        beta,
        threshold,
        precision,
        recall,
        fbeta,
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_core::geometry::BoxXywh;

    fn det(class: usize, score: f32, x: f64) -> Detection {
        Detection {
            class,
            score,
            bbox: BoxXyxy::new(x, 0.0, x + 10.0, 10.0),
        }
    }

    #[test]
    fn matching_is_greedy_by_score_one_object_once_same_class() {
        let truth = ImageTruth {
            stem: "a".into(),
            width: 100,
            height: 100,
            boxes: vec![
                (0, BoxXywh::new(0.0, 0.0, 10.0, 10.0)),
                (1, BoxXywh::new(50.0, 0.0, 10.0, 10.0)),
            ],
        };
        let dets = [
            det(0, 0.5, 1.0),
            det(0, 0.9, 0.0),
            det(0, 0.8, 50.0),
            det(1, 0.3, 51.0),
        ];
        let (flags, found) = match_image(&dets, &truth, 0.5);
        // The 0.9 box takes the object; the 0.5 duplicate and the wrong-class box are misses.
        assert_eq!(flags, vec![false, true, false, true]);
        assert_eq!(found, vec![true, true]);
    }

    /// Scores whose truth is `p` but reported as `sigmoid(k · logit p)`: an over-confident model
    /// for k > 1. Labels are drawn deterministically with frequency p.
    fn overconfident(k: f64) -> Vec<Judged> {
        let mut out = Vec::new();
        for i in 0..40 {
            let p = 0.05 + 0.9 * i as f64 / 39.0;
            let reported = 1.0 / (1.0 + (-(k * (p / (1.0 - p)).ln())).exp());
            for j in 0..100 {
                out.push(Judged {
                    score: reported as f32,
                    class: 0,
                    tp: (j as f64) < p * 100.0,
                });
            }
        }
        out
    }

    #[test]
    fn temperature_undoes_over_confidence_and_dece_falls() {
        let samples = overconfident(3.0);
        let t = fit_temperature(&samples);
        assert!((t - 3.0).abs() < 0.15, "fitted {t}");
        assert!(nll(&samples, t) < nll(&samples, 1.0));
        let (before, _) = dece(&samples, 10, |_| 1.0);
        let (after, bins) = dece(&samples, 10, |_| t);
        assert!(before > 0.1 && after < before / 3.0, "{before} → {after}");
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), samples.len());
        // Already calibrated scores keep T ≈ 1.
        let t1 = fit_temperature(&overconfident(1.0));
        assert!((t1 - 1.0).abs() < 0.1, "fitted {t1}");
    }

    #[test]
    fn threshold_maximises_fbeta_and_recall_weighting_lowers_it() {
        let s = |score, tp| Judged {
            score,
            class: 0,
            tp,
        };
        let samples = [
            s(0.9, true),
            s(0.8, true),
            s(0.7, false),
            s(0.6, true),
            s(0.5, false),
            s(0.45, false),
            s(0.4, false),
            s(0.35, true),
        ];
        let f1 = best_threshold("a", &samples, 6, 1.0).unwrap();
        // Keeping the top 4 (3 TP of 6 objects): P 0.75, R 0.5, F1 0.6, the best cut.
        assert!((f1.fbeta - 0.6).abs() < 1e-9, "{f1:?}");
        assert!((f1.threshold - 0.55).abs() < 1e-6);
        // F3 prefers keeping all eight (P 0.5, R 0.667): no cut at all.
        let f3 = best_threshold("a", &samples, 6, 3.0).unwrap();
        assert_eq!(f3.threshold, 0.0);
        assert!(
            f3.threshold < f1.threshold && f3.recall > f1.recall,
            "{f3:?}"
        );
        assert!(best_threshold("a", &samples, 0, 1.0).is_none());
    }
}
