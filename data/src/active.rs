//! Active learning: rank unlabelled frames by how much a model would learn from their labels,
//! and write the annotation package a labelling service receives (the core seed's week 2).
//!
//! Scores come from detections the caller has made (a checkpoint, or the ensemble with each
//! member's own output), so this module needs no model:
//! - `uncertainty` (the seed's `uncertainty_sampling`): detections whose score lies in a band
//!   (0.3–0.7 by default) — the model half-sees something — each weighted by how close it is to
//!   0.5; frames with several such objects rank first.
//! - `entropy`: the summed binary entropy of every detection's score.
//! - `disagreement`: how much the ensemble's variants disagree — one minus the mean pairwise F1
//!   of their detections matched by class at IoU 0.5. A frame where `high_recall` sees a fish
//!   that `high_precision` does not is exactly one worth labelling; no single-model tool has
//!   that signal.
//!
//! Frames with a score of 0 (nothing uncertain) are never selected.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde_json::{Value, json};
use trident_core::prediction::Prediction;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    /// Detections scored in `[lo, hi]`.
    Uncertainty {
        lo: f64,
        hi: f64,
    },
    Entropy,
    Disagreement,
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Uncertainty { .. } => "uncertainty",
            Strategy::Entropy => "entropy",
            Strategy::Disagreement => "disagreement",
        }
    }
}

/// One unlabelled frame and what the models saw in it.
#[derive(Clone, Debug)]
pub struct Frame {
    pub image: PathBuf,
    pub width: u32,
    pub height: u32,
    /// The detections offered as pre-annotations (the ensemble's fused output, or the model's).
    pub detections: Vec<Prediction>,
    /// Each model's own detections (the ensemble's members), for `disagreement`.
    pub per_model: Vec<Vec<Prediction>>,
}

/// The frame's informativeness under `strategy` (0: nothing to learn).
pub fn score(frame: &Frame, strategy: Strategy) -> f64 {
    match strategy {
        Strategy::Uncertainty { lo, hi } => frame
            .detections
            .iter()
            .filter(|d| d.score >= lo && d.score <= hi)
            .map(|d| 1.0 - (2.0 * d.score - 1.0).abs())
            .sum(),
        Strategy::Entropy => frame
            .detections
            .iter()
            .map(|d| binary_entropy(d.score))
            .sum(),
        Strategy::Disagreement => disagreement(&frame.per_model),
    }
}

/// Entropy of a Bernoulli(p) in bits (1 at p = 0.5, 0 at 0 and 1).
fn binary_entropy(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    -(p * p.log2() + (1.0 - p) * (1.0 - p).log2())
}

/// One minus the mean pairwise F1 between the models' detections (same class, IoU ≥ 0.5,
/// greedy by score). Two models that both see nothing agree.
pub fn disagreement(per_model: &[Vec<Prediction>]) -> f64 {
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for i in 0..per_model.len() {
        for j in i + 1..per_model.len() {
            sum += 1.0 - pair_f1(&per_model[i], &per_model[j]);
            pairs += 1;
        }
    }
    if pairs == 0 { 0.0 } else { sum / pairs as f64 }
}

fn pair_f1(a: &[Prediction], b: &[Prediction]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let mut order: Vec<&Prediction> = a.iter().collect();
    order.sort_by(|x, y| y.score.total_cmp(&x.score));
    let mut used = vec![false; b.len()];
    let mut matched = 0usize;
    for d in order {
        let boxed = d.bbox().to_xyxy();
        let best = b
            .iter()
            .enumerate()
            .filter(|(k, o)| !used[*k] && o.class == d.class)
            .map(|(k, o)| (k, boxed.iou(&o.bbox().to_xyxy())))
            .filter(|(_, iou)| *iou >= 0.5)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some((k, _)) = best {
            used[k] = true;
            matched += 1;
        }
    }
    2.0 * matched as f64 / (a.len() + b.len()) as f64
}

/// The `num` most informative frames, best first (ties by file name), as `(index, score)`;
/// frames scoring 0 are left out.
pub fn select(frames: &[Frame], strategy: Strategy, num: usize) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (i, score(f, strategy)))
        .filter(|(_, s)| *s > 0.0)
        .collect();
    ranked.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| frames[a.0].image.cmp(&frames[b.0].image))
    });
    ranked.truncate(num);
    ranked
}

