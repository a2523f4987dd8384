//! Snapshots: a JPEG of the frame with its boxes drawn whenever a critical class is detected,
//! at most once per class per interval (a lionfish in view for an hour is one picture every
//! interval, not 18,000).
//!
//! The folder is bounded by count and by bytes, oldest removed first (snapshots already there
//! when the runtime starts count too): snapshots are the likeliest thing to fill a unit's disk,
//! and a full disk would otherwise also stop the detections log.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::Serialize;
use trident_core::postprocess::Detection;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    pub dir: PathBuf,
    /// Class ids that trigger a snapshot.
    pub classes: Vec<usize>,
    /// Fused score a detection needs to trigger one.
    pub min_score: f32,
    /// Seconds between two snapshots for the same class (more than 0).
    pub min_interval_s: f64,
    /// Snapshots kept at most (at least 1)…
    pub keep: usize,
    /// …and bytes kept at most; the oldest go first.
    pub max_bytes: u64,
}

/// The default bounds: 1,000 snapshots, 256 MiB.
pub const DEFAULT_KEEP: usize = 1000;
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// What the snapshots did, for `/healthz`, `/metrics` and the run summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotCounters {
    pub saved: u64,
    /// Snapshots that could not be encoded or written (a full disk): skipped, detection goes on.
    pub failed: u64,
    /// Removed to keep the folder within its bounds.
    pub removed: u64,
    /// In the folder now, and their bytes.
    pub kept: u64,
    pub kept_bytes: u64,
}

pub struct Snapshots {
    opts: SnapshotOptions,
    last: HashMap<usize, f64>,
    /// The folder's snapshots, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    files_bytes: u64,
    counters: SnapshotCounters,
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
    /// Checks the bounds and takes stock of the snapshots already in the folder (a folder that
    /// cannot be read yet is not an error: it may be created later).
    pub fn new(opts: SnapshotOptions) -> Result<Self> {
        let refuse = |message: String| Err(Error::Usage(message));
        if !(opts.min_interval_s.is_finite() && opts.min_interval_s > 0.0) {
            return refuse(format!(
                "snapshot interval {} s: expected more than 0 (a snapshot on every frame would fill                  the disk)",
                opts.min_interval_s
            ));
        }
        if opts.keep == 0 || opts.max_bytes == 0 {
            return refuse(
                "snapshot bounds: expected at least 1 snapshot and 1 byte (use no snapshot classes                  to save none)"
                    .into(),
            );
        }
        let files = existing(&opts.dir);
        let mut snapshots = Snapshots {
            files_bytes: files.iter().map(|(_, n)| n).sum(),
            files,
            opts,
            last: HashMap::new(),
            counters: SnapshotCounters::default(),
            jpeg: Vec::new(),
            canvas: Vec::new(),
        };
        snapshots.prune(0);
        Ok(snapshots)
    }

    pub fn counters(&self) -> SnapshotCounters {
        SnapshotCounters {
            kept: self.files.len() as u64,
            kept_bytes: self.files_bytes,
            ..self.counters.clone()
        }
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Removes the oldest snapshots until `incoming` more bytes and one more file fit.
    fn prune(&mut self, incoming: u64) {
        let extra = usize::from(incoming > 0);
        while let Some((path, size)) = self.files.front().cloned() {
            let over_count = self.files.len() + extra > self.opts.keep;
            let over_bytes = self.files_bytes + incoming > self.opts.max_bytes;
            if !(over_count || over_bytes) {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => self.counters.removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!("cannot remove old snapshot {}: {e}", path.display());
                    break;
                }
            }
            self.files.pop_front();
            self.files_bytes -= size;
        }
    }

    /// Saves a snapshot when a critical class is detected and its interval has passed; returns
    /// the file written. `now_s` is the run's clock; `tag` names the source and frame. A failure
    /// is counted and returned; the caller goes on detecting.
    pub fn consider(
        &mut self,
        now_s: f64,
        rgb: &[u8],
        width: u32,
        height: u32,
        detections: &[Detection],
        tag: &str,
    ) -> Result<Option<PathBuf>> {
        let result = self.save_if_due(now_s, rgb, width, height, detections, tag);
        if result.is_err() {
            self.counters.failed += 1;
        }
        result
    }

