//! Calibration end to end on detectors written out in Rust over a generated split: what the
//! replay says the device computes is what the edge runtime's ensemble computes with the written
//! tables, box for box; an over-confident model gets a softening temperature and a lower D-ECE;
//! no model's D-ECE gets worse; the output folder is complete or absent.

use std::collections::BTreeMap;
use std::path::Path;

use indicatif::ProgressBar;
use trident_calibration::calibrate::split_images;
use trident_calibration::calibrate_models;
use trident_calibration::collect::{CalibModel, SplitImage, collect};
use trident_calibration::config::{CalibrateConfig, ViewSpec};
use trident_calibration::fit::fit;
use trident_core::calibration::CalibrationTables;
use trident_core::dataset::{DatasetConfig, Split, dataset_yaml};
use trident_core::fsutil::StagingDir;
use trident_infer::backend::{Backend, BackendKind};
use trident_infer::ensemble::fusion::Fusion;
use trident_infer::ensemble::runner::{Ensemble, ModelSlot};
use trident_infer::{OnnxDetector, Result};

const NAMES: [&str; 3] = ["lionfish", "urchin", "abalone"];
const SIDE: usize = 96;
const CELL: usize = 8;
const CELLS: usize = SIDE / CELL;
/// Objects are OBJ-pixel squares centred on cell centres; images are SIDE × SIDE.
const OBJ: usize = 24;

/// A detector written out in Rust: for every cell and class, the share of the OBJ-pixel window
/// centred on the cell that is lit in the class's colour channel, mapped to a score by `curve`.
/// The cell under an object's centre sees 1; its neighbours see 2/3 and 4/9 and become false
/// positives whose score depends on the curve.
#[derive(Clone, Copy)]
struct WindowModel {
    curve: fn(f32) -> f32,
    /// Box offset in input pixels (a less precise model).
    offset: f32,
}

fn honest(cov: f32) -> f32 {
    cov.powi(4)
}

/// Neighbours of a true object score nearly as high as the object: over-confident.
fn overconfident(cov: f32) -> f32 {
    1.0 / (1.0 + (-(20.0 * (cov - 0.4))).exp())
}

impl Backend for WindowModel {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }
    fn input_shape(&self) -> [usize; 4] {
        [1, 3, SIDE, SIDE]
    }
    fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>> {
        let n = CELLS * CELLS;
        out.clear();
        out.resize((4 + NAMES.len()) * n, 0.0);
        let half = (OBJ / 2) as isize;
        for cy in 0..CELLS {
            for cx in 0..CELLS {
                let a = cy * CELLS + cx;
                let (px, py) = (cx * CELL + CELL / 2, cy * CELL + CELL / 2);
                out[a] = px as f32 + self.offset;
                out[n + a] = py as f32;
                out[2 * n + a] = OBJ as f32;
                out[3 * n + a] = OBJ as f32;
                for c in 0..NAMES.len() {
                    let plane = &input[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
                    let mut lit = 0usize;
                    for y in py as isize - half..py as isize + half {
                        for x in px as isize - half..px as isize + half {
                            if (0..SIDE as isize).contains(&x)
                                && (0..SIDE as isize).contains(&y)
                                && plane[y as usize * SIDE + x as usize] > 0.9
                            {
                                lit += 1;
                            }
                        }
                    }
                    out[(4 + c) * n + a] = (self.curve)(lit as f32 / (OBJ * OBJ) as f32);
                }
            }
        }
        Ok(vec![1, 4 + NAMES.len(), n])
    }
}

