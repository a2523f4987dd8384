//! The demo's floors: what each stage must show before the summary calls it passed.
//!
//! A main job that prints figures but judges none of them can look green while every model in it
//! detects nothing (a slow machine once trained three models to mAP50 < 0.1 and every stage
//! "succeeded"). Each check here reads the files a stage wrote — the same JSON a user would
//! read — and returns a verdict that names the figure and its floor. The numbers are set for the
//! demo's synthetic data (`configs/demo/`), where a working pipeline clears them with room to
//! spare; they are not claims about field data.

use serde_json::Value;

/// Validation mAP50 every trained variant must reach (the demo's training stops at
/// `target_map50` in `configs/demo/training.yaml`, a little above this).
pub const TRAIN_MAP50: f64 = 0.85;
/// How far the balanced checkpoint's test-split mAP50 may fall below its validation mAP50.
pub const TEST_VS_VAL: f64 = 0.10;
/// Export parity against tch: worst box coordinate (pixels) and score difference, tract and ONNX
/// Runtime over the validation split.
pub const PARITY_BOX_PX: f64 = 0.05;
pub const PARITY_SCORE: f64 = 1e-3;
/// Largest mAP50 loss of the FP16-weights twin, in points.
pub const FP16_DROP_PT: f64 = 1.0;
/// The calibrated ensemble may not fall below the best single model by more than this
/// (mAP50-95); D-ECE may not rise by more than this after temperature scaling.
pub const ENSEMBLE_VS_BEST: f64 = 0.0;
pub const DECE_SLACK: f64 = 1e-9;
/// How far the edge runtime's mAP50 on the test feed may fall below the same ensemble on the
/// test stills (the feed is the same frames, JPEG-decoded by GStreamer and paced by the governor).
pub const FEED_VS_STILLS: f64 = 0.05;

/// A stage's judgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A detail line under a stage, or a stage with nothing to judge.
    None,
}

