//! `trident val`: one command from a model to its figures on a dataset split — the predictions
//! of a checkpoint (tch), one exported ONNX, a models folder or a package (the calibrated
//! ensemble through trident-infer, as a unit runs it), evaluated as `trident eval` does, with
//! the critical classes' recall at the operating point.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;
use trident_core::dataset::DatasetConfig;
use trident_core::postprocess::NmsOptions;
use trident_core::prediction::{Prediction, save_predictions};
use trident_data::truth::load_ground_truth;
use trident_eval::{evaluate, match_predictions, plots::write_plots};
use trident_infer::deployment::{Deployment, ModelsFrom, TablesChoice};
use trident_trainer::predict::Predictor;
use trident_trainer::train::select_device;

use crate::cli::{FuseMethod, ValArgs};
use crate::predict::{EnsembleSettings, ensemble_predictions, start_ensemble};
use crate::ui::{progress, table};
use trident_core::blame::Usage;

/// The confidence mAP is computed at (Ultralytics' `val` default).
const MAP_CONF: f32 = 0.001;

/// The predictions on the split, what made them, the class names and the operating confidence
/// (where the critical recall is read).
struct Predicted {
    preds: Vec<Prediction>,
    what: String,
    names: Vec<String>,
    operating_conf: f64,
}