/// xorshift: deterministic test data without a dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A validation split of `n` black images with one to three coloured squares each.
fn dataset(dir: &Path, n: usize) -> std::path::PathBuf {
    let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    // Ultralytics datasets name a train split; this one reuses the validation images.
    let yaml = dataset_yaml(&names, &[Split::Val])
        .replace("val: images/val", "train: images/val\nval: images/val");
    std::fs::write(dir.join("dataset.yaml"), yaml).unwrap();
    std::fs::create_dir_all(dir.join("images/val")).unwrap();
    std::fs::create_dir_all(dir.join("labels/val")).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..n {
        let mut img = image::RgbImage::new(SIDE as u32, SIDE as u32);
        let mut labels = String::new();
        let mut used = Vec::new();
        for _ in 0..1 + rng.below(3) {
            // Centres on cell centres, at least two cells from the border and from each other.
            let (gx, gy) = (2 + rng.below(8) as usize, 2 + rng.below(8) as usize);
            if used
                .iter()
                .any(|&(ux, uy): &(usize, usize)| ux.abs_diff(gx) < 4 && uy.abs_diff(gy) < 4)
            {
                continue;
            }
            used.push((gx, gy));
            let class = rng.below(3) as usize;
            let (cx, cy) = (gx * CELL + CELL / 2, gy * CELL + CELL / 2);
            for y in cy - OBJ / 2..cy + OBJ / 2 {
                for x in cx - OBJ / 2..cx + OBJ / 2 {
                    img.get_pixel_mut(x as u32, y as u32).0[class] = 255;
                }
            }
            let s = SIDE as f64;
            labels.push_str(&format!(
                "{class} {} {} {} {}\n",
                cx as f64 / s,
                cy as f64 / s,
                OBJ as f64 / s,
                OBJ as f64 / s
            ));
        }
        img.save(dir.join(format!("images/val/{i:03}.png")))
            .unwrap();
        std::fs::write(dir.join(format!("labels/val/{i:03}.txt")), labels).unwrap();
    }
    dir.join("dataset.yaml")
}

const VARIANTS: [&str; 3] = ["high_recall", "balanced", "high_precision"];

fn models() -> Vec<(&'static str, WindowModel, f32)> {
    vec![
        (
            VARIANTS[0],
            WindowModel {
                curve: honest,
                offset: 0.0,
            },
            0.15,
        ),
        (
            VARIANTS[1],
            WindowModel {
                curve: overconfident,
                offset: 0.0,
            },
            0.25,
        ),
        (
            VARIANTS[2],
            WindowModel {
                curve: honest,
                offset: 2.0,
            },
            0.4,
        ),
    ]
}

fn sha(i: usize) -> String {
    format!("{:02x}", i + 1).repeat(32)
}

fn calib_models() -> Vec<CalibModel> {
    models()
        .into_iter()
        .enumerate()
        .map(|(i, (name, m, floor))| CalibModel {
            name: name.into(),
            sha256: sha(i),
            floor,
            detector: OnnxDetector::new(Box::new(m), NAMES.len()).unwrap(),
        })
        .collect()
}

fn names() -> Vec<String> {
    NAMES.iter().map(|s| s.to_string()).collect()
}

fn split(dir: &Path, n: usize) -> Vec<SplitImage> {
    let yaml = dataset(dir, n);
    let ds = DatasetConfig::load(&yaml).unwrap();
    split_images(&ds, Split::Val, &yaml, None).unwrap()
}

