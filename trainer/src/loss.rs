//! The YOLOv8 detection loss.
//!
//! Recipe (Ultralytics `v8DetectionLoss`; Feng et al., "TOOD: Task-aligned One-stage Object
//! Detection", ICCV 2021; Li et al., "Generalized Focal Loss", NeurIPS 2020):
//! - **Assignment**: task-aligned assigner. For every ground-truth box, among the anchors whose
//!   centre lies inside it, score `t = s^α · IoU^β` (s = predicted probability of the box's class,
//!   IoU = CIoU of the predicted box, α = 0.5, β = 6) and keep the top 10. An anchor claimed by
//!   several boxes goes to the one it overlaps most. Soft targets: the class target of a positive
//!   anchor is `t` normalised so each box's best anchor gets that box's best IoU.
//! - **Classification**: BCE with logits against the soft targets over all anchors.
//! - **Box**: 1 − CIoU on positives, weighted by the soft target.
//! - **DFL**: cross-entropy to the two bins around each true side distance.
//! - Total = 7.5 · box + 0.5 · cls + 1.5 · dfl, each normalised by the sum of soft targets, times
//!   the batch size (Ultralytics' scaling, which its learning rates assume).
//!
//! Everything is computed densely over `[batch, boxes, anchors]` so shapes never depend on the data.

use tch::{Kind, Tensor};
use trident_core::model_spec::ModelSpec;

use crate::model::{AnchorGrid, dfl_decode, flatten_head, ltrb_to_xyxy};

const TOPK: i64 = 10;
const ALPHA: f64 = 0.5;
const BETA: f64 = 6.0;
const EPS: f64 = 1e-9;
pub const GAIN_BOX: f64 = 7.5;
pub const GAIN_CLS: f64 = 0.5;
pub const GAIN_DFL: f64 = 1.5;

/// Ground truth for a batch: `boxes` `[B, M, 4]` x1, y1, x2, y2 in input pixels, `labels`
/// `[B, M]` class ids (int64), `mask` `[B, M]` 1 for real boxes, 0 for padding.
pub struct Targets {
    pub boxes: Tensor,
    pub labels: Tensor,
    pub mask: Tensor,
}

/// Loss components (already gain-weighted, per image) for logging.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossParts {
    pub box_loss: f64,
    pub cls_loss: f64,
    pub dfl_loss: f64,
}

impl LossParts {
    pub fn total(&self) -> f64 {
        self.box_loss + self.cls_loss + self.dfl_loss
    }
}

/// Returns the scalar loss to back-propagate and its detached components.
pub fn detection_loss(
    feats: &[Tensor],
    targets: &Targets,
    spec: &ModelSpec,
) -> (Tensor, LossParts) {
    let batch = feats[0].size()[0];
    let device = feats[0].device();
    let nc = spec.num_classes() as i64;
    let (distri, logits) = flatten_head(feats, spec);
    let grid = AnchorGrid::new(feats, &spec.strides, device);
    let ltrb = dfl_decode(&distri, spec.reg_max);
    let pred_boxes = ltrb_to_xyxy(&grid.points, &ltrb); // grid units
    let assigned = tch::no_grad(|| {
        assign(
            &logits.sigmoid(),
            &(&pred_boxes * &grid.strides),
            &(&grid.points * &grid.strides),
            targets,
            nc,
        )
    });
    let score_sum = assigned.scores.sum(Kind::Float).clamp_min(1.0);

    let cls = logits
        .binary_cross_entropy_with_logits::<Tensor>(
            &assigned.scores,
            None,
            None,
            tch::Reduction::None,
        )
        .sum(Kind::Float)
        / &score_sum;

    let fg = assigned.foreground.unsqueeze(-1); // [B, N, 1]
    let weight = assigned.scores.sum_dim_intlist(-1, true, Kind::Float) * &fg;
    let target_boxes = &assigned.boxes / &grid.strides;
    let iou = ciou(&pred_boxes, &target_boxes);
    let box_loss = ((-iou + 1.0) * &weight).sum(Kind::Float) / &score_sum;

    let reg = i64::from(spec.reg_max);
    let target_ltrb = Tensor::cat(
        &[
            &grid.points - target_boxes.narrow(-1, 0, 2),
            target_boxes.narrow(-1, 2, 2) - &grid.points,
        ],
        -1,
    )
    .clamp(0.0, (reg - 1) as f64 - 0.01);
    let dfl = distribution_focal_loss(&distri, &target_ltrb, reg);
    let dfl_loss = (dfl * &weight).sum(Kind::Float) / &score_sum;

    let b = batch as f64;
    let total = (&box_loss * GAIN_BOX + &cls * GAIN_CLS + &dfl_loss * GAIN_DFL) * b;
    let parts = LossParts {
        box_loss: box_loss.double_value(&[]) * GAIN_BOX,
        cls_loss: cls.double_value(&[]) * GAIN_CLS,
        dfl_loss: dfl_loss.double_value(&[]) * GAIN_DFL,
    };
    (total, parts)
}

