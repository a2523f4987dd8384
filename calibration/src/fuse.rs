//! Offline fusion of prediction files (`trident fuse`), as users of the `ensemble-boxes` package
//! fuse the outputs of several models: weighted boxes fusion or weighted NMS, per image.
//!
//! The inputs are prediction files as `trident predict` writes them, one per model, in the order
//! of the fusion's weights. Predictions are grouped by image stem; each image's detections are
//! fused by the edge runtime's own [`Fusion`] (a bit-exact reproduction of `ensemble-boxes`
//! 1.0.9), with each model's detections in file order.
//!
//! **Coordinates.** Prediction files hold pixel boxes and no image sizes, so boxes are fused in
//! pixels and nothing is clipped (`clip_unit` is ignored: `trident predict`'s boxes lie inside
//! the image). IoU and the score-weighted box average do not depend on the scale of either axis,
//! so this is `ensemble-boxes` on the boxes normalised by each image's width and height, scaled
//! back (to float32 rounding, `tests/fuse_parity.rs`). Zero-area boxes are dropped, as the
//! package drops them. Scores are fused as `f32`, as on the device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use trident_core::geometry::BoxXyxy;
use trident_core::postprocess::Detection;
use trident_core::prediction::{Prediction, load_predictions};
use trident_infer::ensemble::fusion::{Fusion, NmsFusionOptions, WbfOptions};

use crate::error::{Error, Result};

/// Most models one fusion takes (a cluster's models are the bits of a `u64`).
pub const MAX_MODELS: usize = 64;

/// What [`fuse_files`] read and produced.
#[derive(Clone, Debug, PartialEq)]
pub struct FuseOutcome {
    /// The fused predictions: images in order of first appearance across the inputs, each
    /// image's boxes in the fusion's output order (WBF: by descending score; NMS: by class id,
    /// then descending score, as the package).
    pub predictions: Vec<Prediction>,
    /// Images with at least one prediction in some input.
    pub images: usize,
    /// Predictions read from each input, in input order.
    pub boxes_in: Vec<usize>,
}

/// Checks the fusion's options for `models` inputs: at least one and at most [`MAX_MODELS`]
/// inputs, an IoU threshold and a skip threshold in `[0, 1]`, one finite weight ≥ 0 per input,
/// not all 0.
pub fn check_fusion(fusion: &Fusion, models: usize) -> Result<()> {
    if models == 0 {
        return Err(Error::input("fuse", "no prediction files to fuse"));
    }
    if models > MAX_MODELS {
        let msg = format!("{models} prediction files: fusion takes at most {MAX_MODELS}");
        return Err(Error::input("fuse", msg));
    }
    let unit = |name: &str, v: f64| {
        let ok = (0.0..=1.0).contains(&v);
        ok.then_some(())
            .ok_or_else(|| Error::input(name, format!("{v} is not a number in [0, 1]")))
    };
    let (iou, weights) = match fusion {
        Fusion::Wbf(o) => {
            unit("skip_box_thr", o.skip_box_thr)?;
            (o.iou_thr, o.weights.as_deref())
        }
        Fusion::Nms(o) => (o.iou_thr, o.weights.as_deref()),
    };
    unit("iou_thr", iou)?;
    let Some(w) = weights else { return Ok(()) };
    if w.len() != models {
        let msg = format!(
            "{} given for {models} prediction files: give one per file, in the files' order",
            w.len()
        );
        return Err(Error::input("weights", msg));
    }
    if let Some((i, x)) = w
        .iter()
        .enumerate()
        .find(|(_, x)| !(0.0..f64::INFINITY).contains(*x))
    {
        let msg = format!("weight {} is {x}: weights must be finite and ≥ 0", i + 1);
        return Err(Error::input("weights", msg));
    }
    if w.iter().all(|x| *x == 0.0) {
        return Err(Error::input("weights", "all weights are 0"));
    }
    Ok(())
}