/// What goes into the package beyond the frames.
#[derive(Clone, Debug)]
pub struct PackageOptions {
    pub out: PathBuf,
    pub names: Vec<String>,
    /// Pre-annotations below this score are left out of `annotations.json`.
    pub pre_annotation_conf: f64,
    pub strategy: Strategy,
    /// Example crops per class for the guidelines (class id, crop).
    pub examples: Vec<(usize, RgbImage)>,
    /// What made the detections, for the guidelines and `selection.csv`'s header.
    pub model: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PackageReport {
    pub frames: usize,
    pub pre_annotations: usize,
    pub bytes: u64,
}

/// File name of a selected frame inside the package (`images/<name>`): unique, flat.
fn package_name(frame: &Frame, rank: usize) -> String {
    let file = frame
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("frame{rank}.jpg"));
    format!("{rank:05}_{file}")
}

/// Writes the annotation package (a zip) atomically: `images/`, `annotations.json` (COCO with
/// the pre-annotations), `selection.csv`, `contact_sheet.png`, `guidelines.md` and
/// `examples/<class>_<k>.png`.
pub fn write_package(
    frames: &[Frame],
    selected: &[(usize, f64)],
    opts: &PackageOptions,
) -> Result<PackageReport> {
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Error::Core(trident_core::Error::io(what, &p, e))
    };
    let parent = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io("cannot create directory", &parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".annotation-package")
        .suffix(".zip.tmp")
        .tempfile_in(&parent)
        .map_err(io("cannot create a temporary file in", &parent))?;
    let mut zip = zip::ZipWriter::new(tmp.reopen().map_err(io("cannot open", tmp.path()))?);
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let zerr = |e: zip::result::ZipError| {
        Error::Core(trident_core::Error::io(
            "cannot write",
            &opts.out,
            std::io::Error::other(e),
        ))
    };
    let werr =
        |e: std::io::Error| Error::Core(trident_core::Error::io("cannot write", &opts.out, e));

    let mut coco_images = Vec::new();
    let mut annotations = Vec::new();
    let mut csv = format!(
        "# {} frames selected by {} from the detections of {}\nrank,file,score,detections\n",
        selected.len(),
        opts.strategy.name(),
        opts.model
    );
    let mut thumbs = Vec::new();
    for (rank, &(i, s)) in selected.iter().enumerate() {
        let f = &frames[i];
        let name = package_name(f, rank + 1);
        let bytes = std::fs::read(&f.image).map_err(io("cannot read", &f.image))?;
        zip.start_file(format!("images/{name}"), stored)
            .map_err(zerr)?;
        zip.write_all(&bytes).map_err(werr)?;
        let id = rank + 1;
        coco_images
            .push(json!({"id": id, "file_name": name, "width": f.width, "height": f.height}));
        let kept: Vec<&Prediction> = f
            .detections
            .iter()
            .filter(|d| d.score >= opts.pre_annotation_conf)
            .collect();
        for d in &kept {
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": id,
                "category_id": d.class,
                "bbox": d.bbox,
                "area": d.bbox[2] * d.bbox[3],
                "iscrowd": 0,
                "score": d.score,
            }));
        }
        csv.push_str(&format!(
            "{},{name},{s:.6},{}\n",
            rank + 1,
            f.detections.len()
        ));
        if thumbs.len() < CONTACT_SHEET_MAX
            && let Ok(img) = image::load_from_memory(&bytes)
        {
            thumbs.push(thumbnail(&img.into_rgb8(), &kept));
        }
    }
    let categories: Vec<Value> = opts
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": i, "name": n}))
        .collect();
    let coco = json!({
        "info": {"description": format!("trident annotation package: {} frames by {}", selected.len(), opts.strategy.name())},
        "images": coco_images,
        "annotations": annotations,
        "categories": categories,
    });
    zip.start_file("annotations.json", deflated).map_err(zerr)?;
    zip.write_all(
        serde_json::to_string_pretty(&coco)
            .expect("json")
            .as_bytes(),
    )
    .map_err(werr)?;
    zip.start_file("selection.csv", deflated).map_err(zerr)?;
    zip.write_all(csv.as_bytes()).map_err(werr)?;
    if !thumbs.is_empty() {
        zip.start_file("contact_sheet.png", stored).map_err(zerr)?;
        zip.write_all(&png(&contact_sheet(&thumbs))?)
            .map_err(werr)?;
    }
    let mut per_class_k = vec![0usize; opts.names.len()];
    let mut example_files: Vec<Vec<String>> = vec![Vec::new(); opts.names.len()];
    for (class, crop) in &opts.examples {
        let Some(k) = per_class_k.get_mut(*class) else {
            continue;
        };
        *k += 1;
        let file = format!("examples/{}_{k}.png", slug(&opts.names[*class]));
        zip.start_file(&file, stored).map_err(zerr)?;
        zip.write_all(&png(crop)?).map_err(werr)?;
        example_files[*class].push(file);
    }
    zip.start_file("guidelines.md", deflated).map_err(zerr)?;
    zip.write_all(guidelines(opts, selected.len(), &example_files).as_bytes())
        .map_err(werr)?;
    let file = zip.finish().map_err(zerr)?;
    file.sync_all().map_err(io("cannot write", &opts.out))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    tmp.persist(&opts.out)
        .map_err(|e| Error::Core(trident_core::Error::io("cannot write", &opts.out, e.error)))?;
    Ok(PackageReport {
        frames: selected.len(),
        pre_annotations: annotations.len(),
        bytes,
    })
}

