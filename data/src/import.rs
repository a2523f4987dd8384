//! `trident data import --coco`: annotations returned by a labelling service (COCO JSON, as CVAT,
//! Label Studio and most services export it) → the Ultralytics layout trident trains on.
//!
//! The output is a flat pool — `images/`, `labels/` (one YOLO line per box, normalised centre and
//! size), `classes.txt` — which a dataset.yaml can list as a `train` source next to its own
//! folder, or which `trident data split` splits. Class ids follow `names` (a dataset's classes,
//! so imported labels mean what the dataset's mean) or, without it, the categories sorted by id.
//! Every problem is collected and reported with the annotation or image it is in; nothing is
//! written unless the whole file is sound.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::Deserialize;
use trident_core::fsutil::StagingDir;

use crate::error::{Error, Result};
use crate::split::FileMode;

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub coco: PathBuf,
    /// The folder `file_name`s are relative to.
    pub images: PathBuf,
    pub out: PathBuf,
    /// Class names in id order (a dataset's); categories must be among them.
    pub names: Option<Vec<String>>,
    pub force: bool,
    pub mode: FileMode,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    pub names: Vec<String>,
    pub images: usize,
    pub boxes: usize,
    /// Images without annotations (kept as background: an empty label file).
    pub background: usize,
    /// `iscrowd` annotations, left out as Ultralytics' converter does.
    pub crowd_skipped: usize,
    /// Boxes per class.
    pub per_class: Vec<usize>,
}

#[derive(Deserialize)]
struct Coco {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    #[serde(default)]
    id: Option<u64>,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

/// How far (pixels) a box may overshoot the image before it is an error; within it, it is
/// clipped (annotation tools round outward).
const EDGE_TOLERANCE: f64 = 1.0;

pub fn import_coco(opts: &ImportOptions, progress: &ProgressBar) -> Result<ImportReport> {
    let where_ = opts.coco.display().to_string();
    let text = std::fs::read_to_string(&opts.coco)
        .map_err(|e| trident_core::Error::io("cannot read", &opts.coco, e))?;
    let coco: Coco = serde_json::from_str(&text).map_err(|e| {
        Error::Problems(vec![format!(
            "{where_}:{}:{}: not a COCO annotation file: {e} (expected `images`, `annotations` and `categories`)",
            e.line(),
            e.column()
        )])
    })?;
    let mut problems = Vec::new();

    // Categories → class ids.
    let mut sorted: Vec<&CocoCategory> = coco.categories.iter().collect();
    sorted.sort_by_key(|c| c.id);
    let names: Vec<String> = match &opts.names {
        Some(n) => n.clone(),
        None => sorted.iter().map(|c| c.name.clone()).collect(),
    };
    let mut class_of: HashMap<u64, usize> = HashMap::new();
    for c in &sorted {
        match names.iter().position(|n| *n == c.name) {
            Some(i) => {
                if class_of.insert(c.id, i).is_some() {
                    problems.push(format!("{where_}: categories: id {} appears twice", c.id));
                }
            }
            None => problems.push(format!(
                "{where_}: category {} `{}` is not a class of the dataset (expected one of: {})",
                c.id,
                c.name,
                names.join(", ")
            )),
        }
    }

    // Images: unique ids and names, files present with the stated size.
    let mut image_index: HashMap<u64, usize> = HashMap::new();
    let mut stems: HashMap<String, u64> = HashMap::new();
    progress.set_length(coco.images.len() as u64);
    for (i, im) in coco.images.iter().enumerate() {
        progress.inc(1);
        let at = format!("{where_}: image {} `{}`", im.id, im.file_name);
        if image_index.insert(im.id, i).is_some() {
            problems.push(format!("{at}: id {} appears twice", im.id));
            continue;
        }
        let rel = Path::new(&im.file_name);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            problems.push(format!(
                "{at}: file_name must be a path inside --images ({})",
                opts.images.display()
            ));
            continue;
        }
        let stem = output_stem(rel);
        if let Some(other) = stems.insert(stem.clone(), im.id) {
            problems.push(format!(
                "{at}: its output name `{stem}` is also image {other}'s (file names must stay unique once folders are flattened)"
            ));
        }
        let file = opts.images.join(rel);
        match image::image_dimensions(&file) {
            Ok((w, h)) if (w, h) != (im.width, im.height) => problems.push(format!(
                "{at}: the file is {w}×{h}, the annotation file says {}×{}",
                im.width, im.height
            )),
            Ok(_) => {}
            Err(e) if !file.exists() => {
                let _ = e;
                problems.push(format!("{at}: missing: {}", file.display()))
            }
            Err(e) => problems.push(format!("{at}: cannot read {}: {e}", file.display())),
        }
    }

