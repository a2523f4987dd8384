//! Realistic noisy predictions made from ground truth, for baselines, tests and benchmarks.
//!
//! A detector's typical mistakes, each with its own rate: localisation jitter (larger for
//! lower scores), missed objects, class confusion, duplicate boxes around one object (the crowded
//! overlaps NMS and fusion must handle) and background false positives at lower scores.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trident_core::dataset::ImageTruth;
use trident_core::prediction::Prediction;

#[derive(Clone, Debug)]
pub struct NoiseModel {
    /// Standard deviation of box-edge jitter, as a fraction of the box size.
    pub jitter: f64,
    /// Probability that an object gets no detection.
    pub miss_rate: f64,
    /// Probability that a detection carries a wrong class.
    pub confusion_rate: f64,
    /// Probability of an extra, shifted duplicate of a detection.
    pub duplicate_rate: f64,
    /// Mean number of background false positives per image.
    pub false_positives_per_image: f64,
}

impl Default for NoiseModel {
    fn default() -> Self {
        NoiseModel {
            jitter: 0.08,
            miss_rate: 0.1,
            confusion_rate: 0.05,
            duplicate_rate: 0.15,
            false_positives_per_image: 1.0,
        }
    }
}

/// Predictions for every image of `truths`, deterministic for `seed`.
pub fn noisy_predictions(
    truths: &[ImageTruth],
    num_classes: usize,
    noise: &NoiseModel,
    seed: u64,
) -> Vec<Prediction> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for t in truths {
        let (iw, ih) = (f64::from(t.width), f64::from(t.height));
        for (class, b) in &t.boxes {
            if rng.random_bool(noise.miss_rate) {
                continue;
            }
            let copies = 1 + usize::from(rng.random_bool(noise.duplicate_rate));
            for copy in 0..copies {
                // Quality q in 0..1: good boxes get high scores, sloppy ones low scores.
                let q: f64 = rng.random::<f64>().powf(0.7);
                let sigma = noise.jitter * (1.5 - q) * if copy > 0 { 2.0 } else { 1.0 };
                let mut g = || gaussian(&mut rng) * sigma;
                let (dx1, dy1, dx2, dy2) = (g() * b.w, g() * b.h, g() * b.w, g() * b.h);
                let x1 = (b.x + dx1).clamp(0.0, iw);
                let y1 = (b.y + dy1).clamp(0.0, ih);
                let x2 = (b.x + b.w + dx2).clamp(0.0, iw);
                let y2 = (b.y + b.h + dy2).clamp(0.0, ih);
                if x2 - x1 < 1.0 || y2 - y1 < 1.0 {
                    continue;
                }
                let cls = if num_classes > 1 && rng.random_bool(noise.confusion_rate) {
                    (class + rng.random_range(1..num_classes)) % num_classes
                } else {
                    *class
                };
                let score = (0.25 + 0.74 * q - if copy > 0 { 0.2 } else { 0.0 }).clamp(0.01, 0.99);
                out.push(Prediction {
                    image: t.stem.clone(),
                    class: cls,
                    score: round6(score),
                    bbox: [x1, y1, x2 - x1, y2 - y1].map(round2),
                });
            }
        }
        // Poisson-distributed background false positives.
        let limit = (-noise.false_positives_per_image).exp();
        let mut p = rng.random::<f64>();
        while p > limit {
            let w = rng.random_range(0.05..0.3) * iw;
            let h = rng.random_range(0.05..0.3) * ih;
            let x = rng.random_range(0.0..iw - w);
            let y = rng.random_range(0.0..ih - h);
            let score = rng.random_range(0.01..0.6);
            out.push(Prediction {
                image: t.stem.clone(),
                class: rng.random_range(0..num_classes),
                score: round6(score),
                bbox: [x, y, w, h].map(round2),
            });
            p *= rng.random::<f64>();
        }
    }
    out
}

/// Standard normal deviate (Box–Muller).
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

// Predictions as detectors write them: scores and pixel boxes with limited precision. Rounding
// also produces the tied scores that the evaluator must order exactly like pycocotools.
fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