/// Thumbnails on the contact sheet (the first frames by rank).
const CONTACT_SHEET_MAX: usize = 64;
const THUMB_W: u32 = 160;
const SHEET_COLUMNS: usize = 8;

/// Class colours for boxes (cycled).
const COLOURS: [[u8; 3]; 6] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
];

fn thumbnail(img: &RgbImage, boxes: &[&Prediction]) -> RgbImage {
    let scale = f64::from(THUMB_W) / f64::from(img.width().max(1));
    let h = ((f64::from(img.height()) * scale).round() as u32).max(1);
    let mut t = image::imageops::resize(img, THUMB_W, h, image::imageops::FilterType::Triangle);
    for d in boxes {
        let [x, y, w, bh] = d.bbox.map(|v| v * scale);
        draw_rect(&mut t, x, y, w, bh, Rgb(COLOURS[d.class % COLOURS.len()]));
    }
    t
}

fn draw_rect(img: &mut RgbImage, x: f64, y: f64, w: f64, h: f64, c: Rgb<u8>) {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let x0 = (x.round() as i64).clamp(0, iw - 1);
    let y0 = (y.round() as i64).clamp(0, ih - 1);
    let x1 = ((x + w).round() as i64).clamp(0, iw - 1);
    let y1 = ((y + h).round() as i64).clamp(0, ih - 1);
    for xx in x0..=x1 {
        img.put_pixel(xx as u32, y0 as u32, c);
        img.put_pixel(xx as u32, y1 as u32, c);
    }
    for yy in y0..=y1 {
        img.put_pixel(x0 as u32, yy as u32, c);
        img.put_pixel(x1 as u32, yy as u32, c);
    }
}

fn contact_sheet(thumbs: &[RgbImage]) -> RgbImage {
    let cols = SHEET_COLUMNS.min(thumbs.len());
    let rows = thumbs.len().div_ceil(cols);
    let cell_h = thumbs.iter().map(|t| t.height()).max().unwrap_or(1);
    let gap = 4;
    let mut sheet = RgbImage::from_pixel(
        cols as u32 * (THUMB_W + gap) + gap,
        rows as u32 * (cell_h + gap) + gap,
        Rgb([255, 255, 255]),
    );
    for (k, t) in thumbs.iter().enumerate() {
        let (c, r) = ((k % cols) as u32, (k / cols) as u32);
        image::imageops::replace(
            &mut sheet,
            t,
            i64::from(gap + c * (THUMB_W + gap)),
            i64::from(gap + r * (cell_h + gap)),
        );
    }
    sheet
}

