//! The ensemble's box fusion agrees with the Python package it reproduces, `ensemble-boxes` 1.0.9
//! (`weighted_boxes_fusion` for each `conf_type`, and `nms` with weights), on random three-model
//! ensembles: overlapping clusters with jitter, duplicate boxes from one model, class confusion,
//! singletons, boxes under `skip_box_thr`, out-of-range and swapped corners, zero-area boxes, an
//! empty model, and ties in score. Plus a chain of same-class boxes on the anchor grid (from the
//! host comparison harness) with exact IoU ties, fused as the runner does, in frame pixels.
//!
//! Ties: the package orders equal scores with numpy's/numba's unstable quicksort, so which of two
//! tied boxes comes first is platform dependent. Ties whose order cannot change the result are
//! kept (identical boxes, different classes, equal fused scores); any other tie is nudged apart,
//! so a failure here is a real disagreement, not a sorting accident. All cases go to Python in one
//! run. Without the venv (`cargo xtask setup`) the test fails; it never skips.
//!
//! Exact IoU ties (a box halfway between two same-sized clusters) go to the first cluster, as
//! `np.argmax`. They stay ties only while the arithmetic is exact: dividing pixel boxes by 640 and
//! 480 rounds and decides them one way or the other, dividing by a power of two does not, so
//! pixel cases reach the package divided by 1024 (as `tests/python/host_reference.py` does).

use std::cmp::Ordering;
use std::time::Instant;

use trident_core::geometry::BoxXyxy;
use trident_core::postprocess::Detection;
use trident_infer::ensemble::fusion::{ConfType, WbfOptions, nms_fusion, weighted_boxes_fusion};

const TOL: f64 = 1e-5;

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

#[derive(Clone, Copy, Debug)]
enum Method {
    Wbf(ConfType),
    Nms,
}

struct Case {
    name: String,
    /// 1 for boxes in `[0, 1]`; else (WBF only) a power of two ≥ the frame: the boxes are frame
    /// pixels, fused unclipped (the runner's setting), and the package gets them divided by this.
    scale: f64,
    method: Method,
    weights: Option<Vec<f64>>,
    iou_thr: f64,
    skip_box_thr: f64,
    per_model: Vec<Vec<Detection>>,
}

fn det(class: usize, score: f32, b: [f64; 4]) -> Detection {
    Detection {
        class,
        score,
        bbox: BoxXyxy::new(b[0], b[1], b[2], b[3]),
    }
}

/// Three models' detections of 4–9 objects near random centres (some past the image edge).
fn ensemble(rng: &mut Rng, weights: Option<&[f64]>, empty_model: bool) -> Vec<Vec<Detection>> {
    let mut per_model: Vec<Vec<Detection>> = vec![Vec::new(); 3];
    for _ in 0..4 + rng.below(6) {
        let class = rng.below(4);
        let (cx, cy) = (rng.range(0.02, 0.98), rng.range(0.02, 0.98));
        let (w, h) = (rng.range(0.04, 0.35), rng.range(0.04, 0.35));
        let base = rng.range(0.05, 1.0);
        for dets in per_model.iter_mut() {
            let copies = if rng.chance(0.15) {
                0
            } else if rng.chance(0.2) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let j = |rng: &mut Rng, s: f64| rng.range(-0.08, 0.08) * s;
                let (x, y) = (cx + j(rng, w), cy + j(rng, h));
                let (bw, bh) = (w * rng.range(0.85, 1.15), h * rng.range(0.85, 1.15));
                let mut b = [x - bw / 2.0, y - bh / 2.0, x + bw / 2.0, y + bh / 2.0];
                if rng.chance(0.04) {
                    b.swap(0, 2);
                }
                let class = if rng.chance(0.08) {
                    rng.below(4)
                } else {
                    class
                };
                let score = (base + rng.range(-0.2, 0.2)).clamp(0.001, 0.999) as f32;
                dets.push(det(class, score, b));
            }
        }
    }
    for _ in 0..1 + rng.below(3) {
        // Singletons, and now and then a zero-area box.
        let (x, y, s) = (
            rng.range(0.0, 0.9),
            rng.range(0.0, 0.9),
            rng.range(0.02, 0.1),
        );
        let x2 = if rng.chance(0.2) { x } else { x + s };
        let t = rng.below(3);
        per_model[t].push(det(rng.below(4), rng.unit() as f32, [x, y, x2, y + s]));
    }
    // Ties: a box reported for a second class with the same score (multi-label output); the same
    // score twice in one model; an identical box from two models with equal weighted scores.
    for _ in 0..2 {
        let t = rng.below(3);
        if !per_model[t].is_empty() {
            let mut d = per_model[t][rng.below(per_model[t].len())];
            d.class = (d.class + 1 + rng.below(3)) % 4;
            per_model[t].push(d);
            let n = per_model[t].len();
            let s = per_model[t][rng.below(n)].score;
            per_model[t][rng.below(n)].score = s;
        }
    }
    let w = |t: usize| weights.map_or(1.0, |w| w[t]);
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2)] {
        let ratio = w(a) / w(b);
        if (ratio == 1.0 || ratio == 2.0) && !per_model[a].is_empty() {
            let mut d = per_model[a][rng.below(per_model[a].len())];
            d.score = d.score.min(0.49);
            let mut twin = d;
            twin.score = d.score * ratio as f32;
            per_model[a].push(d);
            per_model[b].push(twin);
            break;
        }
    }
    if empty_model {
        per_model[2].clear();
    }
    per_model
}

