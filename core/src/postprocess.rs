//! Decoding the YOLOv8 output contract and non-maximum suppression.
//!
//! Every detector trident runs — its own checkpoints through tch, exported ONNX through tract or
//! ONNX Runtime, TensorRT engines, user-brought Ultralytics models — emits `[batch, 4 + nc, N]`:
//! rows cx, cy, w, h in model-input pixels, then one sigmoid score per class, no objectness. One
//! decoder serves them all and mirrors Ultralytics' `non_max_suppression` (confidence filter,
//! optional multi-label candidates, at most `max_candidates` kept by score, per-class greedy NMS,
//! `max_det` survivors).

use crate::geometry::BoxXyxy;

/// One detection in model-input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    pub bbox: BoxXyxy,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NmsOptions {
    /// Candidates scoring below this are dropped before NMS.
    pub conf: f32,
    /// Boxes overlapping a kept box of the same class by more than this are suppressed.
    pub iou: f32,
    /// Detections kept per image.
    pub max_det: usize,
    /// Let one anchor propose every class above `conf` (validation), not only its best (inference).
    pub multi_label: bool,
    /// Suppress across classes.
    pub agnostic: bool,
    /// Candidates that enter NMS, highest scores first.
    pub max_candidates: usize,
}

impl NmsOptions {
    /// Ultralytics' validation settings: what mAP is measured with.
    pub fn validation() -> Self {
        NmsOptions {
            conf: 0.001,
            iou: 0.7,
            max_det: 300,
            multi_label: true,
            agnostic: false,
            max_candidates: 30_000,
        }
    }

    /// Ultralytics' prediction defaults with a given confidence floor.
    pub fn inference(conf: f32) -> Self {
        NmsOptions {
            conf,
            iou: 0.7,
            max_det: 300,
            multi_label: false,
            agnostic: false,
            max_candidates: 30_000,
        }
    }
}

/// Decodes one image's output, laid out row-major as `[4 + nc, n]` (the batch slice of the
/// contract), and runs NMS. Returns detections sorted by descending score.
pub fn decode(output: &[f32], num_classes: usize, n: usize, opts: &NmsOptions) -> Vec<Detection> {
    assert_eq!(
        output.len(),
        (4 + num_classes) * n,
        "output is not [4 + nc, n] for nc = {num_classes}, n = {n}"
    );
    let row = |r: usize| &output[r * n..(r + 1) * n];
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    let mut candidates = Vec::new();
    for a in 0..n {
        let push = |candidates: &mut Vec<Detection>, class, score| {
            let (hw, hh) = (f64::from(w[a]) / 2.0, f64::from(h[a]) / 2.0);
            let (x, y) = (f64::from(cx[a]), f64::from(cy[a]));
            candidates.push(Detection {
                class,
                score,
                bbox: BoxXyxy::new(x - hw, y - hh, x + hw, y + hh),
            });
        };
        if opts.multi_label {
            for c in 0..num_classes {
                let s = output[(4 + c) * n + a];
                if s > opts.conf {
                    push(&mut candidates, c, s);
                }
            }
        } else {
            let (mut best, mut best_c) = (f32::NEG_INFINITY, 0);
            for c in 0..num_classes {
                let s = output[(4 + c) * n + a];
                if s > best {
                    (best, best_c) = (s, c);
                }
            }
            if best > opts.conf {
                push(&mut candidates, best_c, best);
            }
        }
    }
    nms(candidates, opts)
}

/// Greedy NMS per class (or across classes when `agnostic`), highest score first.
pub fn nms(mut candidates: Vec<Detection>, opts: &NmsOptions) -> Vec<Detection> {
    candidates.retain(|d| d.score.is_finite() && d.bbox.width() > 0.0 && d.bbox.height() > 0.0);
    // Stable sort keeps anchor order among ties, as torchvision's does in practice.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(opts.max_candidates);
    // Suppression never crosses classes (unless agnostic), so each class is its own greedy pass:
    // the same result as one pass over everything, without comparing boxes of other classes.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, d) in candidates.iter().enumerate() {
        let g = if opts.agnostic { 0 } else { d.class };
        if groups.len() <= g {
            groups.resize(g + 1, Vec::new());
        }
        groups[g].push(i);
    }
    let mut kept: Vec<usize> = Vec::new();
    for group in &groups {
        let mut survivors: Vec<usize> = Vec::new();
        for &i in group {
            if survivors.len() == opts.max_det {
                break;
            }
            let b = &candidates[i].bbox;
            if survivors
                .iter()
                .all(|&k| candidates[k].bbox.iou(b) <= f64::from(opts.iou))
            {
                survivors.push(i);
            }
        }
        kept.extend(survivors);
    }
    // Indices are in descending score order already; merge the classes back into that order.
    kept.sort_unstable();
    kept.truncate(opts.max_det);
    kept.into_iter().map(|i| candidates[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out anchors as the contract does: column a holds anchor a.
    fn output(anchors: &[([f32; 4], [f32; 2])]) -> Vec<f32> {
        let n = anchors.len();
        let mut out = vec![0.0; 6 * n];
        for (a, (b, s)) in anchors.iter().enumerate() {
            for r in 0..4 {
                out[r * n + a] = b[r];
            }
            out[4 * n + a] = s[0];
            out[5 * n + a] = s[1];
        }
        out
    }

    #[test]
    fn overlapping_same_class_boxes_are_suppressed_other_class_kept() {
        let out = output(&[
            ([50.0, 50.0, 20.0, 20.0], [0.9, 0.0]),
            ([51.0, 50.0, 20.0, 20.0], [0.8, 0.0]), // IoU ≈ 0.9 with the first: suppressed
            ([51.0, 50.0, 20.0, 20.0], [0.0, 0.7]), // other class: kept
            ([150.0, 50.0, 20.0, 20.0], [0.6, 0.0]), // far away: kept
            ([10.0, 10.0, 4.0, 4.0], [0.0005, 0.0]), // below conf
        ]);
        let dets = decode(&out, 2, 5, &NmsOptions::inference(0.001));
        let got: Vec<_> = dets.iter().map(|d| (d.class, d.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.7), (0, 0.6)]);
        assert_eq!(dets[0].bbox, BoxXyxy::new(40.0, 40.0, 60.0, 60.0));
    }

    #[test]
    fn multi_label_proposes_every_class_above_conf() {
        let out = output(&[([50.0, 50.0, 20.0, 20.0], [0.9, 0.3])]);
        assert_eq!(decode(&out, 2, 1, &NmsOptions::validation()).len(), 2);
        assert_eq!(decode(&out, 2, 1, &NmsOptions::inference(0.25)).len(), 1);
        let agnostic = NmsOptions {
            agnostic: true,
            ..NmsOptions::validation()
        };
        assert_eq!(decode(&out, 2, 1, &agnostic).len(), 1);
    }

    #[test]
    fn max_det_caps_the_output() {
        let anchors: Vec<_> = (0..50)
            .map(|i| ([i as f32 * 30.0, 10.0, 10.0, 10.0], [0.5, 0.0]))
            .collect();
        let opts = NmsOptions {
            max_det: 7,
            ..NmsOptions::inference(0.1)
        };
        assert_eq!(decode(&output(&anchors), 2, 50, &opts).len(), 7);
    }
}
