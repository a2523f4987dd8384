//! Ground truth in pixels for evaluation, calibration and training.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;
use trident_core::dataset::{DatasetConfig, ImageEntry, ImageTruth, Split, label_path_for};
use trident_core::labels::parse_labels;

use crate::error::{Error, Result};

/// Loads every image's size (from its header) and labels for a split.
///
/// A missing label file is a background image. Any bad label line or unreadable image fails the
/// whole load with every problem listed as `path:line: message`; `trident data check` gives the
/// full report.
pub fn load_ground_truth(
    ds: &DatasetConfig,
    split: Split,
    progress: &ProgressBar,
) -> Result<Vec<ImageTruth>> {
    let entries = ds.list_images(split)?;
    check_unique_stems(&entries)?;
    let orphans = orphan_labels(ds, split, &entries);
    if !orphans.is_empty() {
        // Ground truth whose image is missing would silently drop out of every metric.
        return Err(Error::Problems(
            orphans
                .iter()
                .map(|p| format!("{}: label file has no matching image", p.display()))
                .collect(),
        ));
    }
    progress.set_length(entries.len() as u64);
    let results: Vec<std::result::Result<ImageTruth, Vec<String>>> = entries
        .par_iter()
        .map(|e| {
            let r = load_one(e, ds.num_classes());
            progress.inc(1);
            r
        })
        .collect();
    let mut truths = Vec::with_capacity(results.len());
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(t) => truths.push(t),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(truths)
    } else {
        Err(Error::Problems(problems))
    }
}

fn load_one(e: &ImageEntry, num_classes: usize) -> std::result::Result<ImageTruth, Vec<String>> {
    let (width, height) = image::image_dimensions(&e.image)
        .map_err(|err| vec![format!("{}: cannot read image: {err}", e.image.display())])?;
    let boxes = match std::fs::read_to_string(&e.label) {
        Ok(text) => {
            let parsed = parse_labels(&text, num_classes);
            if parsed.has_errors() {
                return Err(parsed
                    .issues
                    .iter()
                    .filter(|i| i.severity == trident_core::labels::Severity::Error)
                    .map(|i| format!("{}:{}: {}", e.label.display(), i.line, i.message))
                    .collect());
            }
            parsed
                .boxes
                .iter()
                .map(|b| (b.class, b.to_pixels(width, height)))
                .collect()
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return Err(vec![format!(
                "{}: cannot read label file: {err}",
                e.label.display()
            )]);
        }
    };
    Ok(ImageTruth {
        stem: e.stem.clone(),
        width,
        height,
        boxes,
    })
}

/// Label files under a split's label folders that no image of the split refers to.
pub(crate) fn orphan_labels(
    ds: &DatasetConfig,
    split: Split,
    entries: &[ImageEntry],
) -> Vec<PathBuf> {
    let expected: HashSet<&Path> = entries.iter().map(|e| e.label.as_path()).collect();
    let mut orphans = Vec::new();
    for src in ds.sources(split).iter().filter(|s| s.is_dir()) {
        let Some(label_dir) = label_path_for(&src.join("x.jpg"))
            .parent()
            .map(Path::to_path_buf)
        else {
            continue;
        };
        let mut labels = Vec::new();
        collect_txt(&label_dir, &mut labels);
        orphans.extend(labels.into_iter().filter(|l| {
            !expected.contains(l.as_path()) && l.file_name().is_some_and(|n| n != "classes.txt")
        }));
    }
    orphans.sort();
    orphans
}

fn collect_txt(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_txt(&p, out);
        } else if p.extension().is_some_and(|e| e == "txt") {
            out.push(p);
        }
    }
}

/// Prediction files key images by file stem, so stems must be unique within a split.
pub fn check_unique_stems(entries: &[ImageEntry]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for e in entries {
        if let Some(prev) = seen.insert(e.stem.as_str(), &e.image) {
            problems.push(format!(
                "{}: image name `{}` is also used by {}; names must be unique within a split",
                e.image.display(),
                e.stem,
                prev.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Problems(problems))
    }
}
