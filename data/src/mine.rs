//! Hard-negative mining (the core seed's week 4): the detections a model gets wrong, as frames to
//! train on next.
//!
//! - On labelled images, a false positive is a detection at or above the threshold that matches
//!   no ground-truth box of its class at IoU ≥ 0.5 (greedy by score, as COCO matches). These
//!   frames are already in the training data with their labels; they are counted (false
//!   positives per image, before and after a round), not copied: adding them as background would
//!   teach the model to miss the animals they hold.
//! - On a background pool — footage known to hold none of the classes (empty reef, open water,
//!   the housing's own reflections) — every detection is a false positive, and the frames with
//!   any become background images (empty label files) in the mined pool.

use std::path::{Path, PathBuf};

use trident_core::dataset::ImageTruth;
use trident_core::fsutil::StagingDir;
use trident_core::prediction::Prediction;

use crate::error::Result;
use crate::split::FileMode;

/// IoU at which a detection counts as finding a ground-truth box.
pub const MATCH_IOU: f64 = 0.5;

/// The detections of one labelled image that match no ground-truth box of their class.
pub fn false_positives<'a>(
    detections: &'a [Prediction],
    truth: &ImageTruth,
    conf: f64,
) -> Vec<&'a Prediction> {
    let mut order: Vec<&Prediction> = detections.iter().filter(|d| d.score >= conf).collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut used = vec![false; truth.boxes.len()];
    let mut out = Vec::new();
    for d in order {
        let b = d.bbox().to_xyxy();
        let best = truth
            .boxes
            .iter()
            .enumerate()
            .filter(|(k, (c, _))| !used[*k] && *c == d.class)
            .map(|(k, (_, t))| (k, b.iou(&t.to_xyxy())))
            .filter(|(_, iou)| *iou >= MATCH_IOU)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        match best {
            Some((k, _)) => used[k] = true,
            None => out.push(d),
        }
    }
    out
}

/// A background frame with false positives.
#[derive(Clone, Debug)]
pub struct MinedFrame {
    pub image: PathBuf,
    pub false_positives: usize,
    pub max_score: f64,
}

/// The background frames with at least one detection at or above `conf`, most confident
/// mistake first (ties by file name).
pub fn background_frames(frames: &[(PathBuf, Vec<Prediction>)], conf: f64) -> Vec<MinedFrame> {
    let mut out: Vec<MinedFrame> = frames
        .iter()
        .filter_map(|(image, dets)| {
            let fp: Vec<f64> = dets
                .iter()
                .filter(|d| d.score >= conf)
                .map(|d| d.score)
                .collect();
            (!fp.is_empty()).then(|| MinedFrame {
                image: image.clone(),
                false_positives: fp.len(),
                max_score: fp.iter().copied().fold(0.0, f64::max),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.max_score
            .total_cmp(&a.max_score)
            .then_with(|| a.image.cmp(&b.image))
    });
    out
}

/// Writes the mined pool atomically: `images/` (the frames), `labels/` (empty files: background),
/// `mined.csv` (file, false positives, highest score), `classes.txt`, and `extra` files (name,
/// text). Names get `prefix` (e.g. `hardneg_`) so that they never collide with the dataset's own
/// frames, or an earlier round's pool, when listed as one more train source.
pub fn write_pool(
    frames: &[MinedFrame],
    names: &[String],
    out: &Path,
    prefix: &str,
    force: bool,
    mode: FileMode,
    extra: &[(&str, String)],
) -> Result<()> {
    let staging = StagingDir::new(out, force)?;
    let root = staging.path();
    let (img_dir, lbl_dir) = (root.join("images"), root.join("labels"));
    for d in [&img_dir, &lbl_dir] {
        std::fs::create_dir_all(d).map_err(|e| trident_core::Error::io("cannot create", d, e))?;
    }
    let mut csv = String::from("file,false_positives,max_score\n");
    let mut warned = false;
    for f in frames {
        let stem = f
            .image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = f
            .image
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_else(|| "jpg".into());
        let name = format!("{prefix}{stem}");
        crate::split::place_file(
            &f.image,
            &img_dir.join(format!("{name}.{ext}")),
            mode,
            &mut warned,
        )?;
        let label = lbl_dir.join(format!("{name}.txt"));
        std::fs::write(&label, "")
            .map_err(|e| trident_core::Error::io("cannot write", &label, e))?;
        csv.push_str(&format!(
            "{name}.{ext},{},{:.4}\n",
            f.false_positives, f.max_score
        ));
    }
    let write = |file: &str, text: String| {
        let p = root.join(file);
        std::fs::write(&p, text).map_err(|e| trident_core::Error::io("cannot write", &p, e))
    };
    write("mined.csv", csv)?;
    write("classes.txt", names.join("\n") + "\n")?;
    for (file, text) in extra {
        write(file, text.clone())?;
    }
    staging.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_core::geometry::BoxXywh;

    fn det(class: usize, score: f64, x: f64) -> Prediction {
        Prediction {
            image: "a".into(),
            class,
            score,
            bbox: [x, 0.0, 10.0, 10.0],
        }
    }

    #[test]
    fn a_detection_is_false_when_no_box_of_its_class_is_left_to_match() {
        let truth = ImageTruth {
            stem: "a".into(),
            width: 100,
            height: 100,
            boxes: vec![(0, BoxXywh::new(0.0, 0.0, 10.0, 10.0))],
        };
        let dets = vec![
            det(0, 0.9, 0.0),  // matches
            det(0, 0.8, 1.0),  // the same box again: a duplicate
            det(1, 0.7, 0.0),  // right place, wrong class
            det(0, 0.6, 50.0), // nothing there
            det(0, 0.1, 50.0), // below the threshold
        ];
        let fp: Vec<f64> = false_positives(&dets, &truth, 0.25)
            .iter()
            .map(|d| d.score)
            .collect();
        assert_eq!(fp, vec![0.8, 0.7, 0.6]);
    }

    #[test]
    fn background_frames_with_mistakes_rank_by_their_most_confident_one() {
        let frames = vec![
            (PathBuf::from("b.jpg"), vec![det(0, 0.3, 0.0)]),
            (PathBuf::from("c.jpg"), vec![det(0, 0.1, 0.0)]),
            (
                PathBuf::from("a.jpg"),
                vec![det(0, 0.9, 0.0), det(1, 0.5, 20.0)],
            ),
        ];
        let mined = background_frames(&frames, 0.25);
        let names: Vec<&str> = mined.iter().map(|m| m.image.to_str().unwrap()).collect();
        assert_eq!(names, vec!["a.jpg", "b.jpg"]);
        assert_eq!(mined[0].false_positives, 2);
    }
}