fn png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|source| Error::Encode {
            path: PathBuf::from("annotation package PNG"),
            source,
        })?;
    Ok(out.into_inner())
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn guidelines(opts: &PackageOptions, frames: usize, examples: &[Vec<String>]) -> String {
    let mut g = format!(
        "# Annotation guidelines\n\n{frames} frames, chosen by `{}` from the detections of {}: \
         the frames the current models are least sure about.\n\n\
         ## Classes\n\n| id | class | examples |\n|---|---|---|\n",
        opts.strategy.name(),
        opts.model
    );
    for (i, n) in opts.names.iter().enumerate() {
        let ex: Vec<String> = examples[i].iter().map(|f| format!("![{n}]({f})")).collect();
        g.push_str(&format!("| {i} | {n} | {} |\n", ex.join(" ")));
    }
    g.push_str(&format!(
        "\n## What to draw\n\n\
         - One tight axis-aligned box around every visible animal of the classes above, \
           including partly hidden ones (more than about a quarter visible) and ones cut by the \
           frame's edge.\n\
         - Nothing for animals of other species, debris, shadows or reflections: an empty frame \
           is a useful answer.\n\
         - `annotations.json` holds the models' suggestions (score ≥ {:.2}, with a `score` \
           field): correct them — move, resize, relabel, delete, add what they missed. They are \
           suggestions, not answers.\n\n\
         ## What to return\n\n\
         COCO JSON with the same `images` (`file_name` as given) and `categories` (same ids and \
         names); boxes as `[x, y, width, height]` in pixels. It comes back in with\n\n\
         ```\ntrident data import --coco annotations.json --images images/ --data dataset.yaml --out imported/\n```\n\n\
         `contact_sheet.png` shows the first frames with the suggestions drawn; `selection.csv` \
         lists every frame with its score.\n",
        opts.pre_annotation_conf
    ));
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: usize, score: f64, x: f64) -> Prediction {
        Prediction {
            image: "f".into(),
            class,
            score,
            bbox: [x, 10.0, 20.0, 20.0],
        }
    }

    fn frame(name: &str, detections: Vec<Prediction>, per_model: Vec<Vec<Prediction>>) -> Frame {
        Frame {
            image: PathBuf::from(name),
            width: 100,
            height: 100,
            detections,
            per_model,
        }
    }

    #[test]
    fn uncertainty_counts_the_band_only_and_peaks_at_one_half() {
        let band = Strategy::Uncertainty { lo: 0.3, hi: 0.7 };
        let f = |s: &[f64]| {
            score(
                &frame("a", s.iter().map(|&s| det(0, s, 0.0)).collect(), vec![]),
                band,
            )
        };
        assert_eq!(f(&[0.9, 0.1, 0.29, 0.71]), 0.0);
        assert!((f(&[0.5]) - 1.0).abs() < 1e-12);
        assert!((f(&[0.3]) - 0.6).abs() < 1e-12);
        assert!(f(&[0.5, 0.5]) > f(&[0.5]));
    }

    #[test]
    fn entropy_is_one_bit_at_one_half_and_nothing_when_sure() {
        let f = |s: f64| score(&frame("a", vec![det(0, s, 0.0)], vec![]), Strategy::Entropy);
        assert!((f(0.5) - 1.0).abs() < 1e-9);
        assert!(f(0.999_999) < 1e-4);
        assert!(f(0.2) > f(0.05));
    }

    #[test]
    fn disagreement_is_zero_when_models_agree_and_one_when_they_share_nothing() {
        let a = vec![det(0, 0.9, 0.0), det(1, 0.8, 50.0)];
        assert_eq!(disagreement(&[a.clone(), a.clone(), a.clone()]), 0.0);
        assert_eq!(disagreement(&[vec![], vec![]]), 0.0);
        // Same place, another class; or another place: no match.
        assert_eq!(
            disagreement(&[vec![det(0, 0.9, 0.0)], vec![det(1, 0.9, 0.0)]]),
            1.0
        );
        assert_eq!(
            disagreement(&[vec![det(0, 0.9, 0.0)], vec![det(0, 0.9, 60.0)]]),
            1.0
        );
        // One of two boxes seen by the second model: F1 2/3.
        let half = disagreement(&[a.clone(), vec![det(0, 0.5, 1.0)]]);
        assert!((half - (1.0 - 2.0 / 3.0)).abs() < 1e-12, "{half}");
    }

    #[test]
    fn select_ranks_leaves_out_the_certain_and_breaks_ties_by_name() {
        let s = Strategy::Uncertainty { lo: 0.3, hi: 0.7 };
        let frames = vec![
            frame("c.jpg", vec![det(0, 0.5, 0.0)], vec![]),
            frame("sure.jpg", vec![det(0, 0.95, 0.0)], vec![]),
            frame("a.jpg", vec![det(0, 0.5, 0.0)], vec![]),
            frame("b.jpg", vec![det(0, 0.5, 0.0), det(0, 0.6, 40.0)], vec![]),
        ];
        let picked: Vec<usize> = select(&frames, s, 10).iter().map(|p| p.0).collect();
        assert_eq!(picked, vec![3, 2, 0]);
        assert_eq!(select(&frames, s, 2).len(), 2);
    }
}
