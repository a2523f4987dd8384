//! `trident fuse`: fuses prediction files offline (WBF or weighted NMS), as `ensemble-boxes`.
//!
//! `--skip` and `--conf-type` are WBF settings: with `--method nms` they are refused unless left
//! at their defaults (0 and avg), rather than silently ignored. Every file and option is checked
//! before anything is written; the output is written atomically.

use std::process::ExitCode;

use trident_calibration::Error;
use trident_calibration::fuse::fuse_files;
use trident_core::calibration::ConfType;
use trident_core::prediction::save_predictions;
use trident_infer::ensemble::fusion::{Fusion, NmsFusionOptions, WbfOptions};

use crate::cli::{FuseArgs, FuseMethod};

pub fn run(a: FuseArgs) -> anyhow::Result<ExitCode> {
    let fusion = fusion(&a)?;
    let start = std::time::Instant::now();
    let out = fuse_files(&a.inputs, &fusion)?;
    tracing::info!(
        "fused {} predictions in {:.3} s",
        out.boxes_in.iter().sum::<usize>(),
        start.elapsed().as_secs_f64()
    );
    save_predictions(&a.out, &out.predictions)?;
    let counts: Vec<String> = out.boxes_in.iter().map(usize::to_string).collect();
    println!(
        "fused {} files ({} boxes) on {} images with {}: {} boxes in → {} boxes → {}",
        a.inputs.len(),
        counts.join(" + "),
        out.images,
        describe(&fusion),
        out.boxes_in.iter().sum::<usize>(),
        out.predictions.len(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The fusion the options ask for, in pixels (nothing clipped). The library checks the weights
/// against the files.
fn fusion(a: &FuseArgs) -> Result<Fusion, Error> {
    for (flag, v) in [("--iou", a.iou), ("--skip", Some(a.skip))] {
        if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::input(flag, format!("{v} is not a number in [0, 1]")));
        }
    }
    let weights = a.weights.clone();
    Ok(match a.method {
        FuseMethod::Wbf => Fusion::Wbf(WbfOptions {
            iou_thr: a.iou.unwrap_or(0.55),
            skip_box_thr: a.skip,
            weights,
            conf_type: a.conf_type,
            clip_unit: false,
        }),
        FuseMethod::Nms => {
            if a.skip != 0.0 {
                let msg = "applies to --method wbf only (NMS keeps every box it does not suppress)";
                return Err(Error::input("--skip", msg));
            }
            if a.conf_type != ConfType::Avg {
                let msg = "applies to --method wbf only (NMS keeps each kept box's weighted score)";
                return Err(Error::input("--conf-type", msg));
            }
            Fusion::Nms(NmsFusionOptions {
                iou_thr: a.iou.unwrap_or(0.5),
                weights,
                clip_unit: false,
            })
        }
    })
}

fn describe(fusion: &Fusion) -> String {
    let weights = |w: &Option<Vec<f64>>| {
        w.as_ref().map_or(String::new(), |w| {
            let w: Vec<String> = w.iter().map(f64::to_string).collect();
            format!(", weights {}", w.join(","))
        })
    };
    match fusion {
        Fusion::Wbf(o) => format!(
            "wbf (iou {}, skip {}, conf_type {}{})",
            o.iou_thr,
            o.skip_box_thr,
            o.conf_type.as_str(),
            weights(&o.weights)
        ),
        Fusion::Nms(o) => format!("nms (iou {}{})", o.iou_thr, weights(&o.weights)),
    }
}
