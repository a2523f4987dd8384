//! `trident data check`: every file and label line of a dataset, with a summary, and a warning
//! for near-identical images (perceptual hash) in different splits.

use std::path::Path;

use indicatif::ProgressBar;
use rayon::prelude::*;
use trident_core::dataset::{DatasetConfig, ImageEntry, Split};
use trident_core::labels::{Severity, parse_labels};

use crate::error::{Error, Result};

/// One finding, already located (`path` or `path:line`).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SplitSummary {
    pub split: Split,
    pub images: usize,
    /// Images without a label file or with an empty one (allowed: background images).
    pub backgrounds: usize,
    pub boxes_per_class: Vec<usize>,
}

impl SplitSummary {
    pub fn boxes(&self) -> usize {
        self.boxes_per_class.iter().sum()
    }
}

#[derive(Clone, Debug)]
pub struct CheckReport {
    pub names: Vec<String>,
    pub splits: Vec<SplitSummary>,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks a dataset. A YAML that cannot be used at all is an `Err`; problems with individual
/// files are collected in the report so that all of them can be fixed in one pass.
pub fn check_dataset(yaml: &Path, progress: &ProgressBar) -> Result<CheckReport> {
    let ds = DatasetConfig::load(yaml)?;
    let mut report = CheckReport {
        names: ds.names.clone(),
        splits: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut per_split = Vec::new();
    for split in ds.splits() {
        match ds.list_images(split) {
            Ok(entries) => per_split.push((split, entries)),
            Err(e) => report.errors.push(Finding {
                location: format!("split `{split}`"),
                message: e.to_string(),
            }),
        }
    }
    progress.set_length(per_split.iter().map(|(_, e)| e.len() as u64).sum());
    let mut hashes: Vec<(u64, usize)> = Vec::new();
    let mut hashed: Vec<(&ImageEntry, Split)> = Vec::new();
    for (k, (split, entries)) in per_split.iter().enumerate() {
        let (summary, h) = check_split(&ds, *split, entries, &mut report, progress);
        report.splits.push(summary);
        for (e, hash) in entries.iter().zip(h) {
            if let Some(hash) = hash {
                hashes.push((hash, k));
                hashed.push((e, *split));
            }
        }
    }
    report.warnings.extend(leaks(&hashes, &hashed));
    Ok(report)
}

/// Near-identical images in different splits (at most [`LEAKS_LISTED`] named, then a count).
fn leaks(hashes: &[(u64, usize)], entries: &[(&ImageEntry, Split)]) -> Vec<Finding> {
    let pairs = crate::phash::cross_group_pairs(hashes);
    let mut out: Vec<Finding> = pairs
        .iter()
        .take(LEAKS_LISTED)
        .map(|&(i, j, d)| Finding {
            location: entries[i].0.image.display().to_string(),
            message: format!(
                "({}) looks like {} ({}): perceptual hash distance {d}; near-identical frames in two splits let validation reward memorisation — split with `trident data split --group-by`",
                entries[i].1,
                entries[j].0.image.display(),
                entries[j].1
            ),
        })
        .collect();
    if pairs.len() > LEAKS_LISTED {
        out.push(Finding {
            location: "splits".into(),
            message: format!(
                "{} more near-identical pairs across splits",
                pairs.len() - LEAKS_LISTED
            ),
        });
    }
    out
}

const LEAKS_LISTED: usize = 20;

struct ImageResult {
    /// The perceptual hash, when the image decodes.
    hash: Option<u64>,
    background: bool,
    classes: Vec<usize>,
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

fn check_split(
    ds: &DatasetConfig,
    split: Split,
    entries: &[ImageEntry],
    report: &mut CheckReport,
    progress: &ProgressBar,
) -> (SplitSummary, Vec<Option<u64>>) {
    if entries.is_empty() {
        report.errors.push(Finding {
            location: format!("{}: field `{split}`", ds.yaml_path.display()),
            message: "the split has no images".into(),
        });
    }
    if let Err(Error::Problems(p)) = crate::truth::check_unique_stems(entries) {
        report.errors.extend(p.into_iter().map(|m| {
            let (loc, msg) = m.split_once(": ").unwrap_or(("", &m));
            Finding {
                location: loc.to_string(),
                message: msg.to_string(),
            }
        }));
    }
    let results: Vec<ImageResult> = entries
        .par_iter()
        .map(|e| {
            let r = check_image(e, ds.num_classes());
            progress.inc(1);
            r
        })
        .collect();
    let mut summary = SplitSummary {
        split,
        images: entries.len(),
        backgrounds: 0,
        boxes_per_class: vec![0; ds.num_classes()],
    };
    let mut hashes = Vec::with_capacity(results.len());
    for r in results {
        hashes.push(r.hash);
        summary.backgrounds += usize::from(r.background);
        for c in r.classes {
            summary.boxes_per_class[c] += 1;
        }
        report.errors.extend(r.errors);
        report.warnings.extend(r.warnings);
    }
    for l in crate::truth::orphan_labels(ds, split, entries) {
        report.errors.push(Finding {
            location: l.display().to_string(),
            message: "label file has no matching image".into(),
        });
    }
    (summary, hashes)
}

fn check_image(e: &ImageEntry, num_classes: usize) -> ImageResult {
    let mut r = ImageResult {
        hash: None,
        background: false,
        classes: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    // A full decode: truncated or corrupt files fail here rather than in the middle of training.
    match image::ImageReader::open(&e.image)
        .map_err(image::ImageError::IoError)
        .and_then(|r| r.with_guessed_format().map_err(image::ImageError::IoError))
        .and_then(|r| r.decode())
    {
        Ok(img) => r.hash = Some(crate::phash::phash(&img)),
        Err(err) => r.errors.push(Finding {
            location: e.image.display().to_string(),
            message: format!("unreadable image: {err}"),
        }),
    }
    match std::fs::read_to_string(&e.label) {
        Ok(text) => {
            let parsed = parse_labels(&text, num_classes);
            r.background = parsed.boxes.is_empty() && !parsed.has_errors();
            r.classes = parsed.boxes.iter().map(|b| b.class).collect();
            for i in parsed.issues {
                let f = Finding {
                    location: format!("{}:{}", e.label.display(), i.line),
                    message: i.message,
                };
                match i.severity {
                    Severity::Error => r.errors.push(f),
                    Severity::Warning => r.warnings.push(f),
                }
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => r.background = true,
        Err(err) => r.errors.push(Finding {
            location: e.label.display().to_string(),
            message: format!("unreadable label file: {err}"),
        }),
    }
    r
}
