//! Snapshots: a JPEG of the frame with its boxes drawn whenever a critical class is detected,
//! at most once per class per interval (a lionfish in view for an hour is one picture every
//! interval, not 18,000).

use std::collections::HashMap;
use std::path::PathBuf;

use trident_core::postprocess::Detection;

use crate::error::Result;

#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    pub dir: PathBuf,
    /// Class ids that trigger a snapshot.
    pub classes: Vec<usize>,
    /// Fused score a detection needs to trigger one.
    pub min_score: f32,
    /// Seconds between two snapshots for the same class.
    pub min_interval_s: f64,
}

pub struct Snapshots {
    opts: SnapshotOptions,
    last: HashMap<usize, f64>,
    pub saved: u64,
    jpeg: Vec<u8>,
    canvas: Vec<u8>,
}

/// Box colours per class (RGB), cycled.
const COLOURS: [[u8; 3]; 6] = [
    [255, 64, 64],
    [64, 200, 255],
    [255, 200, 0],
    [120, 255, 120],
    [255, 120, 255],
    [255, 255, 255],
];

impl Snapshots {
    pub fn new(opts: SnapshotOptions) -> Self {
        Snapshots {
            opts,
            last: HashMap::new(),
            saved: 0,
            jpeg: Vec::new(),
            canvas: Vec::new(),
        }
    }

    /// Saves a snapshot when a critical class is detected and its interval has passed; returns
    /// the file written. `now_s` is the run's clock; `tag` names the source and frame.
    pub fn consider(
        &mut self,
        now_s: f64,
        rgb: &[u8],
        width: u32,
        height: u32,
        detections: &[Detection],
        tag: &str,
    ) -> Result<Option<PathBuf>> {
        let due: Vec<usize> = detections
            .iter()
            .filter(|d| d.score >= self.opts.min_score && self.opts.classes.contains(&d.class))
            .map(|d| d.class)
            .filter(|c| {
                self.last
                    .get(c)
                    .is_none_or(|&t| now_s - t >= self.opts.min_interval_s)
            })
            .collect();
        if due.is_empty() {
            return Ok(None);
        }
        for c in due {
            self.last.insert(c, now_s);
        }
        self.canvas.clear();
        self.canvas.extend_from_slice(rgb);
        for d in detections {
            draw_box(
                &mut self.canvas,
                width,
                height,
                d,
                COLOURS[d.class % COLOURS.len()],
            );
        }
        self.jpeg.clear();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut self.jpeg, 85)
            .encode(&self.canvas, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|e| crate::Error::Shape(format!("cannot encode a snapshot: {e}")))?;
        let safe: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.opts.dir.join(format!("{safe}.jpg"));
        trident_core::fsutil::write_atomic(&path, &self.jpeg)?;
        self.saved += 1;
        tracing::info!("snapshot {}", path.display());
        Ok(Some(path))
    }
}

/// A 2-pixel rectangle outline, clipped to the frame.
fn draw_box(rgb: &mut [u8], width: u32, height: u32, d: &Detection, colour: [u8; 3]) {
    let (w, h) = (width as i64, height as i64);
    let clamp_x = |v: f64| (v.round() as i64).clamp(0, w - 1);
    let clamp_y = |v: f64| (v.round() as i64).clamp(0, h - 1);
    let (x1, y1, x2, y2) = (
        clamp_x(d.bbox.x1),
        clamp_y(d.bbox.y1),
        clamp_x(d.bbox.x2),
        clamp_y(d.bbox.y2),
    );
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let i = ((y * w + x) * 3) as usize;
            rgb[i..i + 3].copy_from_slice(&colour);
        }
    };
    for t in 0..2 {
        for x in x1..=x2 {
            put(x, y1 + t);
            put(x, y2 - t);
        }
        for y in y1..=y2 {
            put(x1 + t, y);
            put(x2 - t, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_core::geometry::BoxXyxy;

    fn det(class: usize, score: f32) -> Detection {
        Detection {
            class,
            score,
            bbox: BoxXyxy::new(10.0, 8.0, 40.0, 30.0),
        }
    }

    #[test]
    fn critical_classes_are_snapshotted_once_per_interval_with_boxes_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Snapshots::new(SnapshotOptions {
            dir: dir.path().to_path_buf(),
            classes: vec![0],
            min_score: 0.5,
            min_interval_s: 10.0,
        });
        let (w, h) = (64u32, 48u32);
        let frame = vec![0u8; (w * h * 3) as usize];
        assert!(
            s.consider(0.0, &frame, w, h, &[det(1, 0.9)], "a")
                .unwrap()
                .is_none(),
            "not critical"
        );
        assert!(
            s.consider(0.0, &frame, w, h, &[det(0, 0.3)], "b")
                .unwrap()
                .is_none(),
            "too weak"
        );
        let first = s
            .consider(1.0, &frame, w, h, &[det(0, 0.9)], "test://ball#7")
            .unwrap()
            .unwrap();
        assert!(first.ends_with("test___ball_7.jpg"), "{}", first.display());
        assert!(
            s.consider(5.0, &frame, w, h, &[det(0, 0.9)], "c")
                .unwrap()
                .is_none(),
            "rate-limited"
        );
        assert!(
            s.consider(11.5, &frame, w, h, &[det(0, 0.9)], "d")
                .unwrap()
                .is_some()
        );
        assert_eq!(s.saved, 2);
        let img = image::open(&first).unwrap().into_rgb8();
        assert_eq!(img.dimensions(), (w, h));
        // The box outline is red on a black frame; its inside stays black.
        let edge = img.get_pixel(20, 8);
        let inside = img.get_pixel(25, 20);
        assert!(edge[0] > 150 && edge[1] < 120, "{edge:?}");
        assert!(inside[0] < 40, "{inside:?}");
    }
}
