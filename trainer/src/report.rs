//! What a training run leaves beside its checkpoints: `metrics.csv`, `curves.png` and
//! `metadata.json` (provenance and final metrics).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use trident_plot::{Chart, Series, chart_grid};

use trident_eval::Evaluation;

use crate::error::{Error, Result};

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub box_loss: f64,
    pub cls_loss: f64,
    pub dfl_loss: f64,
    pub precision: f64,
    pub recall: f64,
    pub map50: f64,
    pub map50_95: f64,
    pub lr: f64,
    pub images_per_s: f64,
    pub epoch_s: f64,
    pub elapsed_s: f64,
    /// Recall of each critical species at the variant's confidence floor (`critical:`), in
    /// config order; a class without validation boxes reads 0.
    #[serde(default)]
    pub critical_recall: Vec<(String, f64)>,
}

const HEADER: &str = "epoch,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision,metrics/recall,\
metrics/mAP50,metrics/mAP50-95,lr,images_per_s,epoch_s,elapsed_s";

/// Ultralytics' columns, then `metrics/recall(<class>)` for each critical species.
pub fn write_metrics_csv(path: &Path, rows: &[EpochRecord]) -> Result<()> {
    let mut text = String::from(HEADER);
    if let Some(first) = rows.first() {
        for (class, _) in &first.critical_recall {
            let _ = write!(text, ",metrics/recall({class})");
        }
    }
    text.push('\n');
    for r in rows {
        let _ = write!(
            text,
            "{},{:.5},{:.5},{:.5},{:.5},{:.5},{:.5},{:.5},{:.6},{:.2},{:.2},{:.1}",
            r.epoch,
            r.box_loss,
            r.cls_loss,
            r.dfl_loss,
            r.precision,
            r.recall,
            r.map50,
            r.map50_95,
            r.lr,
            r.images_per_s,
            r.epoch_s,
            r.elapsed_s
        );
        for (_, v) in &r.critical_recall {
            let _ = write!(text, ",{v:.5}");
        }
        text.push('\n');
    }
    trident_core::fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Reads back `metrics.csv` (for `--resume`, so curves continue).
pub fn read_metrics_csv(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = trident_core::error::read_to_string(path)?;
    // Critical species' columns after the fixed twelve: `metrics/recall(<class>)`.
    let critical: Vec<String> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split(',')
        .skip(12)
        .map(|h| {
            h.trim()
                .trim_start_matches("metrics/recall(")
                .trim_end_matches(')')
                .to_string()
        })
        .collect();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let bad = || Error::Dataset(format!("{}:{}: not a metrics row", path.display(), i + 1));
        let v: Vec<f64> = line
            .split(',')
            .map(|c| c.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad())?;
        if v.len() != 12 + critical.len() {
            return Err(bad());
        }
        rows.push(EpochRecord {
            epoch: v[0] as usize,
            box_loss: v[1],
            cls_loss: v[2],
            dfl_loss: v[3],
            precision: v[4],
            recall: v[5],
            map50: v[6],
            map50_95: v[7],
            lr: v[8],
            images_per_s: v[9],
            epoch_s: v[10],
            elapsed_s: v[11],
            critical_recall: critical
                .iter()
                .cloned()
                .zip(v[12..].iter().copied())
                .collect(),
        });
    }
    Ok(rows)
}

/// Losses, validation metrics and learning rate per epoch, one PNG.
pub fn write_curves(path: &Path, rows: &[EpochRecord]) -> Result<()> {
    let series = |name: &str, f: &dyn Fn(&EpochRecord) -> f64| Series {
        name: name.to_string(),
        points: rows.iter().map(|r| (r.epoch as f64, f(r))).collect(),
        emphasis: true,
    };
    let last = rows.last().map_or(1.0, |r| r.epoch as f64).max(2.0);
    let range = |ss: &[&Series]| {
        let max = ss
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        (0.0, if max > 0.0 { max * 1.1 } else { 1.0 })
    };
    let chart = |t: &'static str, y: &'static str, yr| Chart {
        title: t,
        x_label: "epoch",
        y_label: y,
        x_range: (1.0, last),
        y_range: yr,
    };
    let boxl = series("box", &|r| r.box_loss);
    let cls = series("cls", &|r| r.cls_loss);
    let dfl = series("dfl", &|r| r.dfl_loss);
    let m50 = series("mAP50", &|r| r.map50);
    let mut m5095 = series("mAP50-95", &|r| r.map50_95);
    m5095.emphasis = false;
    let p = series("precision", &|r| r.precision);
    let mut rc = series("recall", &|r| r.recall);
    rc.emphasis = false;
    // The critical species' recall at the floor, beside the mean recall at the best-F1 point.
    let critical: Vec<Series> = rows
        .first()
        .map(|r| r.critical_recall.len())
        .map(|k| {
            (0..k)
                .map(|j| Series {
                    name: format!("recall {} @floor", rows[0].critical_recall[j].0),
                    points: rows
                        .iter()
                        .filter_map(|r| r.critical_recall.get(j).map(|c| (r.epoch as f64, c.1)))
                        .collect(),
                    // A palette colour of its own (emphasis is the one blue line).
                    emphasis: false,
                })
                .collect()
        })
        .unwrap_or_default();
    let lr = series("lr", &|r| r.lr);
    let panels = vec![
        (
            chart("train/box_loss", "loss", range(&[&boxl])),
            vec![boxl.clone()],
        ),
        (
            chart("train/cls_loss", "loss", range(&[&cls])),
            vec![cls.clone()],
        ),
        (
            chart("train/dfl_loss", "loss", range(&[&dfl])),
            vec![dfl.clone()],
        ),
        (chart("val mAP", "mAP", (0.0, 1.0)), vec![m50, m5095]),
        (
            chart("val precision / recall", "", (0.0, 1.0)),
            [vec![p, rc], critical].concat(),
        ),
        (
            chart("learning rate", "lr", range(&[&lr])),
            vec![lr.clone()],
        ),
    ];
    chart_grid(path, 3, &panels)?;
    Ok(())
}

