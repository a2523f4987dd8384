//! Predictions checked against the ground truth and grouped per image and class.

use std::collections::HashMap;

use trident_core::dataset::ImageTruth;
use trident_core::prediction::Prediction;

use crate::error::{Error, Result};

/// `index[image][class]` = indices into the prediction list, in file order.
#[derive(Clone, Debug)]
pub struct PredictionIndex {
    pub by_image_class: Vec<Vec<Vec<usize>>>,
}

/// Validates every prediction (known image stem, class in range, finite box with non-negative
/// size, score in [0, 1]) and groups them. All problems are reported, each naming its item.
pub fn match_predictions(
    file: &str,
    truths: &[ImageTruth],
    preds: &[Prediction],
    num_classes: usize,
) -> Result<PredictionIndex> {
    let stems: HashMap<&str, usize> = truths
        .iter()
        .enumerate()
        .map(|(i, t)| (t.stem.as_str(), i))
        .collect();
    let mut index = vec![vec![Vec::new(); num_classes]; truths.len()];
    let mut problems = Vec::new();
    for (k, p) in preds.iter().enumerate() {
        let item = || format!("item {k} (image \"{}\")", p.image);
        let Some(&img) = stems.get(p.image.as_str()) else {
            problems.push(format!(
                "{}: unknown image: no image with this file stem in the split",
                item()
            ));
            continue;
        };
        if let Err(m) = p.validate(num_classes) {
            problems.push(format!("{}: {m}", item()));
            continue;
        }
        index[img][p.class].push(k);
    }
    if problems.is_empty() {
        Ok(PredictionIndex {
            by_image_class: index,
        })
    } else {
        const SHOWN: usize = 50;
        let extra = problems.len().saturating_sub(SHOWN);
        problems.truncate(SHOWN);
        if extra > 0 {
            problems.push(format!("... and {extra} more"));
        }
        Err(Error::Predictions {
            file: file.to_string(),
            problems,
        })
    }
}