#[test]
fn the_replay_is_what_the_runtime_computes_with_the_written_tables() {
    let dir = tempfile::tempdir().unwrap();
    let images = split(dir.path(), 24);
    let config = CalibrateConfig::default();
    let c = collect(
        &names(),
        calib_models(),
        &images,
        &config.tta.candidates,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let (mut tables, metrics) = fit(&c, &config, BTreeMap::new()).unwrap();
    tables.validate("fitted").unwrap();

    // The over-confident model: a softening temperature, and D-ECE falls.
    let over = &metrics.models[1];
    let t = over
        .class_temperatures
        .as_ref()
        .map_or(over.temperature, |ts| ts[0]);
    assert!(t > 1.0, "temperature {t}");
    assert!(
        over.dece_after < over.dece_before * 0.8,
        "{} → {}",
        over.dece_before,
        over.dece_after
    );
    for m in &metrics.models {
        assert!(
            m.dece_after <= m.dece_before,
            "{}: {} → {}",
            m.variant,
            m.dece_before,
            m.dece_after
        );
    }

    // Whatever the search kept, replay with two views so the TTA path is compared too.
    let (flip, scale) = (1, 2);
    assert_eq!(
        c.views[flip],
        ViewSpec {
            flip: true,
            scale: 1.0
        }
    );
    assert_eq!(
        c.views[scale],
        ViewSpec {
            flip: false,
            scale: 0.83
        }
    );
    tables.tta = vec![
        trident_core::calibration::TtaTransform {
            flip: true,
            scale: 1.0,
            gain: 0.0,
            cost: 2.0,
        },
        trident_core::calibration::TtaTransform {
            flip: false,
            scale: 0.83,
            gain: 0.0,
            cost: 3.0,
        },
    ];
    let slots = models()
        .into_iter()
        .enumerate()
        .map(|(i, (name, m, floor))| ModelSlot {
            name: name.into(),
            sha256: sha(i),
            floor,
            detector: OnnxDetector::new(Box::new(m), NAMES.len()).unwrap(),
        })
        .collect();
    let mut ensemble =
        Ensemble::from_detectors(names(), slots, Fusion::Wbf(Default::default())).unwrap();
    ensemble.calibrate(&tables, "fitted").unwrap();
    let variants: Vec<String> = VARIANTS.iter().map(|s| s.to_string()).collect();
    let fusion = Fusion::from_table(&tables.fusion, &variants);
    let temps: Vec<Option<Vec<f32>>> = tables
        .models
        .iter()
        .map(|m| {
            Some(
                m.class_temperatures
                    .clone()
                    .unwrap_or(vec![m.temperature; NAMES.len()]),
            )
        })
        .collect();
    let cut: Vec<f32> = NAMES
        .iter()
        .map(|n| tables.thresholds.get(*n).copied().unwrap_or(0.0))
        .collect();
    let mut compared = 0;
    for (i, img) in images.iter().enumerate() {
        let rgb = image::open(&img.path).unwrap().into_rgb8();
        for (tta, views) in [(false, vec![]), (true, vec![flip, scale])] {
            let device = ensemble
                .detect(rgb.as_raw(), rgb.width(), rgb.height(), None, tta)
                .unwrap()
                .fused;
            let replay = c
                .ensemble_output(i, &views, &temps, &fusion, Some(&cut))
                .unwrap();
            assert_eq!(device, replay, "image {i}, tta {tta}");
            compared += device.len();
        }
    }
    assert!(compared > 50, "only {compared} fused detections compared");
}

#[test]
fn calibrate_writes_a_complete_folder_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let images = split(dir.path(), 16);
    let out = dir.path().join("calibration");
    let mut config = CalibrateConfig::default();
    config.tta.candidates.truncate(2);
    config.thresholds.class_beta.insert("lionfish".into(), 2.0);
    let staging = StagingDir::new(&out, false).unwrap();
    let outcome = calibrate_models(
        &names(),
        calib_models(),
        &images,
        &config,
        [("split".to_string(), "val".to_string())].into(),
        staging,
        &ProgressBar::hidden(),
    )
    .unwrap();
    for f in &outcome.files {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 0, "{f}");
    }
    let tables = CalibrationTables::load(&out.join("calibration.yaml")).unwrap();
    assert_eq!(tables, outcome.tables);
    tables
        .check_models(
            "t",
            &names(),
            VARIANTS
                .iter()
                .enumerate()
                .map(|(i, v)| (*v, sha(i)))
                .collect::<Vec<_>>()
                .iter()
                .map(|(v, s)| (*v, s.as_str())),
        )
        .unwrap();
    assert_eq!(tables.fitted_on["images"], "16");
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["models"].as_array().unwrap().len(), 3);
    assert_eq!(metrics["tta"]["subsets"].as_array().unwrap().len(), 4);
    let lionfish = metrics["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["class"] == "lionfish")
        .unwrap();
    assert_eq!(lionfish["beta"], 2.0);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Headline") && report.contains("reliability.png"),
        "{report}"
    );

    // A second run into the now non-empty folder is refused before any work, and changes nothing.
    let before = std::fs::read(out.join("calibration.yaml")).unwrap();
    assert!(StagingDir::new(&out, false).is_err());
    assert_eq!(std::fs::read(out.join("calibration.yaml")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
