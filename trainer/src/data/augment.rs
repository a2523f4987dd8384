//! Training augmentations, after Ultralytics' defaults: mosaic, random affine (scale and
//! translate), HSV jitter and horizontal flip.
//!
//! Every sample draws from its own RNG stream (seed, epoch, position), so an epoch is the same
//! whatever the number of loader threads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use trident_core::geometry::BoxXyxy;
use trident_core::letterbox::PAD_VALUE;

use super::{CachedSplit, RgbImage};

/// Augmentation strengths. Presets: `light`, `standard` (Ultralytics' defaults), `heavy`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    /// Hue gain (fraction of the hue circle).
    pub hsv_h: f64,
    /// Saturation gain.
    pub hsv_s: f64,
    /// Value gain.
    pub hsv_v: f64,
    /// Translation as a fraction of the image side.
    pub translate: f64,
    /// Scale gain: the image is scaled by U(1 − scale, 1 + scale).
    pub scale: f64,
    /// Probability of a left-right flip.
    pub fliplr: f64,
    /// Probability of a 4-image mosaic.
    pub mosaic: f64,
}

impl Augmentation {
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "light" => Augmentation {
                hsv_h: 0.005,
                hsv_s: 0.3,
                hsv_v: 0.2,
                translate: 0.05,
                scale: 0.25,
                fliplr: 0.5,
                mosaic: 0.5,
            },
            "standard" => Augmentation {
                hsv_h: 0.015,
                hsv_s: 0.7,
                hsv_v: 0.4,
                translate: 0.1,
                scale: 0.5,
                fliplr: 0.5,
                mosaic: 1.0,
            },
            "heavy" => Augmentation {
                hsv_h: 0.03,
                hsv_s: 0.8,
                hsv_v: 0.5,
                translate: 0.2,
                scale: 0.7,
                fliplr: 0.5,
                mosaic: 1.0,
            },
            _ => return None,
        })
    }

    pub const PRESETS: [&'static str; 3] = ["light", "standard", "heavy"];

    /// No augmentation at all (letterbox only).
    pub fn none() -> Self {
        Augmentation {
            hsv_h: 0.0,
            hsv_s: 0.0,
            hsv_v: 0.0,
            translate: 0.0,
            scale: 0.0,
            fliplr: 0.0,
            mosaic: 0.0,
        }
    }
}

/// One augmented training image: `size × size` packed RGB8 and its boxes.
#[derive(Clone, Debug)]
pub struct Augmented {
    pub size: u32,
    pub pixels: Vec<u8>,
    pub boxes: Vec<(usize, BoxXyxy)>,
}

/// The RNG of the sample at `position` of `epoch`.
pub fn sample_rng(seed: u64, epoch: u64, position: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7472_6964_656e_7400);
    rng.set_stream(epoch << 32 | position);
    rng
}

/// Builds one training image from sample `index` (plus three random others for a mosaic).
pub fn augment(
    data: &CachedSplit,
    index: usize,
    size: u32,
    aug: &Augmentation,
    allow_mosaic: bool,
    rng: &mut ChaCha8Rng,
) -> Augmented {
    let s = f64::from(size);
    let (canvas, boxes) = if allow_mosaic && aug.mosaic > 0.0 && rng.random::<f64>() < aug.mosaic {
        let others: [usize; 3] = std::array::from_fn(|_| rng.random_range(0..data.samples.len()));
        mosaic(data, index, others, size, rng)
    } else {
        letterbox_canvas(&data.samples[index].image, &data.samples[index].boxes, size)
    };
    // Random affine: centre the canvas, scale, translate into a size × size frame.
    let gain = if aug.scale > 0.0 {
        rng.random_range(1.0 - aug.scale..1.0 + aug.scale)
    } else {
        1.0
    };
    let shift = |rng: &mut ChaCha8Rng| {
        if aug.translate > 0.0 {
            rng.random_range(0.5 - aug.translate..0.5 + aug.translate) * s
        } else {
            0.5 * s
        }
    };
    let (tx, ty) = (shift(rng), shift(rng));
    let (cx, cy) = (
        f64::from(canvas.width) / 2.0,
        f64::from(canvas.height) / 2.0,
    );
    let map = Affine {
        scale: gain,
        tx: tx - gain * cx,
        ty: ty - gain * cy,
    };
    let mut pixels = warp(&canvas, &map, size);
    let mut out_boxes: Vec<(usize, BoxXyxy)> = boxes
        .iter()
        .filter_map(|(c, b)| {
            let moved = map.apply(b);
            let clipped = moved.clamp(s, s);
            keep_box(&moved, &clipped).then_some((*c, clipped))
        })
        .collect();
    if aug.hsv_h > 0.0 || aug.hsv_s > 0.0 || aug.hsv_v > 0.0 {
        let gains = [
            rng.random_range(-1.0..1.0) * aug.hsv_h + 1.0,
            rng.random_range(-1.0..1.0) * aug.hsv_s + 1.0,
            rng.random_range(-1.0..1.0) * aug.hsv_v + 1.0,
        ];
        hsv_jitter(&mut pixels, gains);
    }
    if aug.fliplr > 0.0 && rng.random::<f64>() < aug.fliplr {
        flip_lr(&mut pixels, size);
        for (_, b) in &mut out_boxes {
            *b = BoxXyxy::new(s - b.x2, b.y1, s - b.x1, b.y2);
        }
    }
    Augmented {
        size,
        pixels,
        boxes: out_boxes,
    }
}

