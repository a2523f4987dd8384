//! `trident export`: checkpoints or user ONNX → verified ONNX + model cards (+ FP16 twin).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use trident_core::model_card::{ModelCard, TaskFigure, Verification};
use trident_exporter::export::{ExportOptions, Exported, from_checkpoint, from_onnx};
use trident_exporter::inspect::Hints;
use trident_exporter::verify::{Reference, VerifySet, VerifySettings, verify, verify_half};
use trident_trainer::predict::Predictor;
use trident_trainer::train::select_device;

use crate::cli::ExportArgs;
use crate::ui::progress;

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    if a.package.package {
        let build = crate::cli::PackageBuildArgs::from_export(&a)
            .expect("clap requires --config with --package");
        return crate::package::build(&build);
    }
    let mut written = Vec::new();
    for path in &a.checkpoint {
        let t0 = Instant::now();
        let opts = ExportOptions {
            opset: a.opset,
            imgsz: a.imgsz,
            dynamic_batch: a.dynamic_batch,
            allow_unsupported: a.allow_unsupported,
        };
        let exported = from_checkpoint(path, &opts)
            .with_context(|| format!("exporting {}", path.display()))?;
        let data = match &a.data {
            Some(d) => Some(d.clone()),
            None if a.no_validate => None,
            None => Some(dataset_of_run(path)?),
        };
        written.push(
            finish(&a, exported, data.as_deref(), Some(path), t0)
                .with_context(|| format!("exporting {}", path.display()))?,
        );
    }
    for path in &a.onnx {
        let t0 = Instant::now();
        let hints = Hints {
            names: a.names.clone(),
            imgsz: a.imgsz,
        };
        let exported = from_onnx(path, &hints, a.allow_unsupported)
            .with_context(|| format!("importing {}", path.display()))?;
        written.push(
            finish(&a, exported, a.data.as_deref(), None, t0)
                .with_context(|| format!("importing {}", path.display()))?,
        );
    }
    if a.engine {
        build_engines(&a, &written).context(
            "the ONNX files and cards are written; TensorRT engines can also be built on the device with `trident-edge prepare`",
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds (or finds in the cache) one TensorRT engine per exported FP32 ONNX.
fn build_engines(a: &ExportArgs, written: &[(PathBuf, ModelCard)]) -> anyhow::Result<()> {
    use trident_tensorrt::{BuildRequest, EngineCache, detect_gpu, ensure_engine};
    let cache = EngineCache::new(
        a.engine_cache
            .clone()
            .unwrap_or_else(|| a.out.join("engines")),
    );
    // The same shim as on a unit: $TRIDENT_TRT_SHIM, else built once from this source tree against
    // the host's TensorRT (10.x on x86) into the engine cache; trtexec when neither works.
    let plan = trident_infer::trt_shim::ShimPlan {
        prebuilt: Vec::new(),
        source: Some(
            trident_tensorrt::shim_build::ShimSource::in_repository()
                .dir()
                .to_path_buf(),
        ),
        cache_dir: cache.root().to_path_buf(),
        root: PathBuf::from("/"),
    };
    let builder = trident_tensorrt::select_builder(plan.open_or_build().map(|(shim, _)| shim))?;
    let gpu = detect_gpu()?;
    let precision = a.precision;
    for (onnx, card) in written {
        let side = card.imgsz as usize;
        let mut req = BuildRequest::new(onnx, precision, [1, 3, side, side]);
        req.workspace_mib = a.workspace_mib;
        req.timing_cache = Some(cache.root().join("timing.cache"));
        let (engine, built) = ensure_engine(&cache, builder.as_ref(), &req, &card.sha256, &gpu)
            .with_context(|| format!("building a TensorRT engine from {}", onnx.display()))?;
        println!(
            "  engine ({precision}, {gpu}, {}): {} {}",
            builder.name(),
            engine.display(),
            if built { "built" } else { "from the cache" }
        );
    }
    Ok(())
}

/// Verifies (unless `--no-validate`), writes, and prints one model's figures.
fn finish(
    a: &ExportArgs,
    mut exported: Exported,
    data: Option<&Path>,
    checkpoint: Option<&PathBuf>,
    t0: Instant,
) -> anyhow::Result<(PathBuf, ModelCard)> {
    let mut half = match a.half {
        true => Some(exported.half()?),
        false => None,
    };
    if let Some((class, _)) = a
        .min_recall
        .iter()
        .find(|(c, _)| !exported.card.names.contains(c))
    {
        return Err(trident_core::blame::Usage(format!(
            "--min-recall: `{class}` is not a class of {} ({})",
            exported.card.file,
            exported.card.names.join(", ")
        ))
        .into());
    }
    if !a.no_validate {
        let side = exported.card.imgsz;
        let bar = progress("images");
        let set = match data {
            Some(yaml) => VerifySet::load(yaml, a.split, side, a.verify_images, &bar)
                .with_context(|| format!("loading verification images from {}", yaml.display()))?,
            // A model brought without a dataset: parity between backends on synthetic frames.
            None => VerifySet::synthetic(side, 4, 7),
        };
        bar.set_message("reference");
        let reference = match checkpoint {
            Some(path) => Some(tch_reference(path, &set, &a.device)?),
            None => None,
        };
        let v = verify(
            &exported,
            &set,
            reference.as_ref(),
            &VerifySettings {
                min_recall: a.min_recall.clone(),
                ..VerifySettings::default()
            },
            &bar,
        )?;
        if let Some((h, _)) = &mut half
            && !set.truths.is_empty()
        {
            let fp32 = onnx_figure(&v).clone();
            let fig = verify_half(h, &set, fp32.map50, a.fp16_max_drop, &bar)?;
            h.card.verification = Some(Verification {
                parity: Vec::new(),
                task: vec![fp32, fig],
                skipped: Vec::new(),
                ..v.clone()
            });
        }
        bar.finish_and_clear();
        exported.card.verification = Some(v);
    }
    let (onnx, _) = exported
        .write(&a.out)
        .with_context(|| format!("writing into {}", a.out.display()))?;
    print_summary(&exported.card, &onnx, t0.elapsed().as_secs_f64());
    if let Some((h, report)) = &half {
        let (path, _) = h.write(&a.out)?;
        let delta = h.card.verification.as_ref().map(|v| {
            let (f32_fig, f16_fig) = (&v.task[0], &v.task[1]);
            format!(
                "mAP50 {:.4} ({:+.2} points vs FP32)",
                f16_fig.map50,
                (f16_fig.map50 - f32_fig.map50) * 100.0
            )
        });
        println!(
            "  fp16 weights: {} tensors, {} values ({} clamped, {} flushed to zero), {}{} → {}",
            report.tensors,
            report.values,
            report.clamped,
            report.flushed,
            human_bytes(h.card.bytes),
            delta.map(|d| format!(", {d}")).unwrap_or_default(),
            path.display()
        );
    }
    Ok((onnx, exported.card))
}

/// The ONNX's own task figure (the first backend after the reference).
fn onnx_figure(v: &Verification) -> &TaskFigure {
    v.task
        .iter()
        .find(|t| t.runner == "tract")
        .unwrap_or(&v.task[0])
}

/// The checkpoint's tch forward pass on the verification images, in batches.
fn tch_reference(path: &Path, set: &VerifySet, device: &str) -> anyhow::Result<Reference> {
    let predictor = Predictor::load(path, select_device(device)?)?;
    let outputs = predictor.raw_outputs(&set.inputs, set.side, 16)?;
    Ok(Reference {
        name: "tch".into(),
        outputs,
    })
}

/// The dataset a checkpoint was trained on, from the run's metadata.json.
fn dataset_of_run(checkpoint: &Path) -> anyhow::Result<PathBuf> {
    let meta = checkpoint.with_file_name("metadata.json");
    let hint = "pass --data DATASET.yaml (or --no-validate to skip verification)";
    let text = std::fs::read_to_string(&meta).with_context(|| {
        format!(
            "no dataset to verify on: cannot read {}; {hint}",
            meta.display()
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not JSON; {hint}", meta.display()))?;
    value["dataset"]["yaml"]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("{}: no dataset.yaml recorded; {hint}", meta.display()))
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.0} KiB", b as f64 / 1024.0)
    }
}

fn shape(dims: &[trident_core::model_card::CardDim]) -> String {
    dims.iter()
        .map(|d| match d {
            trident_core::model_card::CardDim::Fixed(v) => v.to_string(),
            trident_core::model_card::CardDim::Symbolic(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join("×")
}

fn print_summary(card: &ModelCard, onnx: &Path, seconds: f64) {
    println!(
        "{}: {} → {} (opset {}, {} → {}, {}, sha256 {}…, {seconds:.1} s)",
        card.variant.as_deref().unwrap_or(&card.source.file),
        card.source.file,
        onnx.display(),
        card.opset,
        shape(&card.input.shape),
        shape(&card.output.shape),
        human_bytes(card.bytes),
        &card.sha256[..12],
    );
    let Some(v) = &card.verification else {
        println!("  not verified (--no-validate)");
        return;
    };
    let images = if v.dataset == "synthetic" {
        "synthetic frames".to_string()
    } else {
        format!("{} images", v.split)
    };
    for p in &v.parity {
        println!(
            "  parity {} vs {} on {} {images}: max |Δ| {:.1e} px on boxes, {:.1e} on scores ({})",
            p.backend,
            p.reference,
            p.images,
            p.max_abs_box,
            p.max_abs_score,
            if p.passed { "ok" } else { "FAILED" }
        );
    }
    if !v.task.is_empty() {
        let figures: Vec<String> = v
            .task
            .iter()
            .map(|t| format!("{} {:.4}", t.runner, t.map50))
            .collect();
        println!("  mAP50 on {}: {}", v.split, figures.join(", "));
    }
    for r in &v.recall {
        println!(
            "  recall of {} at conf {:.2} on {}: {} (required {})",
            r.class,
            r.conf,
            v.split,
            r.recall.map_or("-".into(), |x| format!("{x:.3}")),
            r.required
        );
    }
    for s in &v.skipped {
        println!("  skipped {s}");
    }
}