impl Verdict {
    pub fn from_ok(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "ok",
            Verdict::Fail => "FAILED",
            Verdict::None => "",
        }
    }

    /// Both must pass; `None` counts as passing.
    pub fn and(self, other: Verdict) -> Verdict {
        if self == Verdict::Fail || other == Verdict::Fail {
            Verdict::Fail
        } else if self == Verdict::Pass || other == Verdict::Pass {
            Verdict::Pass
        } else {
            Verdict::None
        }
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// One variant's training result from its `metadata.json`.
#[derive(Clone, Debug)]
pub struct TrainedVariant {
    pub name: String,
    pub map50: f64,
    pub map50_95: f64,
    pub conf_floor: f64,
    pub precision: f64,
    pub recall: f64,
    pub epochs: u64,
    pub stop_reason: String,
}

impl TrainedVariant {
    pub fn from_metadata(name: &str, meta: &Value) -> Self {
        let m = &meta["final_metrics"];
        let floor = &meta["at_conf_floor"];
        TrainedVariant {
            name: name.to_string(),
            map50: num(&m["map50"]),
            map50_95: num(&m["map50_95"]),
            conf_floor: num(&floor["conf_floor"]),
            precision: num(&floor["precision"]),
            recall: num(&floor["recall"]),
            epochs: meta["epochs_completed"].as_u64().unwrap_or(0),
            stop_reason: meta["stop_reason"].as_str().unwrap_or("?").to_string(),
        }
    }

    /// The variant's own line: its figures and whether it reached the floor (NaN fails).
    pub fn verdict(&self) -> (Verdict, String) {
        let ok = self.map50 >= TRAIN_MAP50;
        (
            Verdict::from_ok(ok),
            format!(
                "mAP50 {:.3} (floor {TRAIN_MAP50}), mAP50-95 {:.3}; at conf {:.2}: P {:.3} R {:.3}; {} epochs ({})",
                self.map50,
                self.map50_95,
                self.conf_floor,
                self.precision,
                self.recall,
                self.epochs,
                self.stop_reason.replace('_', " ")
            ),
        )
    }
}

/// The variants as an ensemble: the recall-oriented one finds at least as much as the
/// precision-oriented one at their own confidence floors, and the precision-oriented one is at
/// least as precise. `variants` are named high_recall, balanced, high_precision.
pub fn variants_ordered(variants: &[TrainedVariant]) -> (Verdict, String) {
    let get = |n: &str| variants.iter().find(|v| v.name == n);
    let (Some(hr), Some(hp)) = (get("high_recall"), get("high_precision")) else {
        return (
            Verdict::Fail,
            "high_recall or high_precision is missing".into(),
        );
    };
    let recall_ok = hr.recall >= hp.recall;
    let precision_ok = hp.precision >= hr.precision;
    (
        Verdict::from_ok(recall_ok && precision_ok),
        format!(
            "at their floors: recall high_recall {:.3} {} high_precision {:.3}; precision high_precision {:.3} {} high_recall {:.3}",
            hr.recall,
            if recall_ok { "≥" } else { "<" },
            hp.recall,
            hp.precision,
            if precision_ok { "≥" } else { "<" },
            hr.precision
        ),
    )
}

/// The balanced checkpoint on the held-out test split against its own validation figure.
pub fn test_close_to_val(test_map50: f64, val_map50: f64) -> Verdict {
    Verdict::from_ok(
        test_map50 >= val_map50 - TEST_VS_VAL && test_map50 >= TRAIN_MAP50 - TEST_VS_VAL,
    )
}

/// The active-learning round: fine-tuning on the selected, annotated field frames must raise the
/// balanced model's mAP50 on the field test split by at least this much.
pub const ACTIVE_GAIN: f64 = 0.02;

/// The fine-tuned model against its baseline on the field test split.
pub fn active_round(before_map50: f64, after_map50: f64) -> (Verdict, String) {
    let gain = after_map50 - before_map50;
    (
        Verdict::from_ok(gain >= ACTIVE_GAIN),
        format!("mAP50 {before_map50:.3} → {after_map50:.3} ({gain:+.3}; floor: +{ACTIVE_GAIN})"),
    )
}

/// One variant's model cards: parity against tch and the FP16-weights twin's mAP50 change.
pub fn export_verdict(card: &Value, fp16_card: &Value) -> (Verdict, String) {
    let v = &card["verification"];
    let worst = |key: &str| {
        v["parity"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| num(&p[key]))
            .fold(f64::NAN, |a, b| if a.is_nan() || b > a { b } else { a })
    };
    let map = |v: &Value, runner: &str| {
        v["task"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["runner"] == runner)
            .map(|t| num(&t["map50"]))
            .unwrap_or(f64::NAN)
    };
    let (box_px, score) = (worst("max_abs_box"), worst("max_abs_score"));
    let (tch, onnx) = (map(v, "tch"), map(v, "tract"));
    let hv = &fp16_card["verification"];
    let fp16_delta_pt = (map(hv, "tract-fp16-weights") - map(hv, "tract")) * 100.0;
    let ok = box_px <= PARITY_BOX_PX && score <= PARITY_SCORE && fp16_delta_pt >= -FP16_DROP_PT;
    (
        Verdict::from_ok(ok),
        format!(
            "max |Δ| vs tch {box_px:.1e} px (floor {PARITY_BOX_PX}) / {score:.1e} score (floor {PARITY_SCORE:.0e}); \
             mAP50 tch {tch:.4} ONNX {onnx:.4}; FP16 {fp16_delta_pt:+.2} pt (floor -{FP16_DROP_PT})"
        ),
    )
}

/// Calibration's `metrics.json`: the calibrated ensemble at least as good as the best single
/// model (mAP50-95), and no model's D-ECE worse after temperature scaling.
pub fn calibrate_verdict(metrics: &Value) -> (Verdict, String) {
    let bar = &metrics["bar"];
    let (ens, best) = (
        num(&bar["ensemble_wbf_map50_95"]),
        num(&bar["best_single_map50_95"]),
    );
    let ensemble_ok = ens >= best - ENSEMBLE_VS_BEST;
    let worse: Vec<String> = metrics["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            // NaN (a missing figure) counts as worse.
            let (before, after) = (num(&m["dece_before"]), num(&m["dece_after"]));
            after.is_nan() || before.is_nan() || after > before + DECE_SLACK
        })
        .map(|m| m["variant"].as_str().unwrap_or("?").to_string())
        .collect();
    let models = metrics["models"].as_array().map_or(0, Vec::len);
    let ok = ensemble_ok && worse.is_empty() && models > 0;
    (
        Verdict::from_ok(ok),
        format!(
            "ensemble mAP50-95 {ens:.4} {} best single ({}) {best:.4}; D-ECE {}",
            if ensemble_ok { "≥" } else { "<" },
            bar["best_single"].as_str().unwrap_or("?"),
            if worse.is_empty() {
                "not worse for any model".to_string()
            } else {
                format!("worse for {}", worse.join(", "))
            }
        ),
    )
}