/// Ultralytics' candidate filter: at least 2 px each side, ≥ 10 % of the area left after
/// clipping, aspect ratio under 100.
fn keep_box(moved: &BoxXyxy, clipped: &BoxXyxy) -> bool {
    let (w, h) = (clipped.width(), clipped.height());
    let ar = (w / (h + 1e-16)).max(h / (w + 1e-16));
    w > 2.0 && h > 2.0 && w * h / (moved.area() + 1e-16) > 0.1 && ar < 100.0
}

/// `dst = scale · src + t` (no rotation or shear: underwater cameras are mounted level).
#[derive(Clone, Copy, Debug)]
struct Affine {
    scale: f64,
    tx: f64,
    ty: f64,
}

impl Affine {
    fn apply(&self, b: &BoxXyxy) -> BoxXyxy {
        let s = self.scale;
        BoxXyxy::new(
            b.x1 * s + self.tx,
            b.y1 * s + self.ty,
            b.x2 * s + self.tx,
            b.y2 * s + self.ty,
        )
    }
}

/// Bilinear inverse warp into a `size × size` frame, grey outside the canvas.
fn warp(src: &RgbImage, map: &Affine, size: u32) -> Vec<u8> {
    let n = size as usize;
    let mut out = vec![PAD_VALUE; n * n * 3];
    let (sw, sh) = (src.width as i64, src.height as i64);
    let inv = 1.0 / map.scale;
    let px = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= sw || y >= sh {
            f64::from(PAD_VALUE)
        } else {
            f64::from(src.pixels[((y * sw + x) * 3) as usize + c])
        }
    };
    // Output pixel → source coordinate: its integer part and fraction, or None outside.
    let source = |o: usize, t: f64, limit: i64| {
        let f = (o as f64 - t) * inv;
        (f > -1.0 && f < limit as f64).then(|| (f.floor() as i64, f - f.floor()))
    };
    for oy in 0..n {
        let Some((y0, wy)) = source(oy, map.ty, sh) else {
            continue;
        };
        for ox in 0..n {
            let Some((x0, wx)) = source(ox, map.tx, sw) else {
                continue;
            };
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - wx) + px(x0 + 1, y0, c) * wx;
                let bot = px(x0, y0 + 1, c) * (1.0 - wx) + px(x0 + 1, y0 + 1, c) * wx;
                out[(oy * n + ox) * 3 + c] = (top * (1.0 - wy) + bot * wy).round() as u8;
            }
        }
    }
    out
}

/// The image centred on a `size × size` grey canvas (it is already resized to long side `size`).
fn letterbox_canvas(
    img: &RgbImage,
    boxes: &[(usize, BoxXyxy)],
    size: u32,
) -> (RgbImage, Vec<(usize, BoxXyxy)>) {
    let left = (size.saturating_sub(img.width)) / 2;
    let top = (size.saturating_sub(img.height)) / 2;
    let mut canvas = RgbImage {
        width: size.max(img.width),
        height: size.max(img.height),
        pixels: Vec::new(),
    };
    canvas.pixels = vec![PAD_VALUE; (canvas.width * canvas.height * 3) as usize];
    blit(img, (0, 0, img.width, img.height), &mut canvas, (left, top));
    let shifted = boxes
        .iter()
        .map(|(c, b)| {
            let (l, t) = (f64::from(left), f64::from(top));
            (*c, BoxXyxy::new(b.x1 + l, b.y1 + t, b.x2 + l, b.y2 + t))
        })
        .collect();
    (canvas, shifted)
}

