//! Perceptual hashes (pHash: the signs of the low-frequency DCT of a 32×32 grey thumbnail
//! against their median) to find near-identical frames — consecutive frames of one clip, a
//! re-encoded copy — that sit in different splits.

use image::DynamicImage;

/// The 64-bit pHash of an image.
pub fn phash(img: &DynamicImage) -> u64 {
    const N: usize = 32;
    const K: usize = 8;
    let grey = img
        .resize_exact(N as u32, N as u32, image::imageops::FilterType::Triangle)
        .into_luma8();
    let px: Vec<f64> = grey.pixels().map(|p| f64::from(p.0[0])).collect();
    // cos((2x + 1) u π / 2N) for the K lowest frequencies.
    let basis: Vec<f64> = (0..K)
        .flat_map(|u| {
            (0..N).map(move |x| {
                ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * N) as f64).cos()
            })
        })
        .collect();
    let mut coef = [0f64; K * K];
    for v in 0..K {
        for u in 0..K {
            let mut sum = 0.0;
            for y in 0..N {
                let cy = basis[v * N + y];
                let row = &px[y * N..(y + 1) * N];
                let mut line = 0.0;
                for x in 0..N {
                    line += row[x] * basis[u * N + x];
                }
                sum += cy * line;
            }
            coef[v * K + u] = sum;
        }
    }
    // The median of the AC coefficients (the DC term is the mean brightness).
    let mut ac: Vec<f64> = coef[1..].to_vec();
    ac.sort_by(f64::total_cmp);
    let median = (ac[ac.len() / 2 - 1] + ac[ac.len() / 2]) / 2.0;
    coef.iter()
        .enumerate()
        .fold(0u64, |h, (i, &c)| if c > median { h | 1 << i } else { h })
}

/// Bits that differ.
pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Hashes this close are the same picture for the leak check (of 64 bits; unrelated frames
/// differ in about 32).
pub const NEAR_DUPLICATE: u32 = 4;

/// Pairs `(i, j, distance)` with `i < j` in different groups (`group[i] != group[j]`) whose hashes
/// are within [`NEAR_DUPLICATE`].
pub fn cross_group_pairs(hashes: &[(u64, usize)]) -> Vec<(usize, usize, u32)> {
    let mut out = Vec::new();
    for i in 0..hashes.len() {
        for j in i + 1..hashes.len() {
            if hashes[i].1 != hashes[j].1 {
                let d = distance(hashes[i].0, hashes[j].0);
                if d <= NEAR_DUPLICATE {
                    out.push((i, j, d));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn scene(seed: u32, shift: u32) -> DynamicImage {
        let mut img = RgbImage::new(160, 120);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let v = ((x + shift) * (seed + 3) / 7 + y * (seed % 5 + 1) / 3) % 255;
            let blob = ((x as i32 - 60 - seed as i32 * 9).pow(2) + (y as i32 - 50).pow(2)) < 600;
            *p = if blob {
                Rgb([250, 40, 20])
            } else {
                Rgb([v as u8, 80, 255 - v as u8])
            };
        }
        DynamicImage::ImageRgb8(img)
    }

    #[test]
    fn a_re_encoded_frame_is_a_near_duplicate_and_another_scene_is_not() {
        let a = scene(1, 0);
        let mut jpeg = Vec::new();
        a.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let again = image::load_from_memory(&jpeg).unwrap();
        assert!(distance(phash(&a), phash(&again)) <= NEAR_DUPLICATE);
        let next = scene(1, 1);
        assert!(
            distance(phash(&a), phash(&next)) <= NEAR_DUPLICATE,
            "the next frame of a pan"
        );
        let other = scene(6, 0);
        assert!(distance(phash(&a), phash(&other)) > 2 * NEAR_DUPLICATE);
    }

    #[test]
    fn only_pairs_across_groups_are_reported() {
        let h = [(0b1111u64, 0), (0b1110, 0), (0b1111, 1), (u64::MAX, 1)];
        assert_eq!(cross_group_pairs(&h), vec![(0, 2, 0), (1, 2, 1)]);
    }
}