/// Mean over the four sides of the DFL cross-entropy: `[B, N, 4·reg]` logits, `[B, N, 4]` targets
/// in bins → `[B, N, 1]`.
fn distribution_focal_loss(distri: &Tensor, target: &Tensor, reg: i64) -> Tensor {
    let s = distri.size();
    let log_p = distri
        .view([s[0], s[1], 4, reg])
        .log_softmax(-1, Kind::Float);
    let left = target.to_kind(Kind::Int64);
    let right = &left + 1;
    let w_left = right.to_kind(Kind::Float) - target;
    let w_right = -&w_left + 1.0;
    let pick = |idx: &Tensor| log_p.gather(-1, &idx.unsqueeze(-1), false).squeeze_dim(-1);
    let ce: Tensor = -(pick(&left) * w_left + pick(&right.clamp_max(reg - 1)) * w_right);
    ce.mean_dim(-1, true, Kind::Float)
}

/// Complete IoU of matching boxes (x1, y1, x2, y2 in the last dim, broadcastable) → `[…, 1]`.
pub fn ciou(a: &Tensor, b: &Tensor) -> Tensor {
    let eps = 1e-7;
    let c = |t: &Tensor, i| t.narrow(-1, i, 1);
    let (ax1, ay1, ax2, ay2) = (c(a, 0), c(a, 1), c(a, 2), c(a, 3));
    let (bx1, by1, bx2, by2) = (c(b, 0), c(b, 1), c(b, 2), c(b, 3));
    let (w1, h1) = (&ax2 - &ax1, (&ay2 - &ay1).clamp_min(eps));
    let (w2, h2) = (&bx2 - &bx1, (&by2 - &by1).clamp_min(eps));
    let inter = (ax2.minimum(&bx2) - ax1.maximum(&bx1)).clamp_min(0.0)
        * (ay2.minimum(&by2) - ay1.maximum(&by1)).clamp_min(0.0);
    let union = &w1 * &h1 + &w2 * &h2 - &inter + eps;
    let iou = &inter / union;
    let cw = ax2.maximum(&bx2) - ax1.minimum(&bx1);
    let ch = ay2.maximum(&by2) - ay1.minimum(&by1);
    let diag = cw.square() + ch.square() + eps;
    let rho = ((&bx1 + &bx2 - &ax1 - &ax2).square() + (&by1 + &by2 - &ay1 - &ay2).square()) / 4.0;
    let v = (w2 / h2).atan().subtract(&(w1 / h1).atan()).square()
        * (4.0 / std::f64::consts::PI.powi(2));
    let alpha = tch::no_grad(|| &v / (&v - &iou + (1.0 + eps)));
    iou - (rho / diag + v * alpha)
}

