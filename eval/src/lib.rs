//! Detection metrics whose numbers can be trusted.
//!
//! [`evaluate`] reproduces pycocotools' `COCOeval` for boxes (IoU thresholds .50:.05:.95,
//! 101-point interpolated precision, at most 100 detections per image and class, all areas, no
//! crowd regions) and adds the operating point a deployment needs: precision, recall and F1 at
//! the confidence that maximises mean F1 (Ultralytics' choice). A test checks agreement with
//! pycocotools to 1e-4; `cargo bench -p trident-eval` measures the speed against it.

mod coco;
pub mod coco_json;
mod error;
mod input;
mod metrics;
pub mod plots;
pub mod synthetic;

pub use error::{Error, Result};
pub use input::{PredictionIndex, match_predictions};
pub use metrics::{ClassMetrics, Curves, Evaluation, F1_GRID, evaluate};

/// IoU thresholds .50:.05:.95, computed as `numpy.linspace` does so that thresholds compare
/// bit-for-bit with pycocotools.
pub fn iou_thresholds() -> [f64; 10] {
    let (start, stop) = (0.5f64, 0.95f64);
    let step = (stop - start) / 9.0;
    let mut t = [0.0; 10];
    for (i, v) in t.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    t[9] = stop;
    t
}

/// Recall thresholds 0:.01:1 (101 points), as `numpy.linspace(0, 1, 101)`.
pub fn recall_thresholds() -> [f64; 101] {
    let step = 1.0 / 100.0;
    let mut r = [0.0; 101];
    for (i, v) in r.iter_mut().enumerate() {
        *v = i as f64 * step;
    }
    r[100] = 1.0;
    r
}

/// pycocotools' default `maxDets` for the summary metrics.
pub const MAX_DETS: usize = 100;