/// Separates equal sort keys of one class whose order would change the package's result.
fn untie(case: &mut Case) {
    let total: f64 = case.weights.as_ref().map_or(3.0, |w| w.iter().sum());
    let w = |t: usize| case.weights.as_ref().map_or(1.0, |w| w[t]);
    let key = |t: usize, d: &Detection| match (case.method, &case.weights) {
        (Method::Wbf(_), _) => f64::from(d.score) * w(t),
        (Method::Nms, Some(_)) => f64::from(d.score) * w(t) / total,
        (Method::Nms, None) => f64::from(d.score),
    };
    loop {
        let all: Vec<(usize, usize)> = (0..case.per_model.len())
            .flat_map(|t| (0..case.per_model[t].len()).map(move |i| (t, i)))
            .collect();
        let clash = all.iter().enumerate().find_map(|(n, &(t, i))| {
            let a = &case.per_model[t][i];
            all[n + 1..].iter().copied().find(|&(u, j)| {
                let b = &case.per_model[u][j];
                a.class == b.class && key(t, a) == key(u, b) && a.bbox != b.bbox
            })
        });
        match clash {
            Some((u, j)) => case.per_model[u][j].score -= 7e-4,
            None => break,
        }
    }
}

fn cases() -> Vec<Case> {
    let methods = [
        Method::Wbf(ConfType::Avg),
        Method::Wbf(ConfType::Max),
        Method::Wbf(ConfType::BoxAndModelAvg),
        Method::Wbf(ConfType::AbsentModelAwareAvg),
        Method::Nms,
    ];
    // Weights below 1 too, so that thresholding the weighted score instead of the raw one shows.
    let weight_sets = [
        Some(vec![2.0, 1.0, 1.0]),
        Some(vec![1.0, 2.0, 3.0]),
        Some(vec![0.5, 1.0, 2.0]),
        None,
    ];
    let mut out = Vec::new();
    for seed in 1..=8u64 {
        let weights = weight_sets[(seed % 4) as usize].clone();
        for extra in 0..2u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed * 1000 + extra));
            let per_model = ensemble(&mut rng, weights.as_deref(), seed == 5 && extra == 1);
            for method in methods {
                let mut case = Case {
                    name: format!("seed {seed}.{extra} {method:?} weights {weights:?}"),
                    scale: 1.0,
                    method,
                    weights: weights.clone(),
                    iou_thr: [0.55, 0.4, 0.7][((seed + extra) % 3) as usize],
                    skip_box_thr: [0.0, 0.1, 0.25][(seed % 3) as usize],
                    per_model: per_model.clone(),
                };
                untie(&mut case);
                out.push(case);
            }
        }
    }
    out.extend(grid_chain());
    // Nothing detected by anyone (WBF only: the package's nms cannot concatenate nothing).
    out.push(Case {
        name: "no detections".into(),
        scale: 1.0,
        method: Method::Wbf(ConfType::Avg),
        weights: None,
        iou_thr: 0.55,
        skip_box_thr: 0.0,
        per_model: vec![Vec::new(); 3],
    });
    out
}

