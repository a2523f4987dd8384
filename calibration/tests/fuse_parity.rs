//! `trident fuse` agrees with `ensemble-boxes` 1.0.9, the package its users fuse with: random
//! three-model prediction files over images of different pixel sizes (overlapping clusters with
//! jitter, several classes with some class confusion, duplicates, singletons, zero-area boxes,
//! images missing from some models, files interleaving their images), fused by
//! [`fuse_files`] in pixels and by the package on the same boxes normalised by each image's width
//! and height: every `conf_type` of WBF and weighted NMS, with unequal weights. Boxes (normalised),
//! scores and labels must agree within 1e-5.
//!
//! Ties: the package orders equal sort keys with an unstable quicksort, so any tie between
//! different boxes of one class in one image is nudged apart (as `edge-runtime/tests/
//! fusion_parity.rs` does): a failure is a real disagreement. Scores are `f32` values, as fusion
//! takes them. Without the venv (`cargo xtask setup`) the test fails; it never skips.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::PathBuf;

use trident_calibration::fuse::{fuse_files, fuse_predictions};
use trident_core::prediction::{Prediction, save_predictions};
use trident_infer::ensemble::fusion::{ConfType, Fusion, NmsFusionOptions, WbfOptions};

const TOL: f64 = 1e-5;
const MODELS: usize = 3;
const CLASSES: usize = 4;
const SIZES: [(f64, f64); 5] = [
    (640.0, 480.0),
    (1920.0, 1080.0),
    (300.0, 700.0),
    (1000.0, 1000.0),
    (417.0, 233.0),
];

/// xorshift64*: enough randomness for test data, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

struct Image {
    stem: String,
    size: (f64, f64),
    /// Per model, its predictions of this image.
    per_model: Vec<Vec<Prediction>>,
}

/// A pixel box `[x, y, w, h]` inside a `w`×`h` image from normalised corners.
fn pixel_box(b: [f64; 4], (w, h): (f64, f64)) -> [f64; 4] {
    let c = |v: f64| v.clamp(0.0, 1.0);
    let (x1, y1, x2, y2) = (c(b[0]) * w, c(b[1]) * h, c(b[2]) * w, c(b[3]) * h);
    [x1, y1, x2 - x1, y2 - y1]
}

fn image(rng: &mut Rng, n: usize) -> Image {
    let size = SIZES[n % SIZES.len()];
    let stem = format!("img_{n:03}");
    let mut per_model: Vec<Vec<Prediction>> = vec![Vec::new(); MODELS];
    let mut push = |t: usize, class: usize, score: f32, b: [f64; 4]| {
        let (image, bbox, score) = (stem.clone(), pixel_box(b, size), f64::from(score));
        per_model[t].push(Prediction {
            image,
            class,
            score,
            bbox,
        });
    };
    for _ in 0..3 + rng.below(8) {
        let class = rng.below(CLASSES);
        let (cx, cy) = (rng.range(0.1, 0.9), rng.range(0.1, 0.9));
        let (w, h) = (rng.range(0.04, 0.3), rng.range(0.04, 0.3));
        let base = rng.range(0.05, 1.0);
        for t in 0..MODELS {
            let copies = [0, 1, 1, 1, 1, 2, 2, 3][rng.below(8)];
            for _ in 0..copies {
                let j = |rng: &mut Rng, s: f64| rng.range(-0.08, 0.08) * s;
                let (x, y) = (cx + j(rng, w), cy + j(rng, h));
                let (bw, bh) = (w * rng.range(0.85, 1.15), h * rng.range(0.85, 1.15));
                let b = [x - bw / 2.0, y - bh / 2.0, x + bw / 2.0, y + bh / 2.0];
                let class = if rng.chance(0.08) {
                    rng.below(CLASSES)
                } else {
                    class
                };
                let score = (base + rng.range(-0.2, 0.2)).clamp(0.01, 0.999) as f32;
                push(t, class, score, b);
            }
        }
    }
    for _ in 0..1 + rng.below(3) {
        // Singletons, now and then a zero-area box.
        let (x, y, s) = (
            rng.range(0.0, 0.9),
            rng.range(0.0, 0.9),
            rng.range(0.02, 0.1),
        );
        let x2 = if rng.chance(0.15) { x } else { x + s };
        let class = rng.below(CLASSES);
        push(
            rng.below(MODELS),
            class,
            rng.unit() as f32,
            [x, y, x2, y + s],
        );
    }
    // An exact duplicate within a model, and the same box reported for another class.
    let t = rng.below(MODELS);
    if !per_model[t].is_empty() {
        let d = per_model[t][rng.below(per_model[t].len())].clone();
        let other = Prediction {
            class: (d.class + 1) % CLASSES,
            ..d.clone()
        };
        per_model[t].extend([d, other]);
    }
    Image {
        stem,
        size,
        per_model,
    }
}

