//! Offline fusion speed: `trident fuse` vs `ensemble-boxes` on 3 models × 1,000 images × 100
//! boxes (random overlapping clusters, several classes, unequal weights), WBF (avg) and NMS.
//!
//! `cargo bench -p trident-calibration --bench fuse_speed`. Both sides are timed on the fusion
//! alone, after loading, single-threaded: trident's [`fuse_predictions`] (grouping by image,
//! checking, fusing in pixels, converting back; best of 5) against the package's calls image by
//! image on ready numpy arrays (`tests/python/fuse_speed_reference.py`, best of 2). Prints µs per
//! image for both, the speed-up and whether the target (at least 50×) is met, per method (the
//! package's WBF loops over boxes in Python, its NMS is vectorised numpy), the time of the
//! fusion proper (the edge runtime's, on detections already grouped), then, for information,
//! `fuse_files` end to end (reading and checking the three JSON files).

use std::fmt::Write as _;
use std::time::Instant;

use trident_calibration::fuse::{fuse_files, fuse_predictions};
use trident_core::geometry::BoxXyxy;
use trident_core::postprocess::Detection;
use trident_core::prediction::{Prediction, save_predictions};
use trident_infer::ensemble::fusion::{ConfType, Fusion, NmsFusionOptions, WbfOptions};

const MODELS: usize = 3;
const IMAGES: usize = 1000;
const PER_MODEL: usize = 100;
const OBJECTS: usize = 40;
const CLASSES: usize = 6;
const SIZES: [(f64, f64); 3] = [(1280.0, 720.0), (640.0, 480.0), (1920.0, 1080.0)];
const TARGET: f64 = 50.0;

/// xorshift64*: enough randomness for benchmark data, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Per model, 100 predictions per image: jittered copies of 40 objects, some class confusion.
fn data() -> Vec<Vec<Prediction>> {
    let mut rng = Rng(0xf05e_5eed_0000_0001);
    let mut per_model: Vec<Vec<Prediction>> = (0..MODELS)
        .map(|_| Vec::with_capacity(IMAGES * PER_MODEL))
        .collect();
    for i in 0..IMAGES {
        let (w, h) = SIZES[i % SIZES.len()];
        let objects: Vec<(usize, [f64; 4], f64)> = (0..OBJECTS)
            .map(|_| {
                let (bw, bh) = (rng.range(0.03, 0.3), rng.range(0.03, 0.3));
                let (cx, cy) = (
                    rng.range(bw / 2.0, 1.0 - bw / 2.0),
                    rng.range(bh / 2.0, 1.0 - bh / 2.0),
                );
                (rng.below(CLASSES), [cx, cy, bw, bh], rng.range(0.05, 1.0))
            })
            .collect();
        for preds in &mut per_model {
            for k in 0..PER_MODEL {
                let (class, [cx, cy, bw, bh], base) = objects[(k + rng.below(3)) % OBJECTS];
                let j = |rng: &mut Rng, s: f64| rng.range(-0.08, 0.08) * s;
                let (cx, cy) = (cx + j(&mut rng, bw), cy + j(&mut rng, bh));
                let (bw, bh) = (bw * rng.range(0.85, 1.15), bh * rng.range(0.85, 1.15));
                let x1 = ((cx - bw / 2.0) * w).clamp(0.0, w);
                let y1 = ((cy - bh / 2.0) * h).clamp(0.0, h);
                let x2 = ((cx + bw / 2.0) * w).clamp(0.0, w);
                let y2 = ((cy + bh / 2.0) * h).clamp(0.0, h);
                let class = if rng.below(20) == 0 {
                    rng.below(CLASSES)
                } else {
                    class
                };
                let score = (base * rng.range(0.75, 1.0)) as f32;
                preds.push(Prediction {
                    image: format!("img{i:04}"),
                    class,
                    score: f64::from(score),
                    bbox: [x1, y1, x2 - x1, y2 - y1],
                });
            }
        }
    }
    per_model
}

fn detection(p: &Prediction) -> Detection {
    let [x, y, w, h] = p.bbox;
    let bbox = BoxXyxy::new(x, y, x + w, y + h);
    Detection {
        class: p.class,
        score: p.score as f32,
        bbox,
    }
}

fn runs() -> Vec<(&'static str, Fusion)> {
    let weights = Some(vec![2.0, 1.0, 1.0]);
    let wbf = WbfOptions {
        weights: weights.clone(),
        conf_type: ConfType::Avg,
        clip_unit: false,
        ..Default::default()
    };
    let nms = NmsFusionOptions {
        weights,
        clip_unit: false,
        ..Default::default()
    };
    vec![("wbf avg", Fusion::Wbf(wbf)), ("nms", Fusion::Nms(nms))]
}

