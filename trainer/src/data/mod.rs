//! Training and validation data: images decoded once and cached in RAM at training size, then
//! augmented per sample in parallel by a background loader.

pub mod augment;
pub mod loader;

use std::path::PathBuf;

use image::imageops::FilterType;
use indicatif::ProgressBar;
use rayon::prelude::*;
use trident_core::dataset::{DatasetConfig, ImageEntry, Split};
use trident_core::geometry::BoxXyxy;
use trident_core::labels::{Severity, parse_labels};

use crate::error::{Error, Result};

/// A decoded RGB8 image, packed rows.
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// One training image: resized so its long side is the training size, with boxes in its pixels.
#[derive(Clone, Debug)]
pub struct Sample {
    pub stem: String,
    pub image: RgbImage,
    pub boxes: Vec<(usize, BoxXyxy)>,
}

/// Images and labels of one split, decoded once.
#[derive(Debug)]
pub struct CachedSplit {
    pub samples: Vec<Sample>,
    /// Images left out because the image or its labels could not be read (non-strict mode).
    pub skipped: Vec<String>,
    pub background: usize,
    pub instances: usize,
}

/// Why an image was left out, formatted `path[:line]: message`.
type Skip = String;

impl CachedSplit {
    /// Decodes a split. `long_side`: resize so the longer side is this many pixels (`None` keeps
    /// the source size, as validation needs). With `strict`, any unreadable image or bad label
    /// line fails the load; otherwise those images are skipped and counted.
    pub fn load(
        ds: &DatasetConfig,
        split: Split,
        long_side: Option<u32>,
        strict: bool,
        progress: &ProgressBar,
    ) -> Result<Self> {
        let entries = ds.list_images(split)?;
        if entries.is_empty() {
            return Err(Error::Dataset(format!(
                "{}: split `{split}` has no images",
                ds.yaml_path.display()
            )));
        }
        progress.set_length(entries.len() as u64);
        let results: Vec<std::result::Result<Sample, Vec<Skip>>> = entries
            .par_iter()
            .map(|e| {
                let r = load_sample(e, ds.num_classes(), long_side);
                progress.inc(1);
                r
            })
            .collect();
        let (samples, skipped) = keep_loaded(results, strict, split, "train")?;
        let out = CachedSplit {
            background: samples.iter().filter(|s| s.boxes.is_empty()).count(),
            instances: samples.iter().map(|s| s.boxes.len()).sum(),
            samples,
            skipped,
        };
        if out.samples.is_empty() {
            return Err(Error::Dataset(format!(
                "{}: no readable images in split `{split}` ({} skipped)",
                ds.yaml_path.display(),
                out.skipped.len()
            )));
        }
        Ok(out)
    }
}

/// Splits per-image load results into what loaded and what was skipped (the first problem of
/// each skipped image). With `strict` any problem fails the whole split, every problem listed.
pub(crate) fn keep_loaded<T>(
    results: Vec<std::result::Result<T, Vec<Skip>>>,
    strict: bool,
    split: Split,
    stage: &str,
) -> Result<(Vec<T>, Vec<String>)> {
    let mut kept = Vec::with_capacity(results.len());
    let (mut skipped, mut problems) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(t) => kept.push(t),
            Err(p) => {
                skipped.push(p[0].clone());
                problems.extend(p);
            }
        }
    }
    if strict && !problems.is_empty() {
        return Err(Error::Dataset(format!(
            "{} problem(s) in split `{split}` (--strict):\n{}",
            problems.len(),
            problems.join("\n")
        )));
    }
    for p in &problems {
        tracing::warn!("{stage}: skipped {p}");
    }
    Ok((kept, skipped))
}

pub(crate) fn load_sample(
    e: &ImageEntry,
    num_classes: usize,
    long_side: Option<u32>,
) -> std::result::Result<Sample, Vec<Skip>> {
    let labels = match std::fs::read_to_string(&e.label) {
        Ok(text) => {
            let parsed = parse_labels(&text, num_classes);
            let errors: Vec<Skip> = parsed
                .issues
                .iter()
                .filter(|i| i.severity == Severity::Error)
                .map(|i| format!("{}:{}: {}", e.label.display(), i.line, i.message))
                .collect();
            if !errors.is_empty() {
                return Err(errors);
            }
            parsed.boxes
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(vec![format!("{}: cannot read: {err}", e.label.display())]),
    };
    let decoded = image::open(&e.image)
        .map_err(|err| vec![format!("{}: cannot decode image: {err}", e.image.display())])?;
    let (w0, h0) = (decoded.width(), decoded.height());
    let rgb = decoded.into_rgb8();
    let rgb = match long_side {
        Some(side) if side != w0.max(h0) => {
            let r = f64::from(side) / f64::from(w0.max(h0));
            let w = ((f64::from(w0) * r).round() as u32).clamp(1, side);
            let h = ((f64::from(h0) * r).round() as u32).clamp(1, side);
            image::imageops::resize(&rgb, w, h, FilterType::Triangle)
        }
        _ => rgb,
    };
    let (w, h) = (rgb.width(), rgb.height());
    let boxes = labels
        .iter()
        .map(|b| (b.class, b.to_pixels(w, h).to_xyxy()))
        .collect();
    Ok(Sample {
        stem: e.stem.clone(),
        image: RgbImage {
            width: w,
            height: h,
            pixels: rgb.into_raw(),
        },
        boxes,
    })
}

/// Content hash of a split's images and labels (SHA-256 over sorted paths and bytes), recorded
/// in the checkpoint metadata so a model can be traced to the exact data it saw.
pub fn dataset_hash(ds: &DatasetConfig, splits: &[Split]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut files: Vec<PathBuf> = Vec::new();
    for &split in splits {
        for e in ds.list_images(split)? {
            files.push(e.image);
            if e.label.exists() {
                files.push(e.label);
            }
        }
    }
    let digests: Vec<Result<[u8; 32]>> = files
        .par_iter()
        .map(|f| {
            let bytes =
                std::fs::read(f).map_err(|e| trident_core::Error::io("cannot read", f, e))?;
            Ok(Sha256::digest(&bytes).into())
        })
        .collect();
    let mut h = Sha256::new();
    let root = &ds.root;
    for (f, d) in files.iter().zip(digests) {
        h.update(
            f.strip_prefix(root)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(d?);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