/// The sort key fusion orders one model's detection by.
fn key(fusion: &Fusion, t: usize, score: f64) -> f64 {
    match fusion {
        Fusion::Wbf(o) => score * o.weights.as_ref().map_or(1.0, |w| w[t]),
        Fusion::Nms(o) => o.weights.as_ref().map_or(score, |w| {
            let total: f64 = w.iter().sum();
            score * w[t] / total
        }),
    }
}

/// Nudges apart equal keys of different boxes of one class in one image, for every fusion.
fn untie(images: &mut [Image], fusions: &[Fusion]) {
    for im in images {
        loop {
            let all: Vec<(usize, usize)> = (0..MODELS)
                .flat_map(|t| (0..im.per_model[t].len()).map(move |i| (t, i)))
                .collect();
            let clash = all.iter().enumerate().find_map(|(n, &(t, i))| {
                let a = &im.per_model[t][i];
                all[n + 1..].iter().copied().find(|&(u, j)| {
                    let b = &im.per_model[u][j];
                    let same = |f: &Fusion| key(f, t, a.score) == key(f, u, b.score);
                    a.class == b.class && a.bbox != b.bbox && fusions.iter().any(same)
                })
            });
            match clash {
                Some((u, j)) => {
                    let s = &mut im.per_model[u][j].score;
                    *s = f64::from(*s as f32 * 0.999);
                }
                None => break,
            }
        }
    }
}

fn fusions() -> Vec<(String, Fusion)> {
    let settings = [
        (Some(vec![2.0, 1.0, 1.0]), 0.55, 0.0),
        (Some(vec![0.5, 1.0, 3.0]), 0.4, 0.1),
        (None, 0.7, 0.25),
    ];
    let mut out = Vec::new();
    for (weights, iou_thr, skip_box_thr) in settings {
        for conf_type in ConfType::ALL {
            let name = format!("wbf {} weights {weights:?}", conf_type.as_str());
            let o = WbfOptions {
                iou_thr,
                skip_box_thr,
                weights: weights.clone(),
                conf_type,
                clip_unit: false,
            };
            out.push((name, Fusion::Wbf(o)));
        }
        let name = format!("nms weights {weights:?}");
        let o = NmsFusionOptions {
            iou_thr: iou_thr - 0.05,
            weights,
            clip_unit: false,
        };
        out.push((name, Fusion::Nms(o)));
    }
    out
}

fn json_list<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> String) -> String {
    let items: Vec<String> = items.into_iter().map(f).collect();
    format!("[{}]", items.join(","))
}

/// One image under one fusion, as `tests/python/wbf_reference.py` reads a case: boxes
/// normalised by the image's size.
fn case_json(im: &Image, fusion: &Fusion) -> String {
    let (w, h) = im.size;
    let boxes = json_list(&im.per_model, |m| {
        json_list(m, |p| {
            let [x, y, bw, bh] = p.bbox;
            format!("[{},{},{},{}]", x / w, y / h, (x + bw) / w, (y + bh) / h)
        })
    });
    let scores = json_list(&im.per_model, |m| json_list(m, |p| p.score.to_string()));
    let labels = json_list(&im.per_model, |m| json_list(m, |p| p.class.to_string()));
    let weights = |w: &Option<Vec<f64>>| {
        w.as_ref()
            .map_or("null".into(), |w| json_list(w, |x| x.to_string()))
    };
    let (method, conf_type, iou, skip, weights) = match fusion {
        Fusion::Wbf(o) => (
            "wbf",
            o.conf_type.as_str(),
            o.iou_thr,
            o.skip_box_thr,
            weights(&o.weights),
        ),
        Fusion::Nms(o) => ("nms", "avg", o.iou_thr, 0.0, weights(&o.weights)),
    };
    format!(
        r#"{{"method":"{method}","conf_type":"{conf_type}","iou_thr":{iou},"skip_box_thr":{skip},"weights":{weights},"boxes":{boxes},"scores":{scores},"labels":{labels}}}"#
    )
}

/// (label, score, normalised xyxy box), ordered by label, descending score, then corners.
type Row = (usize, f64, [f64; 4]);

fn canonical(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| {
        let s = |r: &Row| r.1 as f32;
        let corners = (0..4).fold(Ordering::Equal, |o, k| o.then(a.2[k].total_cmp(&b.2[k])));
        a.0.cmp(&b.0).then(s(b).total_cmp(&s(a))).then(corners)
    });
    rows
}

/// Writes each model's predictions to a file, images interleaved differently in each.
fn write_files(images: &[Image], dir: &std::path::Path) -> Vec<PathBuf> {
    (0..MODELS)
        .map(|t| {
            let mut preds: Vec<Prediction> = images
                .iter()
                .flat_map(|im| im.per_model[t].iter().cloned())
                .collect();
            match t {
                0 => {}
                1 => preds.reverse(),
                _ => preds.sort_by(|a, b| b.score.total_cmp(&a.score)), // stable: ties keep order
            }
            let path = dir.join(format!("model{t}.json"));
            save_predictions(&path, &preds).unwrap();
            path
        })
        .collect()
}