/// Checks one prediction beyond what its JSON schema says: a finite score in `[0, 1]`, a finite
/// box of non-negative size whose far corner is finite too.
pub fn check_prediction(p: &Prediction) -> std::result::Result<(), String> {
    p.validate(usize::MAX)?;
    let [x, y, w, h] = p.bbox;
    if !(x + w).is_finite() || !(y + h).is_finite() {
        return Err(format!("bbox {:?} reaches past the largest number", p.bbox));
    }
    Ok(())
}

/// Fuses the predictions of several models (`per_model[t]` the predictions of model `t`, in the
/// order of the fusion's weights), image by image; see the module documentation for the
/// coordinates. An invalid option or prediction is an input error naming the input and item.
pub fn fuse_predictions(per_model: &[Vec<Prediction>], fusion: &Fusion) -> Result<Vec<Prediction>> {
    check_fusion(fusion, per_model.len())?;
    for (t, preds) in per_model.iter().enumerate() {
        for (i, p) in preds.iter().enumerate() {
            let location = || format!("input {}, item {i}", t + 1);
            check_prediction(p).map_err(|m| Error::input(location(), m))?;
        }
    }
    Ok(fuse_checked(per_model, fusion)?.0)
}

/// Reads the prediction files `inputs` (one per model, in weight order), checks every option and
/// every prediction, and fuses them with [`fuse_predictions`]. Errors name the option, or the
/// file and the item (by index from 0, or the JSON line and column); nothing is written here.
pub fn fuse_files(inputs: &[PathBuf], fusion: &Fusion) -> Result<FuseOutcome> {
    check_fusion(fusion, inputs.len())?;
    let per_model = inputs
        .iter()
        .map(|path| load_checked(path))
        .collect::<Result<Vec<_>>>()?;
    let (predictions, images) = fuse_checked(&per_model, fusion)?;
    let boxes_in = per_model.iter().map(Vec::len).collect();
    Ok(FuseOutcome {
        predictions,
        images,
        boxes_in,
    })
}

/// A prediction file, every item checked with [`check_prediction`].
pub fn load_checked(path: &Path) -> Result<Vec<Prediction>> {
    let preds = load_predictions(path)?;
    for (i, p) in preds.iter().enumerate() {
        let location = || format!("{}: item {i}", path.display());
        check_prediction(p).map_err(|m| Error::input(location(), m))?;
    }
    Ok(preds)
}

/// Groups checked predictions by image, fuses each image; returns the fused predictions and the
/// number of images.
fn fuse_checked(
    per_model: &[Vec<Prediction>],
    fusion: &Fusion,
) -> Result<(Vec<Prediction>, usize)> {
    let fusion = in_pixels(fusion);
    let models = per_model.len();
    // Images in order of first appearance; per image, one detection list per model. Files
    // usually list an image's predictions together: the last image is tried before the map.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut images: Vec<(&str, Vec<Vec<Detection>>)> = Vec::new();
    for (t, preds) in per_model.iter().enumerate() {
        let mut last = None;
        for p in preds {
            let stem = p.image.as_str();
            let k = match last {
                Some((s, k)) if s == stem => k,
                _ => *index.entry(stem).or_insert_with(|| {
                    images.push((stem, vec![Vec::new(); models]));
                    images.len() - 1
                }),
            };
            last = Some((stem, k));
            images[k].1[t].push(detection(p));
        }
    }
    let total: usize = per_model.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total / models.max(1) + 1);
    for (image, dets) in &images {
        let fused = fusion.fuse(dets)?;
        out.extend(fused.iter().map(|d| Prediction {
            image: (*image).to_string(),
            class: d.class,
            score: f64::from(d.score),
            bbox: d.bbox.to_xywh().to_array(),
        }));
    }
    Ok((out, images.len()))
}