/// Four images around a random centre of a `2·size` canvas (Ultralytics' `load_mosaic`).
fn mosaic(
    data: &CachedSplit,
    index: usize,
    others: [usize; 3],
    size: u32,
    rng: &mut ChaCha8Rng,
) -> (RgbImage, Vec<(usize, BoxXyxy)>) {
    let s = size as i64;
    let two = 2 * s;
    let mut canvas = RgbImage {
        width: two as u32,
        height: two as u32,
        pixels: vec![PAD_VALUE; (two * two * 3) as usize],
    };
    let xc = rng.random_range(s / 2..3 * s / 2);
    let yc = rng.random_range(s / 2..3 * s / 2);
    let mut boxes = Vec::new();
    for (i, idx) in std::iter::once(index).chain(others).enumerate() {
        let sample = &data.samples[idx];
        let (w, h) = (
            i64::from(sample.image.width),
            i64::from(sample.image.height),
        );
        // Destination (a) and source (b) rectangles for this quadrant.
        let (x1a, y1a, x2a, y2a) = match i {
            0 => ((xc - w).max(0), (yc - h).max(0), xc, yc),
            1 => (xc, (yc - h).max(0), (xc + w).min(two), yc),
            2 => ((xc - w).max(0), yc, xc, (yc + h).min(two)),
            _ => (xc, yc, (xc + w).min(two), (yc + h).min(two)),
        };
        let (x1b, y1b) = match i {
            0 => (w - (x2a - x1a), h - (y2a - y1a)),
            1 => (0, h - (y2a - y1a)),
            2 => (w - (x2a - x1a), 0),
            _ => (0, 0),
        };
        let (cw, ch) = (x2a - x1a, y2a - y1a);
        if cw <= 0 || ch <= 0 {
            continue;
        }
        blit(
            &sample.image,
            (x1b as u32, y1b as u32, cw as u32, ch as u32),
            &mut canvas,
            (x1a as u32, y1a as u32),
        );
        let (dx, dy) = ((x1a - x1b) as f64, (y1a - y1b) as f64);
        let t = two as f64;
        boxes.extend(sample.boxes.iter().map(|(c, b)| {
            (
                *c,
                BoxXyxy::new(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy).clamp(t, t),
            )
        }));
    }
    (canvas, boxes)
}

/// Copies the `(x, y, w, h)` rectangle of `src` to `dst` at `at`.
fn blit(src: &RgbImage, (x, y, w, h): (u32, u32, u32, u32), dst: &mut RgbImage, at: (u32, u32)) {
    let (sw, dw) = (src.width as usize * 3, dst.width as usize * 3);
    for row in 0..h as usize {
        let s0 = (y as usize + row) * sw + x as usize * 3;
        let d0 = (at.1 as usize + row) * dw + at.0 as usize * 3;
        dst.pixels[d0..d0 + w as usize * 3].copy_from_slice(&src.pixels[s0..s0 + w as usize * 3]);
    }
}

/// Scales hue (OpenCV's 0–180 circle), saturation and value by `gains` through lookup tables.
fn hsv_jitter(pixels: &mut [u8], gains: [f64; 3]) {
    let lut_h: Vec<f64> = (0..180)
        .map(|x| (f64::from(x) * gains[0]).rem_euclid(180.0))
        .collect();
    let lut_s: Vec<f64> = (0..256)
        .map(|x| (f64::from(x) * gains[1]).clamp(0.0, 255.0))
        .collect();
    let lut_v: Vec<f64> = (0..256)
        .map(|x| (f64::from(x) * gains[2]).clamp(0.0, 255.0))
        .collect();
    for px in pixels.chunks_exact_mut(3) {
        let (h, s, v) = rgb_to_hsv(px[0], px[1], px[2]);
        let h = lut_h[(h.round() as usize) % 180];
        let s = lut_s[s.round() as usize];
        let v = lut_v[v.round() as usize];
        let [r, g, b] = hsv_to_rgb(h, s, v);
        px.copy_from_slice(&[r, g, b]);
    }
}

/// RGB8 → (H in 0–180, S in 0–255, V in 0–255), OpenCV's 8-bit convention.
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (f64, f64, f64) {
    let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
    let v = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = v - min;
    let s = if v > 0.0 { d / v * 255.0 } else { 0.0 };
    let h = if d == 0.0 {
        0.0
    } else if v == r {
        60.0 * (g - b) / d
    } else if v == g {
        120.0 + 60.0 * (b - r) / d
    } else {
        240.0 + 60.0 * (r - g) / d
    };
    (h.rem_euclid(360.0) / 2.0, s, v)
}

