//! `trident data synth`: a deterministic synthetic underwater dataset in the Ultralytics layout.

use std::path::Path;

use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Deserialize;
use trident_core::dataset::{Split, dataset_yaml};
use trident_core::fsutil::StagingDir;
use trident_core::labels::LabelBox;

use crate::error::{Error, Result};
use crate::scene::{SceneSettings, render};

/// Settings of the generator; `configs/synth.yaml` documents each field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    pub images: usize,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub classes: Vec<String>,
    /// Objects per image are drawn uniformly from 0..=max_objects (0 gives background images).
    pub max_objects: usize,
    /// Object extent as a fraction of the frame's shorter side.
    pub min_size: f64,
    pub max_size: f64,
    pub blur_probability: f64,
    /// Fractions of images for train, val and test.
    pub split_ratios: [f64; 3],
    pub jpeg_quality: u8,
    /// `split` (Ultralytics layout with dataset.yaml) or `flat` (one `images/` + `labels/` pool
    /// with `classes.txt`, the input of `trident data split`).
    pub layout: Layout,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Split,
    Flat,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            images: 300,
            seed: 0,
            width: 320,
            height: 240,
            classes: vec!["lionfish".into(), "urchin".into(), "abalone".into()],
            max_objects: 6,
            min_size: 0.05,
            max_size: 0.35,
            blur_probability: 0.15,
            split_ratios: [0.7, 0.15, 0.15],
            jpeg_quality: 90,
            layout: Layout::Split,
        }
    }
}

impl SynthConfig {
    /// Reads a YAML config; fields left out keep their defaults.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(trident_core::yaml::load_yaml(path)?)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |option, message: &str| {
            Err(Error::Option {
                option,
                message: message.into(),
            })
        };
        if self.images == 0 {
            return bad("images", "must be at least 1");
        }
        if self.width < 32 || self.height < 32 {
            return bad("width/height", "frames must be at least 32×32 pixels");
        }
        if self.classes.is_empty() || self.classes.iter().any(|c| c.trim().is_empty()) {
            return bad("classes", "needs at least one non-empty class name");
        }
        if !(0.0 < self.min_size && self.min_size <= self.max_size && self.max_size <= 1.0) {
            return bad("min_size/max_size", "need 0 < min_size <= max_size <= 1");
        }
        if self.split_ratios.iter().any(|r| *r < 0.0)
            || self.split_ratios[0] <= 0.0
            || self.split_ratios[1] <= 0.0
        {
            return bad(
                "split_ratios",
                "train and val must be positive, test non-negative",
            );
        }
        if !(0.0..=1.0).contains(&self.blur_probability) {
            return bad("blur_probability", "must be in [0, 1]");
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad("jpeg_quality", "must be in 1..=100");
        }
        Ok(())
    }
}

/// What a synth run wrote.
#[derive(Clone, Debug, Default)]
pub struct SynthSummary {
    pub images: [usize; 3],
    pub boxes: usize,
    pub backgrounds: usize,
    pub boxes_per_class: Vec<usize>,
}

/// Generates the dataset into `out` (atomically: a staging folder renamed at the end).
pub fn synthesize(
    cfg: &SynthConfig,
    out: &Path,
    force: bool,
    progress: &ProgressBar,
) -> Result<SynthSummary> {
    cfg.validate()?;
    let staging = StagingDir::new(out, force)?;
    let root = staging.path();
    let splits = assign_splits(cfg);
    let used_splits: Vec<Split> = Split::ALL
        .into_iter()
        .filter(|s| splits.contains(s))
        .collect();
    let subdir = |s: Split| {
        if cfg.layout == Layout::Flat {
            ""
        } else {
            s.as_str()
        }
    };
    for s in &used_splits {
        for kind in ["images", "labels"] {
            let d = root.join(kind).join(subdir(*s));
            std::fs::create_dir_all(&d)
                .map_err(|e| trident_core::Error::io("cannot create directory", &d, e))?;
        }
    }
    let settings = SceneSettings {
        width: cfg.width,
        height: cfg.height,
        max_objects: cfg.max_objects,
        min_size: cfg.min_size,
        max_size: cfg.max_size,
        blur_probability: cfg.blur_probability,
    };
    progress.set_length(cfg.images as u64);
    let per_image: Vec<Vec<usize>> = (0..cfg.images)
        .into_par_iter()
        .map(|i| -> Result<Vec<usize>> {
            // One independent stream per image: the output does not depend on thread scheduling.
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(i as u64);
            let scene = render(&mut rng, &settings, cfg.classes.len());
            let split = subdir(splits[i]);
            let stem = format!("scene_{i:06}");
            let img_path = root.join("images").join(split).join(format!("{stem}.jpg"));
            let img =
                image::RgbImage::from_raw(cfg.width, cfg.height, scene.rgb).expect("buffer size");
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, cfg.jpeg_quality)
                .encode_image(&img)
                .map_err(|e| Error::Encode {
                    path: img_path.clone(),
                    source: e,
                })?;
            std::fs::write(&img_path, bytes)
                .map_err(|e| trident_core::Error::io("cannot write", &img_path, e))?;
            let mut text = String::new();
            for (class, b) in &scene.objects {
                text.push_str(&LabelBox::from_pixels(*class, b, cfg.width, cfg.height).to_line());
                text.push('\n');
            }
            let label_path = root.join("labels").join(split).join(format!("{stem}.txt"));
            std::fs::write(&label_path, text)
                .map_err(|e| trident_core::Error::io("cannot write", &label_path, e))?;
            progress.inc(1);
            Ok(scene.objects.iter().map(|(c, _)| *c).collect())
        })
        .collect::<Result<_>>()?;
    let (meta, text) = match cfg.layout {
        Layout::Split => (
            root.join("dataset.yaml"),
            dataset_yaml(&cfg.classes, &used_splits),
        ),
        Layout::Flat => (root.join("classes.txt"), cfg.classes.join("\n") + "\n"),
    };
    std::fs::write(&meta, text).map_err(|e| trident_core::Error::io("cannot write", &meta, e))?;
    staging.commit()?;

    let mut summary = SynthSummary {
        boxes_per_class: vec![0; cfg.classes.len()],
        ..Default::default()
    };
    for (i, classes) in per_image.iter().enumerate() {
        summary.images[Split::ALL.iter().position(|s| *s == splits[i]).unwrap_or(0)] += 1;
        summary.boxes += classes.len();
        summary.backgrounds += usize::from(classes.is_empty());
        for c in classes {
            summary.boxes_per_class[*c] += 1;
        }
    }
    Ok(summary)
}

/// A seeded shuffle of image indices cut by the split ratios.
fn assign_splits(cfg: &SynthConfig) -> Vec<Split> {
    let n = cfg.images;
    let total: f64 = cfg.split_ratios.iter().sum();
    let n_train = ((cfg.split_ratios[0] / total) * n as f64).round() as usize;
    let n_train = n_train.min(n);
    let n_val = if cfg.split_ratios[2] == 0.0 {
        n - n_train
    } else {
        (((cfg.split_ratios[1] / total) * n as f64).round() as usize).min(n - n_train)
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5EED_5711));
    let mut splits = vec![Split::Test; n];
    for (rank, &i) in order.iter().enumerate() {
        splits[i] = if rank < n_train {
            Split::Train
        } else if rank < n_train + n_val {
            Split::Val
        } else {
            Split::Test
        };
    }
    splits
}