    fn save_if_due(
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
        let size = self.jpeg.len() as u64;
        self.prune(size);
        trident_core::fsutil::write_atomic(&path, &self.jpeg)?;
        self.files.push_back((path.clone(), size));
        self.files_bytes += size;
        self.counters.saved += 1;
        tracing::info!("snapshot {}", path.display());
        Ok(Some(path))
    }
}

/// The `*.jpg` files in `dir`, oldest first (by modification time, then name).
fn existing(dir: &Path) -> VecDeque<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return VecDeque::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .filter_map(|e| {
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            Some((m.modified().ok()?, e.path(), m.len()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p, n)| (p, n)).collect()
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
            keep: DEFAULT_KEEP,
            max_bytes: DEFAULT_MAX_BYTES,
        })
        .unwrap();
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
        assert_eq!(s.counters().saved, 2);
        let img = image::open(&first).unwrap().into_rgb8();
        assert_eq!(img.dimensions(), (w, h));
        // The box outline is red on a black frame; its inside stays black.
        let edge = img.get_pixel(20, 8);
        let inside = img.get_pixel(25, 20);
        assert!(edge[0] > 150 && edge[1] < 120, "{edge:?}");
        assert!(inside[0] < 40, "{inside:?}");
    }
}

#[cfg(test)]
mod retention {
    use super::*;
    use trident_core::geometry::BoxXyxy;

    fn options(dir: &Path, keep: usize, max_bytes: u64) -> SnapshotOptions {
        SnapshotOptions {
            dir: dir.to_path_buf(),
            classes: vec![0],
            min_score: 0.5,
            min_interval_s: 1.0,
            keep,
            max_bytes,
        }
    }

    fn jpgs(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_folder_keeps_the_newest_snapshots_within_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // Two left by an earlier run count against the bounds.
        std::fs::write(dir.path().join("a0-old.jpg"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join("a1-old.jpg"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a snapshot").unwrap();
        let mut s = Snapshots::new(options(dir.path(), 3, u64::MAX)).unwrap();
        assert_eq!((s.counters().kept, s.counters().kept_bytes), (2, 200));
        let (w, h) = (32u32, 24u32);
        let frame = vec![90u8; (w * h * 3) as usize];
        let det = Detection {
            class: 0,
            score: 0.9,
            bbox: BoxXyxy::new(2.0, 2.0, 20.0, 20.0),
        };
        for i in 0..4 {
            s.consider(i as f64 * 2.0, &frame, w, h, &[det], &format!("b{i}"))
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            jpgs(dir.path()),
            ["b1.jpg", "b2.jpg", "b3.jpg", "notes.txt"]
        );
        let c = s.counters();
        assert_eq!((c.saved, c.removed, c.kept), (4, 3, 3));

        // By bytes: room for two of these snapshots, not three.
        let one = std::fs::metadata(dir.path().join("b3.jpg")).unwrap().len();
        let mut s = Snapshots::new(options(dir.path(), 100, one * 2 + one / 2)).unwrap();
        assert_eq!(s.counters().kept, 2, "pruned at the start");
        s.consider(0.0, &frame, w, h, &[det], "c0")
            .unwrap()
            .unwrap();
        assert_eq!(jpgs(dir.path()), ["b3.jpg", "c0.jpg", "notes.txt"]);
        assert!(s.counters().kept_bytes <= one * 2 + one / 2);
    }

    #[test]
    fn an_interval_of_zero_and_empty_bounds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path(), 10, 1000);
        o.min_interval_s = 0.0;
        let err = Snapshots::new(o).err().unwrap().to_string();
        assert!(err.contains("more than 0"), "{err}");
        assert!(Snapshots::new(options(dir.path(), 0, 1000)).is_err());
        assert!(Snapshots::new(options(dir.path(), 10, 0)).is_err());
    }
}