/// The data as the Python script reads it: per image, per model, boxes normalised by the size.
fn python_input(per_model: &[Vec<Prediction>], runs: &[(&str, Fusion)]) -> String {
    let mut s = String::from(r#"{"repeat":2,"runs":["#);
    for (n, (name, fusion)) in runs.iter().enumerate() {
        let sep = if n > 0 { "," } else { "" };
        let (method, iou, skip, ct, w) = match fusion {
            Fusion::Wbf(o) => ("wbf", o.iou_thr, o.skip_box_thr, o.conf_type, &o.weights),
            Fusion::Nms(o) => ("nms", o.iou_thr, 0.0, ConfType::Avg, &o.weights),
        };
        let w = w.as_ref().map_or("null".into(), |w| format!("{w:?}"));
        let ct = ct.as_str();
        write!(s, r#"{sep}{{"name":"{name}","method":"{method}","iou_thr":{iou},"skip_box_thr":{skip},"conf_type":"{ct}","weights":{w}}}"#).unwrap();
    }
    s.push_str(r#"],"images":["#);
    for i in 0..IMAGES {
        let (w, h) = SIZES[i % SIZES.len()];
        let models = |f: &dyn Fn(&Prediction) -> String| {
            let m: Vec<String> = per_model
                .iter()
                .map(|preds| {
                    let one = &preds[i * PER_MODEL..(i + 1) * PER_MODEL];
                    format!("[{}]", one.iter().map(f).collect::<Vec<_>>().join(","))
                })
                .collect();
            format!("[{}]", m.join(","))
        };
        let boxes = models(&|p| {
            let [x, y, bw, bh] = p.bbox;
            format!("[{},{},{},{}]", x / w, y / h, (x + bw) / w, (y + bh) / h)
        });
        let scores = models(&|p| p.score.to_string());
        let labels = models(&|p| p.class.to_string());
        let sep = if i > 0 { "," } else { "" };
        write!(
            s,
            r#"{sep}{{"boxes":{boxes},"scores":{scores},"labels":{labels}}}"#
        )
        .unwrap();
    }
    s.push_str("]}");
    s
}

fn main() {
    let per_model = data();
    let runs = runs();
    let boxes: usize = per_model.iter().map(Vec::len).sum();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fuse_speed.json");
    std::fs::write(&input, python_input(&per_model, &runs)).unwrap();
    println!(
        "fuse benchmark: {MODELS} models × {IMAGES} images × {PER_MODEL} boxes = {boxes} boxes, \
         weights 2,1,1 (timing ensemble-boxes, this takes a while)"
    );
    let reference = trident_e2e::run_reference("fuse_speed_reference.py", &[input.as_os_str()]);
    let version = reference["version"].as_str().unwrap_or("?");

    println!(
        "{:<8} {:>14} {:>22} {:>9} {:>18}",
        "method", "trident µs/img", "ensemble-boxes µs/img", "speed-up", "boxes out (t / eb)"
    );
    let grouped: Vec<Vec<Vec<Detection>>> = (0..IMAGES)
        .map(|i| {
            let image = |preds: &Vec<Prediction>| {
                let one = &preds[i * PER_MODEL..(i + 1) * PER_MODEL];
                one.iter().map(detection).collect()
            };
            per_model.iter().map(image).collect()
        })
        .collect();
    let mut verdicts = Vec::new();
    for (n, (name, fusion)) in runs.iter().enumerate() {
        let mut best = f64::INFINITY;
        let mut out = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let fused = fuse_predictions(&per_model, fusion).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
            out = fused; // the last run's output is freed outside the clock
        }
        // The fusion proper, on detections already grouped by image and model.
        let mut core = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for dets in &grouped {
                std::hint::black_box(fusion.fuse(dets).unwrap());
            }
            core = core.min(t.elapsed().as_secs_f64());
        }
        let r = &reference["runs"][n];
        assert_eq!(r["name"].as_str(), Some(*name));
        let theirs = r["seconds"].as_f64().unwrap();
        let their_boxes = r["boxes_out"].as_u64().unwrap();
        let ratio = theirs / best;
        let met = if ratio >= TARGET { "met" } else { "NOT met" };
        verdicts.push(format!("{name} {met} ({ratio:.0}×)"));
        let per = |s: f64| format!("{:.1}", s * 1e6 / IMAGES as f64);
        let counts = format!("{} / {their_boxes}", out.len());
        println!(
            "{name:<8} {:>14} {:>22} {ratio:>8.0}× {counts:>18}   (fusion proper {} µs/img)",
            per(best),
            per(theirs),
            per(core)
        );
        if out.len() as u64 != their_boxes {
            println!("  note: box counts differ (ties in score are ordered differently)");
        }
    }
    println!(
        "ensemble-boxes {version}; both single-threaded, fusion only. Target ≥ {TARGET}×: {}",
        verdicts.join(", ")
    );

    // For information: the command's library path end to end, JSON reading and checks included.
    let files: Vec<_> = (0..MODELS)
        .map(|t| {
            let path = dir.path().join(format!("model{t}.json"));
            save_predictions(&path, &per_model[t]).unwrap();
            path
        })
        .collect();
    let t = Instant::now();
    let out = fuse_files(&files, &runs[0].1).unwrap();
    println!(
        "fuse_files end to end (read and check 3 files, {}): {:.3} s for {} images",
        runs[0].0,
        t.elapsed().as_secs_f64(),
        out.images
    );
}