pub fn run(a: ValArgs) -> anyhow::Result<ExitCode> {
    let ds = DatasetConfig::load(&a.data)?;
    if !ds.has_split(a.split) {
        return Err(Usage(format!("{}: has no `{}` split", a.data.display(), a.split)).into());
    }
    let critical: Vec<usize> = a
        .critical
        .iter()
        .map(|c| {
            ds.names.iter().position(|n| n == c.trim()).ok_or_else(|| {
                Usage(format!(
                    "--critical: `{c}` is not a class of {} ({})",
                    a.data.display(),
                    ds.names.join(", ")
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let bar = progress("labels");
    let truths = load_ground_truth(&ds, a.split, &bar)
        .with_context(|| format!("loading the {} split of {}", a.split, a.data.display()))?;
    bar.finish_and_clear();
    let images: Vec<PathBuf> = ds
        .list_images(a.split)?
        .into_iter()
        .map(|e| e.image)
        .collect();

    let p = predict(&a, &images)?;
    if p.names != ds.names {
        return Err(Usage(format!(
            "{} detects {} but {} names {}: the class ids would not mean the same species",
            p.what,
            p.names.join(", "),
            a.data.display(),
            ds.names.join(", ")
        ))
        .into());
    }
    if let Some(path) = &a.save_predictions {
        save_predictions(path, &p.preds)?;
    }
    let source = format!("predictions of {}", p.what);
    let index = match_predictions(&source, &truths, &p.preds, ds.num_classes())?;
    let ev = evaluate(&truths, &p.preds, &index, &ds.names)?;
    if let Some(dir) = &a.plots {
        for f in write_plots(&ev, dir)? {
            tracing::info!("wrote {}", f.display());
        }
    }
    let critical_recall: Vec<(String, Option<f64>)> = critical
        .iter()
        .map(|&c| (ds.names[c].clone(), ev.recall_at(c, p.operating_conf)))
        .collect();
    let below: Vec<String> = match a.min_recall {
        Some(floor) => critical_recall
            .iter()
            .filter(|(_, r)| r.is_none_or(|r| r < f64::from(floor)))
            .map(|(n, r)| match r {
                Some(r) => format!("{n} {r:.3}"),
                None => format!("{n} (no ground truth in the split)"),
            })
            .collect(),
        None => Vec::new(),
    };
    if a.json {
        let doc = json!({
            "model": p.what,
            "split": a.split.as_str(),
            "operating_conf": p.operating_conf,
            "evaluation": ev,
            "critical_recall": critical_recall.iter().map(|(n, r)| json!({"class": n, "recall": r})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} on the {} split of {} ({} images)",
            p.what,
            a.split,
            a.data.display(),
            truths.len()
        );
        print!("{}", crate::eval::render(&ev));
        if !critical_recall.is_empty() {
            let rows: Vec<Vec<String>> = critical_recall
                .iter()
                .map(|(n, r)| {
                    vec![
                        n.clone(),
                        r.map_or("-".into(), |r| format!("{r:.3}")),
                        a.min_recall.map_or("-".into(), |m| format!("{m:.2}")),
                    ]
                })
                .collect();
            println!(
                "critical classes, recall at the operating point (conf ≥ {:.3}, IoU 0.5):",
                p.operating_conf
            );
            print!("{}", table(&["class", "recall", "required"], &rows));
        }
        if let Some(dir) = &a.plots {
            println!("plots: {}", dir.display());
        }
    }
    if !below.is_empty() {
        bail!(
            "critical recall below --min-recall {}: {}",
            a.min_recall.unwrap_or_default(),
            below.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn predict(a: &ValArgs, images: &[PathBuf]) -> anyhow::Result<Predicted> {
    let bar = progress("predict");
    if let Some(checkpoint) = &a.checkpoint {
        let predictor = Predictor::load(checkpoint, select_device(&a.run.device)?)?;
        let conf = a.conf.unwrap_or(MAP_CONF);
        let opts = NmsOptions {
            conf,
            iou: a.run.iou,
            max_det: a.run.max_det,
            ..NmsOptions::inference(conf)
        };
        let (preds, _) = predictor.predict_images(images, &opts, a.run.batch, &bar)?;
        bar.finish_and_clear();
        return Ok(Predicted {
            preds,
            what: format!("checkpoint {}", checkpoint.display()),
            names: predictor.meta.spec.names.clone(),
            // The variant's floor: where the runtime cuts its output.
            operating_conf: f64::from(predictor.meta.conf_floor.max(conf)),
        });
    }
    let (deployment, what, single) = match (&a.onnx, &a.models, &a.package) {
        (Some(onnx), ..) => (one_onnx(onnx)?, format!("ONNX {}", onnx.display()), true),
        (_, Some(dir), _) => (
            Deployment::load(ModelsFrom::Dir(dir), TablesChoice::Auto)?,
            format!("models {}", dir.display()),
            false,
        ),
        (_, _, Some(pkg)) => (
            Deployment::load(ModelsFrom::Package(pkg), TablesChoice::Auto)?,
            format!("package {}", pkg.display()),
            false,
        ),
        _ => unreachable!("clap requires one model source"),
    };
    // One model alone: the fusion is plain NMS at the NMS IoU (changes nothing); an ensemble
    // fuses as the unit does.
    let settings = EnsembleSettings {
        backend: &a.run.backend,
        fusion: if single {
            FuseMethod::Nms
        } else {
            FuseMethod::Wbf
        },
        fusion_iou: if single { f64::from(a.run.iou) } else { 0.55 },
        iou: a.run.iou,
        max_det: a.run.max_det,
        conf: a.conf.or(single.then_some(MAP_CONF)),
        tta: a.tta,
    };
    let mut ensemble = start_ensemble(&deployment, &settings)?;
    let (preds, skipped) = ensemble_predictions(&mut ensemble, images, a.tta, &bar)?;
    bar.finish_and_clear();
    if skipped > 0 {
        tracing::warn!("{skipped} unreadable images skipped");
    }
    let operating_conf = if single {
        f64::from(deployment.set.models[0].card.conf_floor.unwrap_or(0.25))
    } else {
        // The ensemble's output is what a unit emits (floors and tables applied already).
        f64::from(a.conf.unwrap_or(0.0))
    };
    Ok(Predicted {
        preds,
        what,
        names: deployment.set.names.clone(),
        operating_conf,
    })
}

/// A deployment of one exported ONNX and its card, without tables.
fn one_onnx(onnx: &Path) -> anyhow::Result<Deployment> {
    use trident_core::model_card::ModelCard;
    use trident_infer::models::{LoadedModel, ModelSet};
    let card_path = ModelCard::path_for(onnx);
    if !card_path.is_file() {
        return Err(Usage(format!(
            "{}: no model card beside it ({}); bring the ONNX in with `trident export --onnx` first",
            onnx.display(),
            card_path.display()
        ))
        .into());
    }
    let card = ModelCard::load(&card_path)?;
    let bytes = std::fs::read(onnx).with_context(|| format!("cannot read {}", onnx.display()))?;
    let actual = trident_core::digest::sha256_hex(&bytes);
    if actual != card.sha256 {
        return Err(Usage(format!(
            "{}: sha256 {actual} does not match its card {}",
            onnx.display(),
            card_path.display()
        ))
        .into());
    }
    let set = ModelSet::from_models(vec![LoadedModel {
        card,
        onnx_path: onnx.to_path_buf(),
        bytes,
    }])?;
    Ok(Deployment {
        set,
        tables: None,
        manifest: None,
    })
}
