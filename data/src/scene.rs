//! Procedural underwater scenes: a depth-graded water column with caustics, marine snow, sensor
//! noise and occasional blur, and species-like objects with distinct shapes and colours.
//!
//! Each object is rasterised with 4× supersampling in its own local frame; its label is the
//! tight box of the pixels it covers at least half, so labels match what is visible.

use rand::Rng;
use trident_core::BoxXywh;

/// The shape families a class can take; class `i` uses `ARCHETYPES[i % 5]`, with a hue rotation
/// for every further cycle so that more than five classes stay distinguishable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Archetype {
    Lionfish,
    Urchin,
    Abalone,
    Starfish,
    Jellyfish,
}

pub(crate) const ARCHETYPES: [Archetype; 5] = [
    Archetype::Lionfish,
    Archetype::Urchin,
    Archetype::Abalone,
    Archetype::Starfish,
    Archetype::Jellyfish,
];

type Rgb = [f32; 3];

impl Archetype {
    /// Width / height of the object's box.
    fn aspect(self) -> f64 {
        match self {
            Archetype::Lionfish => 1.7,
            Archetype::Urchin | Archetype::Starfish => 1.0,
            Archetype::Abalone => 1.35,
            Archetype::Jellyfish => 0.75,
        }
    }

    /// Colour and opacity at local coordinates `(u, v)` in [-1, 1]², or `None` outside the shape.
    fn sample(self, u: f64, v: f64, p: &ObjectParams) -> Option<(Rgb, f32)> {
        let (r, theta) = ((u * u + v * v).sqrt(), v.atan2(u));
        match self {
            Archetype::Lionfish => {
                // Body, head to the right (+u); stripes across it; spiky fins; a fan tail.
                let body = ((u - 0.1) / 0.62).powi(2) + (v / 0.42).powi(2) <= 1.0;
                if body {
                    if ((u - 0.62).powi(2) + (v + 0.08).powi(2)).sqrt() < 0.07 {
                        return Some(([20.0, 15.0, 10.0], 1.0));
                    }
                    let stripe = ((u * 17.0 + v * 3.0 + p.phase).sin()) > 0.0;
                    return Some((if stripe { p.primary } else { p.secondary }, 1.0));
                }
                let fin_zone = (-0.45..0.55).contains(&u) && v.abs() > 0.3 && v.abs() <= 1.0;
                if fin_zone {
                    let t = (u + 0.45) * 9.0;
                    let spike = (t - t.floor() - 0.5).abs();
                    let reach = 1.0 - (v.abs() - 0.3) / 0.7;
                    if spike < 0.22 * reach + 0.02 {
                        return Some((mix(p.primary, p.secondary, 0.35), 0.95));
                    }
                }
                if (-1.0..-0.48).contains(&u) && v.abs() <= 0.08 + (-0.48 - u) * 1.1 {
                    return Some((mix(p.primary, p.secondary, 0.5), 1.0));
                }
                None
            }
            Archetype::Urchin => {
                if r <= 0.5 {
                    let shade = (1.0 - 0.45 * r) as f32;
                    return Some((scale(p.primary, shade), 1.0));
                }
                if r <= 1.0 {
                    let n = 26.0;
                    let t = (theta + p.phase) * n / std::f64::consts::TAU;
                    let d = (t - t.floor() - 0.5).abs();
                    if d < 0.2 * (1.0 - (r - 0.5) / 0.5) + 0.03 {
                        return Some((p.secondary, 1.0));
                    }
                }
                None
            }
            Archetype::Abalone => {
                if r > 1.0 {
                    return None;
                }
                if r > 0.88 {
                    return Some((p.secondary, 1.0));
                }
                for k in 0..5 {
                    let hu = -0.55 + 0.275 * f64::from(k);
                    let hv = -0.62 + 0.22 * hu * hu;
                    if ((u - hu).powi(2) + (v - hv).powi(2)).sqrt() < 0.075 {
                        return Some(([25.0, 20.0, 18.0], 1.0));
                    }
                }
                let ridge = (((u - 0.5).powi(2) + (v - 0.4).powi(2)).sqrt() * 22.0).sin() as f32;
                Some((scale(p.primary, 0.85 + 0.15 * ridge), 1.0))
            }
            Archetype::Starfish => {
                let lobes = ((1.0 + (5.0 * (theta - p.phase)).cos()) / 2.0).powi(3);
                if r > 0.32 + 0.68 * lobes {
                    return None;
                }
                let bumps = ((u * 30.0).sin() * (v * 30.0).sin()) > 0.6;
                Some((if bumps { p.secondary } else { p.primary }, 1.0))
            }
            Archetype::Jellyfish => {
                if v <= 0.05 && (u / 0.95).powi(2) + ((v + 0.05) / 0.95).powi(2) <= 1.0 {
                    let glow = (1.0 - 0.5 * r) as f32;
                    return Some((scale(p.primary, glow.max(0.5)), 0.7));
                }
                if v > 0.05 {
                    for k in 0..5 {
                        let cu = -0.6 + 0.3 * f64::from(k);
                        let wave = 0.1 * (v * 9.0 + f64::from(k) + p.phase).sin();
                        if (u - cu - wave).abs() < 0.05 {
                            return Some((p.secondary, 0.85));
                        }
                    }
                }
                None
            }
        }
    }

