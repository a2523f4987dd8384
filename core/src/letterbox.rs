//! Letterbox preprocessing, identical in the trainer, calibration and the edge runtime.
//!
//! Matches Ultralytics' `LetterBox(auto=False, center=True)`: scale to fit with the aspect ratio
//! kept, bilinear resize with OpenCV's half-pixel convention, centred, padded with grey 114.
//! The model input is CHW float32 RGB in 0–1.

use crate::geometry::BoxXyxy;

/// Grey used for the padding (Ultralytics' value).
pub const PAD_VALUE: u8 = 114;

/// The geometry of one letterbox transform: source size → model input size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub src_w: u32,
    pub src_h: u32,
    pub dst_w: u32,
    pub dst_h: u32,
    /// Scale factor applied to the source (the same on both axes).
    pub scale: f64,
    pub resized_w: u32,
    pub resized_h: u32,
    pub pad_left: u32,
    pub pad_top: u32,
}

impl Letterbox {
    pub fn new(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        Self::with_content_scale(src_w, src_h, dst_w, dst_h, 1.0)
    }

    /// The letterbox with the content shrunk by `content_scale` (≤ 1) inside the input and the
    /// rest padded: a scaled test-time view for a model with a fixed input size.
    pub fn with_content_scale(
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        content_scale: f64,
    ) -> Self {
        assert!(
            src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0,
            "letterbox of an empty image"
        );
        assert!(
            content_scale > 0.0 && content_scale <= 1.0,
            "content scale {content_scale} outside (0, 1]"
        );
        let fit = (f64::from(dst_h) / f64::from(src_h)).min(f64::from(dst_w) / f64::from(src_w));
        // `fit * 1.0` is `fit` exactly: the plain view is unchanged bit for bit.
        let scale = fit * content_scale;
        // Python's round() rounds half to even; Ultralytics relies on it.
        let resized_w = ((f64::from(src_w) * scale).round_ties_even() as u32).clamp(1, dst_w);
        let resized_h = ((f64::from(src_h) * scale).round_ties_even() as u32).clamp(1, dst_h);
        let dw = f64::from(dst_w - resized_w) / 2.0;
        let dh = f64::from(dst_h - resized_h) / 2.0;
        Letterbox {
            src_w,
            src_h,
            dst_w,
            dst_h,
            scale,
            resized_w,
            resized_h,
            pad_left: (dw - 0.1).round_ties_even().max(0.0) as u32,
            pad_top: (dh - 0.1).round_ties_even().max(0.0) as u32,
        }
    }

    /// Source-pixel box → model-input-pixel box.
    pub fn to_input(&self, b: &BoxXyxy) -> BoxXyxy {
        let (s, l, t) = (
            self.scale,
            f64::from(self.pad_left),
            f64::from(self.pad_top),
        );
        BoxXyxy::new(b.x1 * s + l, b.y1 * s + t, b.x2 * s + l, b.y2 * s + t)
    }

    /// Model-input-pixel box → source-pixel box, clipped to the source frame.
    pub fn to_source(&self, b: &BoxXyxy) -> BoxXyxy {
        let (s, l, t) = (
            self.scale,
            f64::from(self.pad_left),
            f64::from(self.pad_top),
        );
        BoxXyxy::new(
            (b.x1 - l) / s,
            (b.y1 - t) / s,
            (b.x2 - l) / s,
            (b.y2 - t) / s,
        )
        .clamp(f64::from(self.src_w), f64::from(self.src_h))
    }
}

/// Precomputed bilinear taps for one source/destination size pair, reused frame after frame so
/// the steady state allocates nothing.
#[derive(Clone, Debug)]
pub struct LetterboxPlan {
    pub geometry: Letterbox,
    x_taps: Vec<(usize, usize, f32)>,
    y_taps: Vec<(usize, usize, f32)>,
}

impl LetterboxPlan {
    pub fn new(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        Self::with_content_scale(src_w, src_h, dst_w, dst_h, 1.0)
    }

    /// See [`Letterbox::with_content_scale`].
    pub fn with_content_scale(
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        content_scale: f64,
    ) -> Self {
        let g = Letterbox::with_content_scale(src_w, src_h, dst_w, dst_h, content_scale);
        LetterboxPlan {
            x_taps: taps(src_w, g.resized_w),
            y_taps: taps(src_h, g.resized_h),
            geometry: g,
        }
    }

    /// Letterboxes packed RGB8 (`src_w * src_h * 3` bytes) into CHW float32 in 0–1
    /// (`3 * dst_w * dst_h` values).
    pub fn run(&self, rgb: &[u8], chw: &mut [f32]) {
        let g = &self.geometry;
        let (sw, dw, dh) = (g.src_w as usize, g.dst_w as usize, g.dst_h as usize);
        assert_eq!(rgb.len(), sw * g.src_h as usize * 3, "source buffer size");
        assert_eq!(chw.len(), 3 * dw * dh, "destination buffer size");
        let plane = dw * dh;
        let pad = f32::from(PAD_VALUE) / 255.0;
        chw.fill(pad);
        let (left, top) = (g.pad_left as usize, g.pad_top as usize);
        for (ry, &(y0, y1, fy)) in self.y_taps.iter().enumerate() {
            let row0 = &rgb[y0 * sw * 3..(y0 + 1) * sw * 3];
            let row1 = &rgb[y1 * sw * 3..(y1 + 1) * sw * 3];
            let out_row = (top + ry) * dw + left;
            for (rx, &(x0, x1, fx)) in self.x_taps.iter().enumerate() {
                for c in 0..3 {
                    let p00 = f32::from(row0[x0 * 3 + c]);
                    let p01 = f32::from(row0[x1 * 3 + c]);
                    let p10 = f32::from(row1[x0 * 3 + c]);
                    let p11 = f32::from(row1[x1 * 3 + c]);
                    let top_v = p00 + (p01 - p00) * fx;
                    let bot_v = p10 + (p11 - p10) * fx;
                    chw[c * plane + out_row + rx] = (top_v + (bot_v - top_v) * fy) / 255.0;
                }
            }
        }
    }
}