/// `trident deploy status --json`: every unit healthy, on `release`, and detecting.
pub fn deploy_verdict(units: &Value, release: &str) -> (Verdict, String) {
    let list = units.as_array().cloned().unwrap_or_default();
    let mut lines = Vec::new();
    let mut ok = !list.is_empty();
    for u in &list {
        let healthy = u["health"] == "ok";
        let on_release = u["release"] == release;
        let detections = u["detections"].as_u64().unwrap_or(0);
        ok &= healthy && on_release && detections > 0;
        lines.push(format!(
            "{} {} {} {:.1} fps, {} detections in {} frames",
            u["unit"].as_str().unwrap_or("?"),
            u["release"].as_str().unwrap_or("-"),
            u["health"].as_str().unwrap_or("?"),
            num(&u["fps"]),
            detections,
            u["frames"].as_u64().unwrap_or(0),
        ));
    }
    (Verdict::from_ok(ok), lines.join("; "))
}

/// The edge runtime on the test feed against the same ensemble on the test stills.
pub fn feed_verdict(feed_map50: f64, stills_map50: f64) -> Verdict {
    Verdict::from_ok(feed_map50 >= stills_map50 - FEED_VS_STILLS && feed_map50 > 0.0)
}

/// The run summary's `log:` line, judged: every line written was synced at the end, none was
/// dropped and no write failed (the demo's disk is not full). `None` without such a line.
pub fn log_verdict(summary: &str) -> Option<(Verdict, String)> {
    let line = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("log: "))?;
    let count = |word: &str| -> Option<u64> {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    let ok = count(" lines written").is_some()
        && count(" lines written") == count(" synced")
        && count(" dropped") == Some(0)
        && count(" write errors") == Some(0);
    Some((Verdict::from_ok(ok), line.to_string()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_active_round_must_gain_on_the_field_test_split() {
        assert_eq!(active_round(0.60, 0.70).0, Verdict::Pass);
        assert_eq!(active_round(0.60, 0.61).0, Verdict::Fail);
        assert_eq!(active_round(0.60, 0.50).0, Verdict::Fail);
        assert!(active_round(0.6, 0.7).1.contains("+0.100"));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn the_log_line_passes_only_when_everything_written_was_synced_and_nothing_lost() {
        let ok = "trident-edge run: 3 frames\n  log: 120 lines written, 120 synced, 0 dropped (0 detections), 0 write errors, 0 rotations (0 failed)\n";
        assert_eq!(log_verdict(ok).unwrap().0, Verdict::Pass);
        let unsynced = ok.replace("120 synced", "90 synced");
        assert_eq!(log_verdict(&unsynced).unwrap().0, Verdict::Fail);
        let dropped = ok.replace("0 dropped (0", "4 dropped (1");
        assert_eq!(log_verdict(&dropped).unwrap().0, Verdict::Fail);
        let errors = ok.replace("0 write errors", "2 write errors");
        assert_eq!(log_verdict(&errors).unwrap().0, Verdict::Fail);
        assert!(log_verdict("trident-edge run: 3 frames\n").is_none());
    }

    fn variant(name: &str, map50: f64, p: f64, r: f64) -> TrainedVariant {
        TrainedVariant::from_metadata(
            name,
            &json!({
                "final_metrics": {"map50": map50, "map50_95": map50 * 0.7},
                "at_conf_floor": {"conf_floor": 0.25, "precision": p, "recall": r},
                "epochs_completed": 9, "stop_reason": "target_reached"
            }),
        )
    }

    #[test]
    fn a_model_that_detects_nothing_fails_its_floor() {
        // The figures a slow machine produced with a wall-clock budget.
        let (v, line) = variant("balanced", 0.008, 0.0, 0.0).verdict();
        assert_eq!(v, Verdict::Fail, "{line}");
        assert!(
            line.contains("0.008") && line.contains("floor 0.85"),
            "{line}"
        );
        assert_eq!(
            variant("balanced", 0.93, 0.9, 0.9).verdict().0,
            Verdict::Pass
        );
        // Missing figures are not a pass.
        let empty = TrainedVariant::from_metadata("x", &json!({}));
        assert_eq!(empty.verdict().0, Verdict::Fail);
    }

    #[test]
    fn variants_must_keep_their_roles_at_their_floors() {
        let good = [
            variant("high_recall", 0.95, 0.90, 0.95),
            variant("balanced", 0.95, 0.93, 0.92),
            variant("high_precision", 0.95, 0.98, 0.88),
        ];
        assert_eq!(variants_ordered(&good).0, Verdict::Pass);
        let swapped = [
            variant("high_recall", 0.95, 0.98, 0.88),
            variant("high_precision", 0.95, 0.90, 0.95),
        ];
        let (v, line) = variants_ordered(&swapped);
        assert_eq!(v, Verdict::Fail);
        assert!(line.contains('<'), "{line}");
        assert_eq!(variants_ordered(&good[..1]).0, Verdict::Fail);
    }

    #[test]
    fn export_needs_parity_and_a_small_fp16_drop() {
        let card = |box_px: f64, map_tract: f64| {
            json!({"verification": {
                "parity": [{"max_abs_box": box_px / 2.0, "max_abs_score": 1e-6},
                           {"max_abs_box": box_px, "max_abs_score": 2e-6}],
                "task": [{"runner": "tch", "map50": 0.95}, {"runner": "tract", "map50": map_tract}]
            }})
        };
        let fp16 = |delta: f64| {
            json!({"verification": {"task": [
                {"runner": "tract", "map50": 0.95}, {"runner": "tract-fp16-weights", "map50": 0.95 + delta}
            ]}})
        };
        assert_eq!(
            export_verdict(&card(3e-4, 0.95), &fp16(0.0)).0,
            Verdict::Pass
        );
        assert_eq!(
            export_verdict(&card(0.5, 0.95), &fp16(0.0)).0,
            Verdict::Fail
        );
        let (v, line) = export_verdict(&card(3e-4, 0.95), &fp16(-0.02));
        assert_eq!(v, Verdict::Fail, "{line}");
        assert!(line.contains("-2.00 pt"), "{line}");
        // A card without verification is not a pass.
        assert_eq!(export_verdict(&json!({}), &json!({})).0, Verdict::Fail);
    }

    #[test]
    fn calibration_must_not_lose_to_the_best_model_or_worsen_calibration() {
        let metrics = |ens: f64, after: f64| {
            json!({
                "bar": {"ensemble_wbf_map50_95": ens, "best_single_map50_95": 0.70, "best_single": "balanced"},
                "models": [
                    {"variant": "balanced", "dece_before": 0.2, "dece_after": 0.1},
                    {"variant": "high_recall", "dece_before": 0.3, "dece_after": after}
                ]
            })
        };
        assert_eq!(calibrate_verdict(&metrics(0.75, 0.2)).0, Verdict::Pass);
        // The failing run: an ensemble of models that detect nothing.
        assert_eq!(calibrate_verdict(&metrics(0.0, 0.2)).0, Verdict::Fail);
        let (v, line) = calibrate_verdict(&metrics(0.75, 0.31));
        assert_eq!(v, Verdict::Fail);
        assert!(line.contains("worse for high_recall"), "{line}");
        assert_eq!(calibrate_verdict(&json!({})).0, Verdict::Fail);
    }

    #[test]
    fn deployed_units_must_be_healthy_on_the_release_and_detecting() {
        let unit = |health: &str, detections: u64| {
            json!({"unit": "reef-01", "release": "0.1.0", "health": health, "fps": 8.0,
                   "frames": 100, "detections": detections})
        };
        assert_eq!(
            deploy_verdict(&json!([unit("ok", 40)]), "0.1.0").0,
            Verdict::Pass
        );
        assert_eq!(
            deploy_verdict(&json!([unit("ok", 0)]), "0.1.0").0,
            Verdict::Fail
        );
        assert_eq!(
            deploy_verdict(&json!([unit("unhealthy", 40)]), "0.1.0").0,
            Verdict::Fail
        );
        assert_eq!(
            deploy_verdict(&json!([unit("ok", 40)]), "0.2.0").0,
            Verdict::Fail
        );
        assert_eq!(deploy_verdict(&json!([]), "0.1.0").0, Verdict::Fail);
    }

    #[test]
    fn closeness_floors() {
        assert_eq!(test_close_to_val(0.90, 0.93), Verdict::Pass);
        assert_eq!(test_close_to_val(0.012, 0.93), Verdict::Fail);
        assert_eq!(feed_verdict(0.90, 0.92), Verdict::Pass);
        assert_eq!(feed_verdict(0.80, 0.92), Verdict::Fail);
        assert_eq!(feed_verdict(f64::NAN, 0.92), Verdict::Fail);
        assert_eq!(Verdict::Pass.and(Verdict::Fail), Verdict::Fail);
        assert_eq!(Verdict::None.and(Verdict::Pass), Verdict::Pass);
    }
}