#[test]
fn fused_files_match_ensemble_boxes_for_every_conf_type_and_nms() {
    let fusions = fusions();
    let mut rng = Rng(0x5eed_f00d_cafe_d00d);
    let mut images: Vec<Image> = (0..14).map(|n| image(&mut rng, n)).collect();
    // An image that one model missed entirely, and one that only model 3 saw.
    images[3].per_model[1].clear();
    images[8].per_model[0].clear();
    images[8].per_model[1].clear();
    let plain: Vec<Fusion> = fusions.iter().map(|f| f.1.clone()).collect();
    untie(&mut images, &plain);

    let dir = tempfile::tempdir().unwrap();
    let files = write_files(&images, dir.path());
    let cases = fusions
        .iter()
        .flat_map(|(_, f)| images.iter().map(move |im| case_json(im, f)));
    let input = dir.path().join("cases.json");
    std::fs::write(
        &input,
        format!(r#"{{"cases":{}}}"#, json_list(cases, |c| c)),
    )
    .unwrap();
    let reference = trident_e2e::run_reference("wbf_reference.py", &[input.as_os_str()]);
    assert_eq!(
        reference["version"].as_str(),
        Some("1.0.9"),
        "fusion reproduces ensemble-boxes 1.0.9; the venv has another version"
    );

    let per_model: Vec<Vec<Prediction>> = (0..MODELS)
        .map(|t| {
            images
                .iter()
                .flat_map(|im| im.per_model[t].clone())
                .collect()
        })
        .collect();
    let (mut rows_total, mut max_box, mut max_score) = (0, 0f64, 0f64);
    for (f, (name, fusion)) in fusions.iter().enumerate() {
        let out = fuse_files(&files, fusion).unwrap();
        assert_eq!(
            out.boxes_in,
            per_model.iter().map(Vec::len).collect::<Vec<_>>()
        );
        // The in-memory path fuses the same (files interleave images, so compare per image;
        // serde_json may read a number back an ulp off).
        let mut mem = fuse_predictions(&per_model, fusion).unwrap();
        let mut from_files = out.predictions.clone();
        for v in [&mut mem, &mut from_files] {
            v.sort_by(|a, b| a.image.cmp(&b.image));
        }
        assert_eq!(mem.len(), from_files.len(), "{name}");
        for (a, b) in mem.iter().zip(&from_files) {
            let near = |x: f64, y: f64| (x - y).abs() <= 1e-9 * (1.0 + x.abs());
            let same = a.image == b.image && a.class == b.class && near(a.score, b.score);
            let ok = same && (0..4).all(|k| near(a.bbox[k], b.bbox[k]));
            assert!(ok, "{name}: fuse_predictions {a:?} vs fuse_files {b:?}");
        }

        let mut by_image: BTreeMap<&str, Vec<Row>> = BTreeMap::new();
        for p in &out.predictions {
            let im = images.iter().find(|im| im.stem == p.image).unwrap();
            let (w, h) = im.size;
            let [x, y, bw, bh] = p.bbox;
            let b = [x / w, y / h, (x + bw) / w, (y + bh) / h];
            by_image
                .entry(&im.stem)
                .or_default()
                .push((p.class, p.score, b));
        }
        let fused_images = images
            .iter()
            .filter(|im| im.per_model.iter().any(|m| !m.is_empty()));
        assert_eq!(out.images, fused_images.count(), "{name}");
        for (i, im) in images.iter().enumerate() {
            let r = &reference["results"][f * images.len() + i];
            let num = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
            let theirs: Vec<Row> = (0..r["scores"].as_array().unwrap().len())
                .map(|k| {
                    let b = &r["boxes"][k];
                    let label = r["labels"][k].as_u64().unwrap() as usize;
                    (
                        label,
                        num(&r["scores"][k]),
                        [0, 1, 2, 3].map(|c| num(&b[c])),
                    )
                })
                .collect();
            let theirs = canonical(theirs);
            let mine = canonical(by_image.remove(im.stem.as_str()).unwrap_or_default());
            let detail = || {
                format!(
                    "{name}, {}\n  ours:   {mine:?}\n  theirs: {theirs:?}",
                    im.stem
                )
            };
            assert_eq!(mine.len(), theirs.len(), "count differs: {}", detail());
            for (a, b) in mine.iter().zip(&theirs) {
                let db = (0..4).map(|k| (a.2[k] - b.2[k]).abs()).fold(0.0, f64::max);
                let ds = (a.1 - b.1).abs();
                let ok = a.0 == b.0 && db <= TOL && ds <= TOL;
                assert!(ok, "{a:?} vs {b:?}: {}", detail());
                (max_box, max_score) = (max_box.max(db), max_score.max(ds));
                rows_total += 1;
            }
        }
        assert!(
            by_image.is_empty(),
            "{name}: fused unknown images {:?}",
            by_image.keys()
        );
    }
    eprintln!(
        "{} fusions × {} images: {rows_total} fused boxes, max |Δbox| {max_box:e} (normalised), \
         max |Δscore| {max_score:e}",
        fusions.len(),
        images.len()
    );
    assert!(
        rows_total > 1000,
        "too few boxes to mean anything: {rows_total}"
    );
}