    // Boxes, per image.
    let mut labels: BTreeMap<usize, String> = BTreeMap::new();
    let mut per_class = vec![0usize; names.len()];
    let (mut boxes, mut crowd_skipped) = (0, 0);
    for (n, a) in coco.annotations.iter().enumerate() {
        let at = match a.id {
            Some(id) => format!("{where_}: annotation {id}"),
            None => format!("{where_}: annotations[{n}]"),
        };
        let Some(&i) = image_index.get(&a.image_id) else {
            problems.push(format!("{at}: image_id {} is not in `images`", a.image_id));
            continue;
        };
        let Some(&class) = class_of.get(&a.category_id) else {
            if !sorted.iter().any(|c| c.id == a.category_id) {
                problems.push(format!(
                    "{at}: category_id {} is not in `categories`",
                    a.category_id
                ));
            }
            continue;
        };
        if a.iscrowd != 0 {
            crowd_skipped += 1;
            continue;
        }
        let im = &coco.images[i];
        let (w, h) = (f64::from(im.width), f64::from(im.height));
        let [x, y, bw, bh] = a.bbox;
        if !a.bbox.iter().all(|v| v.is_finite()) || bw <= 0.0 || bh <= 0.0 {
            problems.push(format!(
                "{at}: bbox {:?} is not [x, y, width, height] with a positive width and height",
                a.bbox
            ));
            continue;
        }
        let t = EDGE_TOLERANCE;
        if x < -t || y < -t || x + bw > w + t || y + bh > h + t {
            problems.push(format!(
                "{at}: bbox {:?} lies outside image {} ({}×{})",
                a.bbox, im.id, im.width, im.height
            ));
            continue;
        }
        let (x0, y0) = (x.max(0.0), y.max(0.0));
        let (x1, y1) = ((x + bw).min(w), (y + bh).min(h));
        let line = labels.entry(i).or_default();
        let _ = writeln!(
            line,
            "{class} {:.6} {:.6} {:.6} {:.6}",
            (x0 + x1) / 2.0 / w,
            (y0 + y1) / 2.0 / h,
            (x1 - x0) / w,
            (y1 - y0) / h
        );
        per_class[class] += 1;
        boxes += 1;
    }
    if !problems.is_empty() {
        return Err(Error::Problems(problems));
    }

    let staging = StagingDir::new(&opts.out, opts.force)?;
    let root = staging.path();
    let (img_dir, lbl_dir) = (root.join("images"), root.join("labels"));
    for d in [&img_dir, &lbl_dir] {
        std::fs::create_dir_all(d).map_err(|e| trident_core::Error::io("cannot create", d, e))?;
    }
    let mut warned = false;
    let mut background = 0;
    for (i, im) in coco.images.iter().enumerate() {
        let rel = Path::new(&im.file_name);
        let stem = output_stem(rel);
        let ext = rel
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_else(|| "jpg".into());
        crate::split::place_file(
            &opts.images.join(rel),
            &img_dir.join(format!("{stem}.{ext}")),
            opts.mode,
            &mut warned,
        )?;
        let text = labels.remove(&i).unwrap_or_default();
        if text.is_empty() {
            background += 1;
        }
        let path = lbl_dir.join(format!("{stem}.txt"));
        std::fs::write(&path, text)
            .map_err(|e| trident_core::Error::io("cannot write", &path, e))?;
    }
    let classes = root.join("classes.txt");
    std::fs::write(&classes, names.join("\n") + "\n")
        .map_err(|e| trident_core::Error::io("cannot write", &classes, e))?;
    staging.commit()?;
    Ok(ImportReport {
        names,
        images: coco.images.len(),
        boxes,
        background,
        crowd_skipped,
        per_class,
    })
}

/// The flat output name of an image: its path below `--images` with `/` as `__`, no extension.
fn output_stem(rel: &Path) -> String {
    rel.with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("__")
}