/// Precision and recall of a model when only detections at or above its floor are kept.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FloorMetrics {
    pub conf_floor: f32,
    pub precision: f64,
    pub recall: f64,
}

/// Precision and recall at the variant's floor, from the validation curves.
pub fn floor_metrics(ev: &Evaluation, floor: f32) -> FloorMetrics {
    let i = ev
        .curves
        .conf
        .partition_point(|&c| c < f64::from(floor))
        .min(ev.curves.conf.len().saturating_sub(1));
    let valid: Vec<usize> = (0..ev.per_class.len())
        .filter(|&c| ev.per_class[c].instances > 0)
        .collect();
    let mean = |curve: &Vec<Vec<f64>>| {
        valid
            .iter()
            .map(|&c| curve[c].get(i).copied().unwrap_or(0.0))
            .sum::<f64>()
            / valid.len().max(1) as f64
    };
    FloorMetrics {
        conf_floor: floor,
        precision: mean(&ev.curves.precision),
        recall: mean(&ev.curves.recall),
    }
}

/// Build facts recorded in `metadata.json`.
pub struct BuildInfo {
    pub trident: &'static str,
    pub git_revision: &'static str,
    pub tch: &'static str,
    pub libtorch: &'static str,
}

pub const BUILD: BuildInfo = BuildInfo {
    trident: env!("CARGO_PKG_VERSION"),
    git_revision: env!("TRIDENT_GIT_REVISION"),
    tch: env!("TRIDENT_TCH_VERSION"),
    libtorch: env!("TRIDENT_LIBTORCH_VERSION"),
};

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_and_curves_render() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<EpochRecord> = (1..=3)
            .map(|e| EpochRecord {
                epoch: e,
                box_loss: 2.0 / e as f64,
                cls_loss: 1.5 / e as f64,
                dfl_loss: 1.2,
                precision: 0.2 * e as f64,
                recall: 0.25 * e as f64,
                map50: 0.3 * e as f64,
                map50_95: 0.1 * e as f64,
                lr: 0.001,
                images_per_s: 40.0,
                epoch_s: 20.0,
                elapsed_s: 20.0 * e as f64,
                critical_recall: vec![("lionfish".into(), 0.3 * e as f64), ("abalone".into(), 0.1)],
            })
            .collect();
        let csv = dir.path().join("metrics.csv");
        write_metrics_csv(&csv, &rows).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with(",metrics/recall(lionfish),metrics/recall(abalone)"),
            "{text}"
        );
        let back = read_metrics_csv(&csv).unwrap();
        assert_eq!(back.len(), 3);
        assert!((back[2].map50 - 0.9).abs() < 1e-5);
        assert_eq!(back[2].critical_recall[0].0, "lionfish");
        assert!((back[2].critical_recall[0].1 - 0.9).abs() < 1e-5);
        // A run without critical species keeps Ultralytics' twelve columns.
        let plain: Vec<EpochRecord> = rows
            .iter()
            .map(|r| EpochRecord {
                critical_recall: vec![],
                ..r.clone()
            })
            .collect();
        write_metrics_csv(&csv, &plain).unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .split(',')
                .count(),
            12
        );
        assert!(
            read_metrics_csv(&csv).unwrap()[0]
                .critical_recall
                .is_empty()
        );
        let png = dir.path().join("curves.png");
        write_curves(&png, &rows).unwrap();
        assert!(image::image_dimensions(&png).unwrap().0 > 1000);
    }
}