/// One model's boxes of one class along the bottom of a 640×480 frame, on the 16 px anchor grid
/// with nearly equal scores (frame 34 of the host comparison harness, random weights). In order
/// of score, [128, 368, 368, 480] overlaps the clusters [192, 368, 432, 480] and
/// [64, 368, 304, 480] by exactly 11/19 each and joins the first. As frame pixels (the runner)
/// and divided by 1024 the tie is exact; divided by 640 and 480 the rounding gives the box to the
/// second cluster (0.5789473684210525 vs ...528), the later boxes follow, and 4 of the 5 fused
/// boxes move (by up to 56 px).
fn grid_chain() -> Vec<Case> {
    let row = [
        (0.004_286_706_4, 0.0, 160.0),
        (0.003_859_698_8, 192.0, 432.0),
        (0.003_814_28, 64.0, 304.0),
        (0.003_813_535, 128.0, 368.0),
        (0.003_805_339_3, 16.0, 256.0),
        (0.003_804_743_3, 400.0, 640.0),
        (0.003_800_332_5, 304.0, 544.0),
        (0.003_786_057_2, 0.0, 208.0),
        (0.003_784_12, 480.0, 640.0),
        (0.003_751_635_6, 240.0, 480.0),
    ];
    let pixels: Vec<Detection> = row
        .iter()
        .map(|&(s, x1, x2)| det(2, s, [x1, 368.0, x2, 480.0]))
        .collect();
    let normalised = pixels
        .iter()
        .map(|d| {
            let b = d.bbox;
            det(
                2,
                d.score,
                [b.x1 / 640.0, b.y1 / 480.0, b.x2 / 640.0, b.y2 / 480.0],
            )
        })
        .collect();
    let case = |name: &str, scale, dets| Case {
        name: format!("anchor-grid chain with IoU ties, {name}"),
        scale,
        method: Method::Wbf(ConfType::Avg),
        weights: None,
        iou_thr: 0.55,
        skip_box_thr: 0.0,
        per_model: vec![Vec::new(), Vec::new(), dets],
    };
    vec![
        case("frame pixels", 1024.0, pixels),
        case("divided by the frame size", 1.0, normalised),
    ]
}

fn json_list<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> String) -> String {
    format!(
        "[{}]",
        items.into_iter().map(f).collect::<Vec<_>>().join(",")
    )
}

/// A case as the script reads it; Rust's `{}` of an f64 is its shortest round-trip decimal.
fn case_json(c: &Case) -> String {
    let boxes = json_list(&c.per_model, |m| {
        json_list(m, |d| {
            let (b, s) = (d.bbox, c.scale);
            format!("[{},{},{},{}]", b.x1 / s, b.y1 / s, b.x2 / s, b.y2 / s)
        })
    });
    let scores = json_list(&c.per_model, |m| {
        json_list(m, |d| f64::from(d.score).to_string())
    });
    let labels = json_list(&c.per_model, |m| json_list(m, |d| d.class.to_string()));
    let weights = c
        .weights
        .as_ref()
        .map_or("null".into(), |w| json_list(w, |x| x.to_string()));
    let (method, conf_type) = match c.method {
        Method::Wbf(ct) => ("wbf", ct.as_str()),
        Method::Nms => ("nms", "avg"),
    };
    format!(
        r#"{{"method":"{method}","conf_type":"{conf_type}","iou_thr":{},"skip_box_thr":{},"weights":{weights},"boxes":{boxes},"scores":{scores},"labels":{labels}}}"#,
        c.iou_thr, c.skip_box_thr
    )
}

/// (label, score, box), score as f64; ordered by label, score descending, then corners.
type Row = (usize, f64, [f64; 4]);

fn canonical(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        let s = |r: &Row| r.1 as f32;
        a.0.cmp(&b.0)
            .then(s(b).total_cmp(&s(a)))
            .then_with(|| (0..4).fold(Ordering::Equal, |o, k| o.then(a.2[k].total_cmp(&b.2[k]))))
    });
}