/// What the assigner decided for every anchor.
pub struct Assignment {
    /// `[B, N, 4]` target boxes in pixels (meaningless where not foreground).
    pub boxes: Tensor,
    /// `[B, N, nc]` soft class targets.
    pub scores: Tensor,
    /// `[B, N]` 1.0 for positive anchors.
    pub foreground: Tensor,
}

/// Task-aligned assignment (see the module docs). Inputs: predicted probabilities `[B, N, nc]`,
/// predicted boxes `[B, N, 4]` and anchor points `[N, 2]`, all in pixels.
pub fn assign(
    scores: &Tensor,
    pred_boxes: &Tensor,
    anchors: &Tensor,
    t: &Targets,
    nc: i64,
) -> Assignment {
    let (b, n) = (scores.size()[0], scores.size()[1]);
    let m = t.boxes.size()[1];
    let device = scores.device();
    if m == 0 {
        return Assignment {
            boxes: Tensor::zeros([b, n, 4], (Kind::Float, device)),
            scores: Tensor::zeros([b, n, nc], (Kind::Float, device)),
            foreground: Tensor::zeros([b, n], (Kind::Float, device)),
        };
    }
    let mask_gt = t.mask.unsqueeze(-1); // [B, M, 1]
    // Anchor centres strictly inside each box: [B, M, N].
    let gt = t.boxes.unsqueeze(2); // [B, M, 1, 4]
    let pts = anchors.view([1, 1, n, 2]);
    let deltas = Tensor::cat(
        &[&pts - gt.narrow(-1, 0, 2), gt.narrow(-1, 2, 2) - &pts],
        -1,
    );
    let in_gts = deltas.amin(-1, false).gt(EPS).to_kind(Kind::Float);
    let candidates = &in_gts * &mask_gt;

    // Alignment metric s^α · IoU^β over candidates.
    let labels = t.labels.clamp(0, nc - 1);
    let class_scores =
        scores
            .permute([0, 2, 1])
            .gather(1, &labels.unsqueeze(-1).expand([b, m, n], false), false); // [B, M, N]
    let overlaps = ciou(&gt, &pred_boxes.unsqueeze(1))
        .squeeze_dim(-1)
        .clamp_min(0.0)
        * &candidates;
    let align =
        class_scores.pow_tensor_scalar(ALPHA) * overlaps.pow_tensor_scalar(BETA) * &candidates;

    // Top-k anchors per box.
    let k = TOPK.min(n);
    let (_, top_idx) = align.topk(k, -1, true, true);
    let top = Tensor::zeros([b, m, n], (Kind::Float, device)).scatter_value(-1, &top_idx, 1.0);
    let mut pos = top * &candidates;

    // An anchor claimed by several boxes goes to the box it overlaps most.
    let claims = pos.sum_dim_intlist(1, true, Kind::Float); // [B, 1, N]
    if claims.max().double_value(&[]) > 1.0 {
        let best = overlaps.argmax(1, true); // [B, 1, N]
        let best_one_hot =
            Tensor::zeros([b, m, n], (Kind::Float, device)).scatter_value(1, &best, 1.0);
        pos = best_one_hot.where_self(&claims.gt(1.0).expand([b, m, n], false), &pos);
    }
    let foreground = pos.sum_dim_intlist(1, false, Kind::Float); // [B, N]
    let gt_idx = pos.argmax(1, false); // [B, N]

    let boxes = t
        .boxes
        .gather(1, &gt_idx.unsqueeze(-1).expand([b, n, 4], false), false);
    let target_labels = labels.gather(1, &gt_idx, false); // [B, N]
    let one_hot = target_labels.one_hot(nc).to_kind(Kind::Float) * foreground.unsqueeze(-1);

    // Normalise: each box's best anchor gets that box's best IoU.
    let align = align * &pos;
    let best_align = align.amax(-1, true); // [B, M, 1]
    let best_overlap = (&overlaps * &pos).amax(-1, true);
    let norm = (align * best_overlap / (best_align + EPS))
        .amax(1, false)
        .unsqueeze(-1); // [B, N, 1]
    Assignment {
        boxes,
        scores: one_hot * norm,
        foreground,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn boxes(v: &[[f32; 4]]) -> Tensor {
        Tensor::from_slice(v.as_flattened()).view([-1, 4])
    }

    #[test]
    fn ciou_is_one_for_identical_boxes_and_penalises_distance() {
        let a = boxes(&[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]);
        let b = boxes(&[[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]]);
        let v: Vec<f32> = Vec::try_from(ciou(&a, &b).flatten(0, -1)).unwrap();
        assert!((v[0] - 1.0).abs() < 1e-5);
        // Disjoint: IoU 0, centre distance² 400 over enclosing diagonal² 900 + 100.
        assert!((v[1] + 0.4).abs() < 1e-5, "{}", v[1]);
    }

    #[test]
    fn assigner_picks_anchors_inside_the_box_with_the_box_class() {
        // A 4×4 grid of anchors at pixel centres 4, 12, 20, 28; one box covering the top-left 2×2.
        let pts: Vec<f32> = (0..16)
            .flat_map(|i| [4.0 + 8.0 * (i % 4) as f32, 4.0 + 8.0 * (i / 4) as f32])
            .collect();
        let anchors = Tensor::from_slice(&pts).view([16, 2]);
        let targets = Targets {
            boxes: boxes(&[[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 0.0, 0.0]]).view([1, 2, 4]),
            labels: Tensor::from_slice(&[2i64, 0]).view([1, 2]),
            mask: Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]),
        };
        // Every anchor predicts exactly the box, with probability 0.5 for each class.
        let pred = boxes(&[[0.0, 0.0, 16.0, 16.0]])
            .view([1, 1, 4])
            .expand([1, 16, 4], false);
        let scores = Tensor::full([1, 16, 3], 0.5, (Kind::Float, Device::Cpu));
        let a = assign(&scores, &pred, &anchors, &targets, 3);
        let fg: Vec<f32> = Vec::try_from(a.foreground.flatten(0, -1)).unwrap();
        let expected: Vec<f32> = (0..16)
            .map(|i| if i % 4 < 2 && i / 4 < 2 { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(fg, expected);
        // Positives carry class 2 with the box's best IoU (1.0) as soft target.
        let s: Vec<f32> = Vec::try_from(a.scores.get(0).get(0)).unwrap();
        assert!(
            (s[2] - 1.0).abs() < 1e-4 && s[0] == 0.0 && s[1] == 0.0,
            "{s:?}"
        );
        assert_eq!(
            Vec::<f32>::try_from(a.scores.get(0).get(15)).unwrap(),
            vec![0.0; 3]
        );
    }

    #[test]
    fn an_anchor_claimed_by_two_boxes_goes_to_the_one_it_overlaps_most() {
        // One anchor at (8, 8) inside two boxes; the prediction matches the second box.
        let anchors = Tensor::from_slice(&[8.0f32, 8.0]).view([1, 2]);
        let targets = Targets {
            boxes: boxes(&[[0.0, 0.0, 32.0, 32.0], [4.0, 4.0, 12.0, 12.0]]).view([1, 2, 4]),
            labels: Tensor::from_slice(&[0i64, 1]).view([1, 2]),
            mask: Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]),
        };
        let pred = boxes(&[[4.0, 4.0, 12.0, 12.0]]).view([1, 1, 4]);
        let scores = Tensor::full([1, 1, 2], 0.5, (Kind::Float, Device::Cpu));
        let a = assign(&scores, &pred, &anchors, &targets, 2);
        assert_eq!(a.foreground.double_value(&[0, 0]), 1.0);
        let s: Vec<f32> = Vec::try_from(a.scores.get(0).get(0)).unwrap();
        assert!(s[0] == 0.0 && s[1] > 0.9, "{s:?}");
        let b: Vec<f32> = Vec::try_from(a.boxes.get(0).get(0)).unwrap();
        assert_eq!(b, vec![4.0, 4.0, 12.0, 12.0]);
    }
}