    fn base_colours(self) -> (Rgb, Rgb) {
        match self {
            Archetype::Lionfish => ([200.0, 60.0, 35.0], [240.0, 225.0, 205.0]),
            Archetype::Urchin => ([95.0, 30.0, 110.0], [45.0, 10.0, 60.0]),
            Archetype::Abalone => ([120.0, 100.0, 60.0], [170.0, 190.0, 200.0]),
            Archetype::Starfish => ([245.0, 130.0, 20.0], [255.0, 200.0, 120.0]),
            Archetype::Jellyfish => ([235.0, 160.0, 210.0], [250.0, 200.0, 235.0]),
        }
    }
}

struct ObjectParams {
    primary: Rgb,
    secondary: Rgb,
    phase: f64,
}

/// Everything that varies per image.
pub(crate) struct SceneSettings {
    pub width: u32,
    pub height: u32,
    pub max_objects: usize,
    pub min_size: f64,
    pub max_size: f64,
    pub blur_probability: f64,
}

/// A rendered frame (packed RGB8) and its `(class, box)` labels in pixels.
pub(crate) struct Scene {
    pub rgb: Vec<u8>,
    pub objects: Vec<(usize, BoxXywh)>,
}

pub(crate) fn render(rng: &mut impl Rng, s: &SceneSettings, num_classes: usize) -> Scene {
    let (w, h) = (s.width as usize, s.height as usize);
    // Water: lighter and greener near the surface, dark blue with depth.
    let top: Rgb = [
        rng.random_range(20.0..70.0),
        rng.random_range(120.0..180.0),
        rng.random_range(150.0..200.0),
    ];
    let bottom: Rgb = [
        rng.random_range(0.0..15.0),
        rng.random_range(25.0..60.0),
        rng.random_range(50.0..95.0),
    ];
    let water = |y: usize| mix(top, bottom, (y as f32 / h as f32).powf(0.8));
    let mut px: Vec<Rgb> = (0..w * h).map(|i| water(i / w)).collect();

    let count = rng.random_range(0..=s.max_objects);
    let short = f64::from(s.width.min(s.height));
    let mut objects: Vec<(usize, BoxXywh)> = Vec::new();
    let mut placed: Vec<BoxXywh> = Vec::new();
    for _ in 0..count {
        let class = rng.random_range(0..num_classes);
        let arch = ARCHETYPES[class % ARCHETYPES.len()];
        let cycle = (class / ARCHETYPES.len()) as f32;
        let extent = rng.random_range(s.min_size..=s.max_size) * short;
        let aspect = arch.aspect() * rng.random_range(0.9..1.1);
        let (hx, hy) = if aspect >= 1.0 {
            (extent / 2.0, extent / (2.0 * aspect))
        } else {
            (extent * aspect / 2.0, extent / 2.0)
        };
        // Rejection sampling keeps heavy overlaps (IoU > 0.3) out of the labels.
        let mut spot = None;
        for _ in 0..20 {
            let cx = rng.random_range(hx..(f64::from(s.width) - hx).max(hx + 1e-6));
            let cy = rng.random_range(hy..(f64::from(s.height) - hy).max(hy + 1e-6));
            let cand = BoxXywh::from_center(cx, cy, 2.0 * hx, 2.0 * hy);
            if placed
                .iter()
                .all(|b| b.to_xyxy().iou(&cand.to_xyxy()) < 0.3)
            {
                spot = Some((cx, cy, cand));
                break;
            }
        }
        let Some((cx, cy, cand)) = spot else { continue };
        placed.push(cand);
        let (p1, p2) = arch.base_colours();
        let jitter = |c: Rgb, rng: &mut dyn rand::RngCore| -> Rgb {
            let k: f32 = rng.random_range(0.85..1.15);
            hue_rotate(c.map(|v| (v * k).min(255.0)), cycle)
        };
        let params = ObjectParams {
            primary: jitter(p1, rng),
            secondary: jitter(p2, rng),
            phase: rng.random_range(0.0..std::f64::consts::TAU),
        };
        let mirror = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        let turbidity: f32 = rng.random_range(0.1..0.4);
        if let Some(b) = draw_object(
            &mut px,
            w,
            h,
            arch,
            (cx, cy, hx, hy, mirror),
            &params,
            turbidity,
            &water,
        ) {
            objects.push((class, b));
        }
    }

    // Caustics: bright interference ripples that fade with depth.
    let (f1, f2, ph1, ph2) = (
        rng.random_range(0.05..0.12),
        rng.random_range(0.04..0.1),
        rng.random_range(0.0..6.3),
        rng.random_range(0.0..6.3),
    );
    let strength: f32 = rng.random_range(10.0..45.0);
    for y in 0..h {
        let fade = (1.0 - y as f32 / h as f32).powi(2) * strength;
        for x in 0..w {
            let (xf, yf) = (x as f64, y as f64);
            let a = (xf * f1 + yf * f2 * 0.6 + ph1).sin() * (xf * f2 * 0.7 - yf * f1 + ph2).sin();
            let c = (a * a) as f32 * fade;
            let p = &mut px[y * w + x];
            p[0] += c * 0.8;
            p[1] += c;
            p[2] += c;
        }
    }
    // Marine snow.
    for _ in 0..rng.random_range(0..(w * h / 800).max(1)) {
        let (x, y) = (rng.random_range(0..w), rng.random_range(0..h));
        let b: f32 = rng.random_range(30.0..90.0);
        px[y * w + x] = px[y * w + x].map(|v| v + b);
    }
    if rng.random_bool(s.blur_probability) {
        for _ in 0..rng.random_range(1..=2) {
            box_blur(&mut px, w, h);
        }
    }
    let sigma: f32 = rng.random_range(2.0..8.0);
    let rgb = px
        .iter()
        .flat_map(|p| {
            let n: f32 = (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5)
                * 2.0
                * sigma;
            p.map(|v| (v + n).clamp(0.0, 255.0) as u8)
        })
        .collect();
    Scene { rgb, objects }
}