/// OpenCV INTER_LINEAR source taps: centre-aligned, clamped at the borders.
fn taps(src: u32, dst: u32) -> Vec<(usize, usize, f32)> {
    let ratio = f64::from(src) / f64::from(dst);
    let last = src as usize - 1;
    (0..dst)
        .map(|d| {
            let f = (f64::from(d) + 0.5) * ratio - 0.5;
            let i = f.floor();
            let frac = f - i;
            if i < 0.0 {
                (0, 0, 0.0)
            } else if i as usize >= last {
                (last, last, 0.0)
            } else {
                (i as usize, i as usize + 1, frac as f32)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_ultralytics_for_a_wide_frame() {
        // 320x240 into 320x320: scale 1, 40 px bars top and bottom.
        let g = Letterbox::new(320, 240, 320, 320);
        assert_eq!(
            (g.resized_w, g.resized_h, g.pad_left, g.pad_top),
            (320, 240, 0, 40)
        );
        // 1920x1080 into 640x640: 640x360, top pad round(140 - 0.1) = 140.
        let g = Letterbox::new(1920, 1080, 640, 640);
        assert_eq!(
            (g.resized_w, g.resized_h, g.pad_left, g.pad_top),
            (640, 360, 0, 140)
        );
        // Odd padding goes to the bottom/right like Ultralytics: 101 → top 50.
        let g = Letterbox::new(100, 99, 100, 200);
        assert_eq!((g.resized_h, g.pad_top), (99, 50));
    }

    #[test]
    fn a_scaled_view_shrinks_the_content_and_maps_back() {
        let plain = Letterbox::new(1280, 720, 640, 640);
        assert_eq!(
            Letterbox::with_content_scale(1280, 720, 640, 640, 1.0),
            plain
        );
        let g = Letterbox::with_content_scale(1280, 720, 640, 640, 0.5);
        assert_eq!((g.resized_w, g.resized_h), (320, 180));
        assert_eq!((g.pad_left, g.pad_top), (160, 230));
        let b = BoxXyxy::new(100.0, 50.0, 400.0, 700.0);
        let back = g.to_source(&g.to_input(&b));
        assert!((back.x1 - b.x1).abs() < 1e-9 && (back.y2 - b.y2).abs() < 1e-9);
        // The padding is grey and the content sits in the middle.
        let rgb = vec![0u8; 1280 * 720 * 3];
        let mut chw = vec![0.0; 3 * 640 * 640];
        LetterboxPlan::with_content_scale(1280, 720, 640, 640, 0.5).run(&rgb, &mut chw);
        assert_eq!(chw[0], f32::from(PAD_VALUE) / 255.0);
        assert_eq!(chw[320 * 640 + 320], 0.0);
        assert_eq!(chw[320 * 640 + 100], f32::from(PAD_VALUE) / 255.0);
    }

    #[test]
    fn box_mapping_roundtrips() {
        let g = Letterbox::new(1280, 720, 640, 640);
        let b = BoxXyxy::new(100.0, 50.0, 400.0, 700.0);
        let back = g.to_source(&g.to_input(&b));
        for (a, b) in [
            (back.x1, b.x1),
            (back.y1, b.y1),
            (back.x2, b.x2),
            (back.y2, b.y2),
        ] {
            assert!((a - b).abs() < 1e-9);
        }
    }

    #[test]
    fn pixels_land_in_the_right_place_with_grey_padding() {
        // A 4x2 image, left half red, right half blue, into 4x4: rows 0 and 3 are padding.
        let mut rgb = vec![0u8; 4 * 2 * 3];
        for y in 0..2 {
            for x in 0..4 {
                let p = (y * 4 + x) * 3;
                if x < 2 {
                    rgb[p] = 255
                } else {
                    rgb[p + 2] = 255
                }
            }
        }
        let plan = LetterboxPlan::new(4, 2, 4, 4);
        let mut out = vec![0f32; 3 * 16];
        plan.run(&rgb, &mut out);
        let grey = 114.0 / 255.0;
        assert_eq!(out[0], grey); // R plane, row 0
        assert_eq!(out[4], 1.0); // R plane, row 1, x 0
        assert_eq!(out[7], 0.0); // R plane, row 1, x 3
        assert_eq!(out[2 * 16 + 7], 1.0); // B plane, row 1, x 3
        assert_eq!(out[15], grey); // R plane, row 3
    }

    #[test]
    fn downscale_averages_neighbours() {
        // 4x1 → 2x1 (in a 2x2 box: scale 0.5, so 2x1 with one padding row below... or above).
        let rgb: Vec<u8> = [0u8, 100, 200, 250]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let plan = LetterboxPlan::new(4, 1, 2, 2);
        let mut out = vec![0f32; 3 * 4];
        plan.run(&rgb, &mut out);
        let row = plan.geometry.pad_top as usize * 2;
        // OpenCV: dst x0 samples src 0.5 → (0+100)/2; x1 samples 2.5 → (200+250)/2.
        assert!((out[row] * 255.0 - 50.0).abs() < 1e-3);
        assert!((out[row + 1] * 255.0 - 225.0).abs() < 1e-3);
    }
}
