//! `report.md`: the figures a person checks before a package ships.

use std::fmt::Write;

use crate::metrics::{Metrics, describe};
use crate::plots::{PR_CURVES, RELIABILITY};

fn f4(v: f64) -> String {
    format!("{v:.4}")
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header.iter().map(|_| "---|").collect::<String>()
    );
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
}

pub fn render(m: &Metrics, fitted_on: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Calibration report\n");
    let _ = writeln!(
        out,
        "Fitted on {fitted_on}: {} images, {} objects, classes {}. Every figure is on this split; models run at their device floors unless said otherwise.\n",
        m.images,
        m.instances,
        m.names.join(", ")
    );

    let _ = writeln!(out, "## Headline\n");
    let bar = &m.bar;
    let verdict = if bar.met { "met" } else { "not met" };
    let ens = bar.ensemble_wbf_map50_95.map_or("-".to_string(), f4);
    let _ = writeln!(
        out,
        "- Best single model: **{}**, mAP50-95 {}.",
        bar.best_single,
        f4(bar.best_single_map50_95)
    );
    let _ = writeln!(
        out,
        "- Calibrated WBF ensemble (best WBF of the search): mAP50-95 **{ens}**{}; bar (+{:.2}): **{verdict}**.",
        bar.margin.map_or(String::new(), |d| format!(" ({d:+.4})")),
        bar.required
    );
    let chosen = &m.fusion.candidates[m.fusion.chosen];
    let _ = writeln!(
        out,
        "- Chosen fusion: {} — mAP50 {}, mAP50-95 {} (raw scores, same fusion: {}).",
        describe(chosen),
        f4(m.ensemble.map50),
        f4(m.ensemble.map50_95),
        f4(m.ensemble.raw_map50_95)
    );
    let _ = writeln!(
        out,
        "- D-ECE before → after: {}; fused scores {} → {}.",
        m.models
            .iter()
            .map(|mm| format!(
                "{} {} → {}",
                mm.variant,
                f4(mm.dece_before),
                f4(mm.dece_after)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        f4(m.ensemble.dece_before),
        f4(m.ensemble.dece_after)
    );
    let kept = if m.tta.kept.is_empty() {
        "none".to_string()
    } else {
        m.tta
            .kept
            .iter()
            .map(|t| format!("{} (gain {:+.4}, cost ×{:.2})", t.label(), t.gain, t.cost))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "- TTA kept: {kept} (min gain {}); ensemble mAP50-95 {} → {} with them.",
        m.tta.min_gain,
        f4(m.tta.ensemble_plain),
        f4(m.tta.ensemble_with_kept)
    );
    if let Some(why) = &bar.explanation {
        let _ = writeln!(out, "\n**Why the bar is not met.** {why}");
    }
    out.push('\n');

    let _ = writeln!(out, "## Models and temperatures\n");
    let rows: Vec<Vec<String>> = m
        .models
        .iter()
        .map(|mm| {
            vec![
                mm.variant.clone(),
                mm.backend.clone(),
                format!("{}", mm.floor),
                f4(mm.map50),
                f4(mm.map50_95),
                f4(mm.map50_95_low_floor),
                format!("{}/{}", mm.matched, mm.detections),
                match &mm.class_temperatures {
                    Some(ts) => ts
                        .iter()
                        .map(|t| format!("{t}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => format!("{}", mm.temperature),
                },
                format!("{} → {}", f4(mm.nll_before), f4(mm.nll_after)),
                format!("{} → {}", f4(mm.dece_before), f4(mm.dece_after)),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "model",
            "backend",
            "floor",
            "mAP50",
            "mAP50-95",
            "mAP50-95 @0.001",
            "matched/dets",
            "T",
            "NLL",
            "D-ECE",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "Temperature scaling divides each score's logit by T (fitted by minimising the NLL of the detections' match labels, TP at IoU ≥ 0.5); it is kept only when D-ECE (confidence bins, Küppers et al. 2020) does not get worse. It leaves each model's ranking, hence its mAP, unchanged; it matters where scores of different models meet: fusion and thresholds.\n"
    );
    for mm in &m.models {
        for n in &mm.notes {
            let _ = writeln!(out, "- {}: {n}", mm.variant);
        }
    }
    let _ = writeln!(out, "![reliability diagrams]({RELIABILITY})\n");

    let _ = writeln!(out, "## Fusion\n");
    let mut order: Vec<usize> = (0..m.fusion.candidates.len()).collect();
    order.sort_by(|&a, &b| {
        m.fusion.candidates[b]
            .map50_95
            .total_cmp(&m.fusion.candidates[a].map50_95)
    });
    let shown: Vec<usize> = order
        .iter()
        .copied()
        .take(8)
        .chain(m.fusion.best_nms)
        .chain(m.fusion.best_wbf)
        .fold(Vec::new(), |mut v, k| {
            if !v.contains(&k) {
                v.push(k);
            }
            v
        });
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|&k| {
            let c = &m.fusion.candidates[k];
            vec![
                describe(c),
                f4(c.map50),
                f4(c.map50_95),
                if k == m.fusion.chosen {
                    "chosen".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "{} candidates (method × IoU threshold × weights{}), scored by ensemble mAP50-95 on calibrated scores; the best eight, and the best of each method:\n",
        m.fusion.candidates.len(),
        if m.fusion
            .candidates
            .iter()
            .any(|c| c.table.skip_box_thr > 0.0)
        {
            " × skip threshold"
        } else {
            ""
        }
    );
    table(&mut out, &["fusion", "mAP50", "mAP50-95", ""], &rows);
    let cov = &m.coverage;
    let _ = writeln!(
        out,
        "Objects found (IoU 0.5, device floors): {}; by any model {:.1} %, by all {:.1} %.\n",
        m.models
            .iter()
            .zip(&cov.per_model)
            .map(|(mm, c)| format!("{} {:.1} %", mm.variant, 100.0 * c))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * cov.union,
        100.0 * cov.all
    );
    let _ = writeln!(out, "![precision-recall curves]({PR_CURVES})\n");

    let _ = writeln!(out, "## Test-time augmentation\n");
    let mut header: Vec<String> = vec!["views".into(), "cost".into()];
    header.extend(m.models.iter().map(|mm| mm.variant.clone()));
    header.push("ensemble".into());
    let rows: Vec<Vec<String>> = m
        .tta
        .subsets
        .iter()
        .map(|s| {
            let mut r = vec![
                if s.views.is_empty() {
                    "plain".into()
                } else {
                    format!("plain + {}", s.views.join(" + "))
                },
                format!("×{:.2}", s.cost),
            ];
            r.extend(s.models.iter().map(|v| f4(*v)));
            r.push(f4(s.ensemble));
            r
        })
        .collect();
    let _ = writeln!(
        out,
        "mAP50-95 of every combination of the candidate views ({}); views are added greedily while the ensemble gains more than {}. Cost: latency multiplier of the ensemble, measured here.\n",
        m.tta.candidates.join(", "),
        m.tta.min_gain
    );
    table(
        &mut out,
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
    );

    let _ = writeln!(out, "## Thresholds\n");
    let rows: Vec<Vec<String>> = m
        .thresholds
        .iter()
        .map(|t| {
            vec![
                t.class.clone(),
                format!("{}", t.beta),
                format!("{:.4}", t.threshold),
                f4(t.precision),
                f4(t.recall),
                f4(t.fbeta),
                t.instances.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["class", "beta", "threshold", "P", "R", "F-beta", "objects"],
        &rows,
    );
    let _ = writeln!(
        out,
        "On the fused, calibrated score without TTA. Kept by the thresholds: precision {}, recall {} (IoU 0.5).",
        f4(m.ensemble.precision_at_thresholds),
        f4(m.ensemble.recall_at_thresholds)
    );
    out
}