#[allow(clippy::too_many_arguments)]
fn draw_object(
    px: &mut [Rgb],
    w: usize,
    h: usize,
    arch: Archetype,
    (cx, cy, hx, hy, mirror): (f64, f64, f64, f64, f64),
    params: &ObjectParams,
    turbidity: f32,
    water: &dyn Fn(usize) -> Rgb,
) -> Option<BoxXywh> {
    let x0 = (cx - hx).floor().max(0.0) as usize;
    let x1 = ((cx + hx).ceil() as usize).min(w);
    let y0 = (cy - hy).floor().max(0.0) as usize;
    let y1 = ((cy + hy).ceil() as usize).min(h);
    let (mut bx0, mut by0, mut bx1, mut by1) = (usize::MAX, usize::MAX, 0, 0);
    const SUB: [f64; 2] = [0.25, 0.75];
    for y in y0..y1 {
        let tint = water(y);
        for x in x0..x1 {
            let (mut col, mut alpha, mut inside) = ([0f32; 3], 0f32, 0u32);
            for sy in SUB {
                for sx in SUB {
                    let u = mirror * ((x as f64 + sx) - cx) / hx;
                    let v = ((y as f64 + sy) - cy) / hy;
                    if let Some((c, a)) = arch.sample(u, v, params) {
                        inside += 1;
                        alpha += a / 4.0;
                        for k in 0..3 {
                            col[k] += c[k] * a / 4.0;
                        }
                    }
                }
            }
            if inside == 0 {
                continue;
            }
            let c = mix(col.map(|v| v / alpha), tint, turbidity);
            let p = &mut px[y * w + x];
            *p = mix(*p, c, alpha);
            if inside >= 2 {
                bx0 = bx0.min(x);
                by0 = by0.min(y);
                bx1 = bx1.max(x + 1);
                by1 = by1.max(y + 1);
            }
        }
    }
    (bx1 > bx0 && by1 > by0).then(|| {
        BoxXywh::new(
            bx0 as f64,
            by0 as f64,
            (bx1 - bx0) as f64,
            (by1 - by0) as f64,
        )
    })
}

fn box_blur(px: &mut [Rgb], w: usize, h: usize) {
    let src = px.to_vec();
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            let mut n = 0.0;
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    for k in 0..3 {
                        acc[k] += src[yy * w + xx][k];
                    }
                    n += 1.0;
                }
            }
            px[y * w + x] = acc.map(|v| v / n);
        }
    }
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [0, 1, 2].map(|k| a[k] + (b[k] - a[k]) * t)
}

fn scale(c: Rgb, k: f32) -> Rgb {
    c.map(|v| (v * k).clamp(0.0, 255.0))
}

/// Rotates the colour's hue by `cycle` × 72° (a cheap rotation in RGB space about the grey axis).
fn hue_rotate(c: Rgb, cycle: f32) -> Rgb {
    if cycle == 0.0 {
        return c;
    }
    let a = cycle * 72f32.to_radians();
    let (cos, sin) = (a.cos(), a.sin());
    let k = (1.0 - cos) / 3.0;
    let s3 = (1.0f32 / 3.0).sqrt() * sin;
    let m = [
        [cos + k, k - s3, k + s3],
        [k + s3, cos + k, k - s3],
        [k - s3, k + s3, cos + k],
    ];
    [0, 1, 2].map(|i| (m[i][0] * c[0] + m[i][1] * c[1] + m[i][2] * c[2]).clamp(0.0, 255.0))
}