#[test]
fn fusion_matches_ensemble_boxes() {
    let cases = cases();
    assert!(cases.len() >= 20);
    let dir = std::env::temp_dir().join(format!("trident-fusion-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.json");
    let body = json_list(&cases, case_json);
    std::fs::write(&input, format!(r#"{{"cases":{body}}}"#)).unwrap();

    let t = Instant::now();
    let reference = trident_e2e::run_reference("wbf_reference.py", &[input.as_os_str()]);
    let python_s = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        reference["version"].as_str(),
        Some("1.0.9"),
        "fusion.rs reproduces ensemble-boxes 1.0.9; the venv has another version"
    );

    let t = Instant::now();
    let ours: Vec<Vec<Detection>> = cases
        .iter()
        .map(|c| match c.method {
            Method::Wbf(conf_type) => {
                let opts = WbfOptions {
                    iou_thr: c.iou_thr,
                    skip_box_thr: c.skip_box_thr,
                    weights: c.weights.clone(),
                    conf_type,
                    clip_unit: c.scale == 1.0,
                };
                weighted_boxes_fusion(&c.per_model, &opts)
            }
            Method::Nms => nms_fusion(&c.per_model, c.weights.as_deref(), c.iou_thr),
        })
        .collect::<Result<_, _>>()
        .unwrap();
    let rust_us = t.elapsed().as_secs_f64() * 1e6 / cases.len() as f64;

    let (mut max_box, mut max_score, mut rows_total, mut exact) = (0f64, 0f64, 0, 0);
    for (n, (case, ours)) in cases.iter().zip(&ours).enumerate() {
        let r = &reference["results"][n];
        let mut theirs: Vec<Row> = (0..r["scores"].as_array().unwrap().len())
            .map(|i| {
                let b = &r["boxes"][i];
                let label = r["labels"][i].as_u64().unwrap() as usize;
                let num = |v: Option<&str>| v.and_then(|v| v.parse::<f64>().ok()).unwrap();
                let score = num(r["scores"][i].as_str());
                (label, score, [0, 1, 2, 3].map(|k| num(b[k].as_str())))
            })
            .collect();
        let mut mine: Vec<Row> = ours
            .iter()
            .map(|d| {
                let (b, s) = (d.bbox, case.scale);
                (
                    d.class,
                    f64::from(d.score),
                    [b.x1, b.y1, b.x2, b.y2].map(|x| x / s),
                )
            })
            .collect();
        canonical(&mut theirs);
        canonical(&mut mine);
        let detail = || format!("{}\n  ours:   {mine:?}\n  theirs: {theirs:?}", case.name);
        assert_eq!(mine.len(), theirs.len(), "count differs: {}", detail());
        for (a, b) in mine.iter().zip(&theirs) {
            let db = (0..4).map(|k| (a.2[k] - b.2[k]).abs()).fold(0.0, f64::max);
            let ds = (a.1 - b.1).abs();
            assert!(
                a.0 == b.0 && db <= TOL && ds <= TOL,
                "{a:?} vs {b:?}: {}",
                detail()
            );
            (max_box, max_score) = (max_box.max(db), max_score.max(ds));
            exact += usize::from(a.2 == b.2 && a.1 as f32 == b.1 as f32);
            rows_total += 1;
        }
    }
    eprintln!(
        "{} cases, {rows_total} fused boxes ({exact} bit-identical): max |Δbox| {max_box:e}, \
         max |Δscore| {max_score:e}; rust {rust_us:.1} µs/case, python {python_s:.2} s for all",
        cases.len()
    );
    assert!(
        rows_total > 200,
        "too few boxes to mean anything: {rows_total}"
    );
}

/// The anchor-grid chain is a tie that matters: fused in frame pixels and fused divided by the
/// frame size, the fused boxes differ (which is why pixel cases reach the package divided by a
/// power of two), while dividing by 1024 changes nothing, to the bit.
#[test]
fn grid_chain_ties_hold_only_under_exact_scaling() {
    let [pixels, normalised] = <[Case; 2]>::try_from(grid_chain()).ok().unwrap();
    let fuse = |c: &Case, clip_unit| {
        let opts = WbfOptions {
            clip_unit,
            ..Default::default()
        };
        weighted_boxes_fusion(&c.per_model, &opts).unwrap()
    };
    let scaled = |dets: &[Detection], sx: f64, sy: f64| -> Vec<Detection> {
        let s = |d: &Detection| {
            let b = d.bbox;
            det(
                d.class,
                d.score,
                [b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy],
            )
        };
        dets.iter().map(s).collect()
    };
    let ours = fuse(&pixels, false);
    let by_1024 = Case {
        per_model: pixels
            .per_model
            .iter()
            .map(|m| scaled(m, 1.0 / 1024.0, 1.0 / 1024.0))
            .collect(),
        ..pixels
    };
    assert_eq!(ours, scaled(&fuse(&by_1024, true), 1024.0, 1024.0));
    let by_frame = scaled(&fuse(&normalised, true), 640.0, 480.0);
    let moved = ours
        .iter()
        .filter(|d| by_frame.iter().all(|e| (e.bbox.x1 - d.bbox.x1).abs() > 1.0))
        .count();
    assert_eq!(
        (ours.len(), by_frame.len(), moved),
        (5, 5, 4),
        "{ours:?}\n{by_frame:?}"
    );
}

/// Hand-checked edges of the public API that the random cases do not pin down.
#[test]
fn thresholds_clipping_weighted_nms_and_bad_input() {
    use trident_infer::Error;
    use trident_infer::ensemble::fusion::{Fusion, NmsFusionOptions, nms_fusion_with};
    let (a, b) = ([0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]); // IoU 81 / 119
    // skip_box_thr drops the 0.05 box; clipping is the package's, and optional.
    let models = vec![vec![
        det(0, 0.05, [0.1, 0.1, 0.2, 0.2]),
        det(0, 0.5, [-0.1, 0.2, 0.5, 1.3]),
    ]];
    let mut opts = WbfOptions {
        skip_box_thr: 0.1,
        ..Default::default()
    };
    let out = weighted_boxes_fusion(&models, &opts).unwrap();
    assert_eq!(out, [det(0, 0.5, [0.0, 0.2, 0.5, 1.0])]);
    opts.clip_unit = false;
    let out = Fusion::Wbf(opts).fuse(&models).unwrap();
    assert_eq!(out, [det(0, 0.5, [-0.1, 0.2, 0.5, 1.3])]);
    // Weighted NMS: class 0's 0.6·3/4 = 0.45 beats 0.8·1/4 = 0.2 and suppresses it (IoU 0.68);
    // class 1 is apart. Output grouped by class id, as the package's.
    let models = vec![vec![det(1, 0.5, a), det(0, 0.6, a)], vec![det(0, 0.8, b)]];
    let weights = Some(vec![3.0, 1.0]);
    let opts = NmsFusionOptions {
        weights,
        clip_unit: false,
        ..Default::default()
    };
    let out = nms_fusion_with(&models, &opts).unwrap();
    let got: Vec<_> = out.iter().map(|d| (d.class, d.score, d.bbox)).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].0 == 0
            && (got[0].1 - 0.45).abs() < 1e-6
            && got[0].2 == BoxXyxy::new(0.0, 0.0, 10.0, 10.0)
    );
    assert!(got[1].0 == 1 && (got[1].1 - 0.375).abs() < 1e-6, "{got:?}");
    // Wrong weight counts and senseless weights are errors, not the package's silent fallback.
    let two = vec![Vec::new(), Vec::new()];
    let opts = WbfOptions {
        weights: Some(vec![1.0; 3]),
        ..Default::default()
    };
    assert!(matches!(
        weighted_boxes_fusion(&two, &opts),
        Err(Error::Shape(_))
    ));
    for w in [&[1.0][..], &[1.0, f64::NAN], &[1.0, -1.0], &[0.0, 0.0]] {
        assert!(
            matches!(nms_fusion(&two, Some(w), 0.5), Err(Error::Shape(_))),
            "{w:?}"
        );
    }
    for ct in ConfType::ALL {
        assert_eq!(ct.as_str().parse::<ConfType>(), Ok(ct));
    }
    let e = "mean".parse::<ConfType>().unwrap_err();
    assert!(ConfType::ALL.iter().all(|c| e.contains(c.as_str())), "{e}");
}
