//! Prediction files: what `trident predict` writes and `trident eval` reads.
//!
//! A JSON array of `{"image": "<file stem>", "class": <int>, "score": <float>, "bbox": [x, y, w, h]}`
//! with the box in pixels of the original image (the COCO results format, keyed by stem).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::geometry::BoxXywh;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    pub image: String,
    pub class: usize,
    pub score: f64,
    pub bbox: [f64; 4],
}

impl Prediction {
    pub fn bbox(&self) -> BoxXywh {
        let [x, y, w, h] = self.bbox;
        BoxXywh::new(x, y, w, h)
    }

    /// Checks what the JSON schema cannot: finite values, a non-negative size, a 0–1 score.
    pub fn validate(&self, num_classes: usize) -> std::result::Result<(), String> {
        if self.class >= num_classes {
            return Err(format!(
                "class {} out of range: the dataset has {num_classes} classes",
                self.class
            ));
        }
        if !self.score.is_finite() || !(0.0..=1.0).contains(&self.score) {
            return Err(format!("score {} is not in [0, 1]", self.score));
        }
        if self.bbox.iter().any(|v| !v.is_finite()) {
            return Err(format!("bbox {:?} has a non-finite value", self.bbox));
        }
        if self.bbox[2] < 0.0 || self.bbox[3] < 0.0 {
            return Err(format!(
                "bbox {:?} has a negative size (expected [x, y, w, h] with w, h >= 0)",
                self.bbox
            ));
        }
        Ok(())
    }
}

/// Reads a prediction file; malformed JSON is reported with its line and column.
pub fn load_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let text = crate::error::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Writes a prediction file atomically.
pub fn save_predictions(path: &Path, preds: &[Prediction]) -> Result<()> {
    let json = serde_json::to_vec_pretty(preds).expect("predictions serialise");
    write_atomic(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_error_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, "[\n {\"image\": \"a\", \"class\": 0, \"score\": 0.5, \"bbox\": [1,2,3,4]},\n {\"image\": \"b\", \"class\": 0}\n]").unwrap();
        let e = load_predictions(&p).unwrap_err().to_string();
        assert!(e.contains("p.json:3:"), "{e}");
        assert!(e.contains("missing field `score`"), "{e}");
    }

    #[test]
    fn validation_rejects_negative_sizes_bad_scores_and_classes() {
        let ok = Prediction {
            image: "a".into(),
            class: 1,
            score: 0.3,
            bbox: [0.0, 0.0, 5.0, 5.0],
        };
        assert!(ok.validate(2).is_ok());
        assert!(
            Prediction {
                class: 2,
                ..ok.clone()
            }
            .validate(2)
            .unwrap_err()
            .contains("out of range")
        );
        assert!(
            Prediction {
                score: 1.5,
                ..ok.clone()
            }
            .validate(2)
            .is_err()
        );
        assert!(
            Prediction {
                bbox: [0.0, 0.0, -1.0, 5.0],
                ..ok.clone()
            }
            .validate(2)
            .unwrap_err()
            .contains("negative size")
        );
    }

    #[test]
    fn save_and_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        let preds = vec![Prediction {
            image: "x".into(),
            class: 0,
            score: 0.25,
            bbox: [1.5, 2.0, 3.0, 4.0],
        }];
        save_predictions(&p, &preds).unwrap();
        assert_eq!(load_predictions(&p).unwrap(), preds);
    }
}