fn hsv_to_rgb(h: f64, s: f64, v: f64) -> [u8; 3] {
    let h = h * 2.0 / 60.0;
    let s = s / 255.0;
    let c = v * s;
    let x = c * (1.0 - (h.rem_euclid(2.0) - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r, g, b].map(|u| (u + m).round().clamp(0.0, 255.0) as u8)
}

fn flip_lr(pixels: &mut [u8], size: u32) {
    let n = size as usize;
    for row in pixels.chunks_exact_mut(n * 3) {
        for x in 0..n / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (n - 1 - x) * 3 + c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sample;
    use super::*;

    fn split_with_one_box() -> CachedSplit {
        // A 64×48 dark image with a bright 16×16 square at (8, 8).
        let (w, h) = (64u32, 48u32);
        let mut pixels = vec![20u8; (w * h * 3) as usize];
        for y in 8..24 {
            for x in 8..24 {
                let i = ((y * w + x) * 3) as usize;
                pixels[i..i + 3].copy_from_slice(&[250, 250, 250]);
            }
        }
        let sample = Sample {
            stem: "a".into(),
            image: RgbImage {
                width: w,
                height: h,
                pixels,
            },
            boxes: vec![(1, BoxXyxy::new(8.0, 8.0, 24.0, 24.0))],
        };
        CachedSplit {
            samples: vec![sample.clone(), sample.clone(), sample.clone(), sample],
            skipped: vec![],
            background: 0,
            instances: 4,
        }
    }

    /// Mean brightness inside a box of an augmented image.
    fn mean_inside(a: &Augmented, b: &BoxXyxy) -> f64 {
        let n = a.size as usize;
        let (mut sum, mut count) = (0.0, 0.0);
        for y in (b.y1.ceil() as usize + 1)..(b.y2.floor() as usize).saturating_sub(1) {
            for x in (b.x1.ceil() as usize + 1)..(b.x2.floor() as usize).saturating_sub(1) {
                sum += f64::from(a.pixels[(y * n + x) * 3]);
                count += 1.0;
            }
        }
        sum / count
    }

    #[test]
    fn boxes_follow_the_pixels_under_every_preset() {
        let data = split_with_one_box();
        for preset in Augmentation::PRESETS {
            let mut aug = Augmentation::preset(preset).unwrap();
            aug.hsv_h = 0.0;
            aug.hsv_s = 0.0;
            aug.hsv_v = 0.0; // keep brightness comparable
            for k in 0..20 {
                let mut rng = sample_rng(7, 0, k);
                let a = augment(&data, 0, 64, &aug, true, &mut rng);
                assert_eq!(a.pixels.len(), 64 * 64 * 3);
                for (c, b) in &a.boxes {
                    assert_eq!(*c, 1);
                    assert!(b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= 64.0 && b.y2 <= 64.0);
                    if b.width() > 6.0 && b.height() > 6.0 {
                        let m = mean_inside(&a, b);
                        assert!(
                            m > 200.0,
                            "{preset} sample {k}: box {b:?} covers dark pixels ({m})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn no_augmentation_is_a_plain_letterbox() {
        let data = split_with_one_box();
        let mut rng = sample_rng(1, 0, 0);
        let a = augment(&data, 0, 64, &Augmentation::none(), true, &mut rng);
        // 64×48 centred vertically in 64×64: 8 px of padding on top.
        assert_eq!(a.boxes, vec![(1, BoxXyxy::new(8.0, 16.0, 24.0, 32.0))]);
        assert_eq!(a.pixels[0], PAD_VALUE);
        assert_eq!(a.pixels[(20 * 64 + 12) * 3], 250);
    }

    #[test]
    fn same_seed_same_sample_other_epoch_differs() {
        let data = split_with_one_box();
        let aug = Augmentation::preset("heavy").unwrap();
        let run = |epoch| augment(&data, 0, 64, &aug, true, &mut sample_rng(3, epoch, 5)).pixels;
        assert_eq!(run(0), run(0));
        assert_ne!(run(0), run(1));
    }

    #[test]
    fn hsv_round_trip_is_lossless_enough() {
        for rgb in [
            [0u8, 0, 0],
            [255, 255, 255],
            [200, 30, 90],
            [12, 180, 240],
            [90, 90, 91],
        ] {
            let (h, s, v) = rgb_to_hsv(rgb[0], rgb[1], rgb[2]);
            let back = hsv_to_rgb(h, s, v);
            for c in 0..3 {
                assert!(
                    (i32::from(back[c]) - i32::from(rgb[c])).abs() <= 1,
                    "{rgb:?} → {back:?}"
                );
            }
        }
    }
}
