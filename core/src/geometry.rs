//! Axis-aligned boxes in pixel coordinates.
//!
//! Two conventions cross stage boundaries: COCO-style `[x, y, w, h]` with a top-left corner
//! (prediction files, COCO export) and corner form `[x1, y1, x2, y2]` (fusion, NMS, drawing).
//! Coordinates are continuous: a box covering pixels 0..=9 is `x1 = 0, x2 = 10`, as in COCO.

use serde::{Deserialize, Serialize};

/// Box with a top-left corner and a size, in pixels (the COCO `bbox` convention).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxXywh {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Box given by two corners, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxXyxy {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl BoxXywh {
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Self {
        Self { x, y, w, h }
    }

    /// From a centre and a size (the YOLO label and model-output convention).
    pub fn from_center(cx: f64, cy: f64, w: f64, h: f64) -> Self {
        Self::new(cx - w / 2.0, cy - h / 2.0, w, h)
    }

    pub fn area(&self) -> f64 {
        self.w * self.h
    }

    pub fn to_xyxy(&self) -> BoxXyxy {
        BoxXyxy {
            x1: self.x,
            y1: self.y,
            x2: self.x + self.w,
            y2: self.y + self.h,
        }
    }

    pub fn to_array(&self) -> [f64; 4] {
        [self.x, self.y, self.w, self.h]
    }
}

impl BoxXyxy {
    pub fn new(x1: f64, y1: f64, x2: f64, y2: f64) -> Self {
        Self { x1, y1, x2, y2 }
    }

    pub fn width(&self) -> f64 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f64 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    pub fn to_xywh(&self) -> BoxXywh {
        BoxXywh::new(self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)
    }

    /// Intersection over union; 0 when either box is empty.
    pub fn iou(&self, other: &BoxXyxy) -> f64 {
        let iw = self.x2.min(other.x2) - self.x1.max(other.x1);
        let ih = self.y2.min(other.y2) - self.y1.max(other.y1);
        if iw <= 0.0 || ih <= 0.0 {
            return 0.0;
        }
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// Clamps the box to `[0, w] × [0, h]`.
    pub fn clamp(&self, w: f64, h: f64) -> BoxXyxy {
        BoxXyxy {
            x1: self.x1.clamp(0.0, w),
            y1: self.y1.clamp(0.0, h),
            x2: self.x2.clamp(0.0, w),
            y2: self.y2.clamp(0.0, h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = BoxXyxy::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BoxXyxy::new(10.0, 0.0, 20.0, 10.0)), 0.0);
        // 50 shared of 150 total.
        let b = BoxXyxy::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn empty_box_has_zero_iou() {
        let a = BoxXyxy::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&BoxXyxy::new(5.0, 5.0, 5.0, 8.0)), 0.0);
    }

    #[test]
    fn xywh_roundtrip_and_center_constructor() {
        let b = BoxXywh::from_center(10.0, 20.0, 4.0, 6.0);
        assert_eq!(b, BoxXywh::new(8.0, 17.0, 4.0, 6.0));
        assert_eq!(b.to_xyxy().to_xywh(), b);
    }
}