/// The fusion with clipping to `[0, 1]` off: the boxes are pixels.
fn in_pixels(fusion: &Fusion) -> Fusion {
    match fusion {
        Fusion::Wbf(o) => Fusion::Wbf(WbfOptions {
            clip_unit: false,
            ..o.clone()
        }),
        Fusion::Nms(o) => Fusion::Nms(NmsFusionOptions {
            clip_unit: false,
            ..o.clone()
        }),
    }
}

fn detection(p: &Prediction) -> Detection {
    let [x, y, w, h] = p.bbox;
    Detection {
        class: p.class,
        score: p.score as f32,
        bbox: BoxXyxy::new(x, y, x + w, y + h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_core::prediction::save_predictions;
    use trident_infer::ensemble::fusion::ConfType;

    fn p(image: &str, class: usize, score: f64, bbox: [f64; 4]) -> Prediction {
        let image = image.to_string();
        Prediction {
            image,
            class,
            score,
            bbox,
        }
    }

    fn wbf(weights: Option<Vec<f64>>) -> Fusion {
        Fusion::Wbf(WbfOptions {
            weights,
            conf_type: ConfType::Avg,
            ..Default::default()
        })
    }

    #[test]
    fn groups_by_image_in_order_of_first_appearance_in_pixels() {
        // Image "b" first seen in model 1, "a" in model 1 too, "c" only in model 2.
        let m1 = vec![
            p("b", 0, 0.8, [100.0, 100.0, 50.0, 40.0]),
            p("a", 1, 0.6, [10.0, 10.0, 20.0, 20.0]),
        ];
        let m2 = vec![
            p("c", 0, 0.5, [300.0, 200.0, 30.0, 30.0]),
            p("b", 0, 0.4, [104.0, 100.0, 50.0, 40.0]),
        ];
        let out = fuse_predictions(&[m1, m2], &wbf(None)).unwrap();
        let images: Vec<&str> = out.iter().map(|p| p.image.as_str()).collect();
        assert_eq!(images, ["b", "a", "c"], "{out:?}");
        // "b": the two boxes fuse (IoU 0.85), weighted by score, not clipped to [0, 1].
        let b = &out[0];
        let x = (0.8 * 100.0 + 0.4 * 104.0) / 1.2;
        assert!(
            (b.bbox[0] - x).abs() < 1e-4 && (b.bbox[2] - 50.0).abs() < 1e-4,
            "{b:?}"
        );
        assert!((b.score - 0.6).abs() < 1e-6, "{b:?}");
        // "a" and "c": found by one model of two, half the score, own box.
        assert!((out[1].score - 0.3).abs() < 1e-6 && out[1].bbox == [10.0, 10.0, 20.0, 20.0]);
        assert!((out[2].score - 0.25).abs() < 1e-6 && out[2].bbox == [300.0, 200.0, 30.0, 30.0]);
        // Weights pull the box and the score; NMS keeps the best weighted box.
        let m1 = vec![p("b", 0, 0.8, [100.0, 100.0, 50.0, 40.0])];
        let m2 = vec![p("b", 0, 0.4, [104.0, 100.0, 50.0, 40.0])];
        let both = [m1, m2];
        let out = fuse_predictions(&both, &wbf(Some(vec![1.0, 3.0]))).unwrap();
        let x = (0.8 * 100.0 + 1.2 * 104.0) / 2.0;
        assert!(
            out.len() == 1 && (out[0].bbox[0] - x).abs() < 1e-4,
            "{out:?}"
        );
        let nms = Fusion::Nms(NmsFusionOptions {
            weights: Some(vec![1.0, 3.0]),
            ..Default::default()
        });
        let out = fuse_predictions(&both, &nms).unwrap();
        assert!(out.len() == 1 && out[0].bbox[0] == 104.0 && (out[0].score - 0.3).abs() < 1e-6);
        // Nothing in, nothing out; zero-area boxes are dropped.
        assert!(
            fuse_predictions(&[vec![], vec![]], &wbf(None))
                .unwrap()
                .is_empty()
        );
        let flat = vec![p("a", 0, 0.5, [1.0, 1.0, 0.0, 5.0])];
        assert!(fuse_predictions(&[flat], &wbf(None)).unwrap().is_empty());
    }

    #[test]
    fn bad_options_and_predictions_are_input_errors_naming_them() {
        let one = vec![p("a", 0, 0.5, [0.0, 0.0, 5.0, 5.0])];
        let two = [one.clone(), one.clone()];
        let err = |r: Result<Vec<Prediction>>| {
            let e = r.unwrap_err();
            assert!(e.is_input_error(), "{e}");
            e.to_string()
        };
        let e = err(fuse_predictions(&two, &wbf(Some(vec![2.0, 1.0, 1.0]))));
        assert!(e.contains("weights: 3 given for 2 prediction files"), "{e}");
        for w in [vec![1.0, f64::NAN], vec![-1.0, 1.0], vec![0.0, 0.0]] {
            assert!(err(fuse_predictions(&two, &wbf(Some(w)))).starts_with("weights: "));
        }
        let bad_iou = Fusion::Nms(NmsFusionOptions {
            iou_thr: 1.5,
            ..Default::default()
        });
        assert!(err(fuse_predictions(&two, &bad_iou)).starts_with("iou_thr: 1.5"));
        let bad_skip = Fusion::Wbf(WbfOptions {
            skip_box_thr: f64::NAN,
            ..Default::default()
        });
        assert!(err(fuse_predictions(&two, &bad_skip)).starts_with("skip_box_thr: NaN"));
        assert!(err(fuse_predictions(&[], &wbf(None))).contains("no prediction files"));
        let many = vec![Vec::new(); MAX_MODELS + 1];
        assert!(err(fuse_predictions(&many, &wbf(None))).contains("at most 64"));
        let mut bad = one.clone();
        bad.push(p("a", 0, 1.5, [0.0, 0.0, 5.0, 5.0]));
        let e = err(fuse_predictions(&[one.clone(), bad], &wbf(None)));
        assert!(e.starts_with("input 2, item 1: score 1.5"), "{e}");
        let far = vec![p("a", 0, 0.5, [f64::MAX, 0.0, f64::MAX, 5.0])];
        assert!(err(fuse_predictions(&[far], &wbf(None))).contains("input 1, item 0"));
    }

    #[test]
    fn files_are_checked_before_fusing_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        let preds = vec![
            p("a", 0, 0.5, [0.0, 0.0, 5.0, 5.0]),
            p("b", 1, 0.7, [1.0; 4]),
        ];
        save_predictions(&good, &preds).unwrap();
        let out = fuse_files(&[good.clone(), good.clone()], &wbf(None)).unwrap();
        assert_eq!(
            (out.images, out.boxes_in.clone()),
            (2, vec![2, 2]),
            "{out:?}"
        );
        assert_eq!(out.predictions.len(), 2);

        let negative = dir.path().join("negative.json");
        let text = r#"[{"image": "a", "class": 0, "score": 0.5, "bbox": [0, 0, 5, 5]},
                       {"image": "a", "class": 0, "score": 0.5, "bbox": [0, 0, -5, 5]}]"#;
        std::fs::write(&negative, text).unwrap();
        let malformed = dir.path().join("malformed.json");
        std::fs::write(&malformed, "[{\"image\": \"a\", \"class\": 0,}]").unwrap();
        let missing = dir.path().join("missing.json");
        for (bad, want) in [
            (&negative, "negative.json: item 1: bbox"),
            (&malformed, "malformed.json:1:"),
            (&missing, "missing.json"),
        ] {
            let e = fuse_files(&[good.clone(), bad.clone()], &wbf(None)).unwrap_err();
            assert!(e.is_input_error() && e.to_string().contains(want), "{e}");
        }
        // The weights are checked before any file is read.
        let e = fuse_files(std::slice::from_ref(&missing), &wbf(Some(vec![1.0, 1.0]))).unwrap_err();
        assert!(e.to_string().starts_with("weights: 2 given for 1"), "{e}");
    }
}
