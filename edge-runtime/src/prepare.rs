//! `trident-edge prepare`: builds (or finds in the engine cache) the TensorRT engine of every model
//! in a model folder, then checks each engine against tract — the runtime's portable reference —
//! on the same synthetic letterboxed frames. An engine that disagrees, or cannot be run, is removed
//! from the cache, so every engine the runtime later loads from it has passed this check.
//!
//! First the TensorRT shim ([`trident_infer::trt_shim`]): the package's prebuilt one when it fits this
//! unit's TensorRT, else one built here from the package's shim source (cached). Engines are built
//! and run through it in-process ([`trident_tensorrt::TrtEngine`]), else through trtexec (one run
//! per frame). On a machine without an NVIDIA GPU or without TensorRT — every host and CI — there
//! is nothing to prepare: [`prepare`] returns a report that says so, and the runtime uses ONNX
//! Runtime or tract.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use trident_core::letterbox::LetterboxPlan;
use trident_tensorrt::{
    BuildRequest, DEFAULT_WORKSPACE_MIB, EngineBuilder, EngineCache, GpuFacts, Precision, Shim,
    TrtEngine, Trtexec, ensure_engine,
};

use crate::error::{Error, Result};
use trident_infer::backend::{self, BackendKind, BackendOptions, OnnxModel, default_engine_cache};
use trident_infer::models::{LoadedModel, ModelSet};
use trident_infer::trt_shim::{ShimOrigin, ShimPlan};

/// How close an engine's outputs must stay to tract's FP32 outputs on every validation frame.
///
/// FP16 keeps 11 significant bits (rounding 4.9e-4 per operation); a healthy FP16 engine of a
/// YOLOv8-sized network stays around 1e-3 relative to FP32 — about 0.001 on a sigmoid score, about
/// a pixel on a box coordinate of a 640 input — and finds the same objects. A broken engine (FP16
/// overflow to inf/NaN, a mis-imported operator, a wrongly fused layer) is off by the size of the
/// values themselves. The defaults sit about ten times above the first and far below the second:
/// a score within 0.02 can only flip a detection already within 0.02 of its floor, and 1 % of the
/// side (6.4 px at 640) is a tenth of a small (64 px) object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Largest |engine − tract| of a class score (scores are sigmoid outputs in 0–1).
    pub score_abs: f32,
    /// Largest |engine − tract| of a box coordinate (cx, cy, w, h), as a fraction of the input side.
    pub box_fraction: f32,
    /// Boxes are compared at each frame's this many best anchors by tract's best class score:
    /// detections come from those (NMS keeps at most 300), and they exist on every frame however
    /// unsure the model is of synthetic input. Other anchors' boxes are never used; an engine
    /// that scores them up is caught by the score limit.
    pub box_anchors: usize,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            score_abs: 0.02,
            box_fraction: 0.01,
            box_anchors: 100,
        }
    }
}

/// What to prepare, and how.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// A folder of exported models with their cards (as `trident-edge run --models`).
    pub models_dir: PathBuf,
    pub precision: Precision,
    /// Builder workspace, MiB.
    pub workspace_mib: u64,
    /// The engine cache (the runtime's, [`default_engine_cache`], unless told otherwise).
    pub cache_dir: PathBuf,
    /// Synthetic frames each engine is checked on.
    pub frames: usize,
    pub tolerance: Tolerance,
    /// The root file system with the TensorRT development files and compiler for an on-unit shim
    /// build (`/`; another root for a mounted image or a test's fake JetPack).
    pub root: PathBuf,
}

impl PrepareOptions {
    /// fp16, a 1 GiB workspace, the default engine cache, 8 frames, the default tolerance.
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        PrepareOptions {
            models_dir: models_dir.into(),
            precision: Precision::Fp16,
            workspace_mib: DEFAULT_WORKSPACE_MIB,
            cache_dir: default_engine_cache(),
            frames: 8,
            tolerance: Tolerance::default(),
            root: PathBuf::from("/"),
        }
    }
}

/// How built engines are run for validation.
#[derive(Clone, Debug)]
pub enum Validator {
    /// In-process through [`TrtEngine`], with this shim.
    Native(Arc<Shim>),
    /// One `trtexec --loadEngine … --exportOutput …` run per frame, with this program.
    Trtexec(PathBuf),
}

impl fmt::Display for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validator::Native(shim) => {
                write!(f, "the TensorRT runtime ({})", shim.path().display())
            }
            Validator::Trtexec(p) => write!(f, "trtexec ({})", p.display()),
        }
    }
}

/// What this machine offers for building and running engines; [`Toolchain::discover`] finds it,
/// tests construct it.
pub struct Toolchain {
    /// The GPU engines are built for, or why there is none.
    pub gpu: std::result::Result<GpuFacts, String>,
    /// The engine builder, or why there is none.
    pub builder: std::result::Result<Box<dyn EngineBuilder>, String>,
    /// How engines are validated; `None` when neither the runtime nor trtexec is available.
    pub validator: Option<Validator>,
    /// The shim in use and how it was found, or why there is none.
    pub shim: std::result::Result<(PathBuf, ShimOrigin), String>,
}

impl Toolchain {
    /// The GPU (`TRIDENT_GPU`, nvidia-smi, Jetson device tree), the shim (found or built on
    /// the unit by `plan`), the builder ([`trident_tensorrt::select_builder`]) and the validator:
    /// the in-process runtime when a shim loads, else trtexec (`$TRTEXEC`, `$PATH`, JetPack's path).
    pub fn discover(plan: &ShimPlan) -> Self {
        let gpu = trident_tensorrt::detect_gpu().map_err(|e| e.to_string());
        // No GPU: nothing will be built, so no shim is compiled either.
        let shim = match &gpu {
            Ok(_) => plan.open_or_build(),
            Err(_) => plan.open(),
        };
        let validator = match &shim {
            Ok((s, _)) => Some(Validator::Native(Arc::clone(s))),
            Err(_) => Trtexec::discover().map(|t| Validator::Trtexec(t.program().to_path_buf())),
        };
        Toolchain {
            gpu,
            builder: trident_tensorrt::select_builder(
                shim.as_ref()
                    .map(|(s, _)| Arc::clone(s))
                    .map_err(Clone::clone),
            )
            .map_err(|e| e.to_string()),
            validator,
            shim: shim.map(|(s, origin)| (s.path().to_path_buf(), origin)),
        }
    }
}

/// How far an engine's outputs were from tract's over the validation frames.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Agreement {
    pub frames: usize,
    /// Largest |engine − tract| of a box coordinate, input pixels (over the compared anchors).
    pub max_abs_box_px: f32,
    /// Largest |engine − tract| of a class score, over every anchor and class.
    pub max_abs_score: f32,
    /// Anchors (summed over frames) whose boxes were compared.
    pub boxes_compared: usize,
}

/// One model's engine, built or reused, and how it compared.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelReport {
    pub name: String,
    pub onnx: PathBuf,
    pub engine: PathBuf,
    /// True when built by this run, false when reused from the cache.
    pub built: bool,
    /// Seconds spent finding or building the engine.
    pub seconds: f64,
    /// Input side (the model's `imgsz`).
    pub side: usize,
    pub agreement: Agreement,
}

/// What [`prepare`] did. `Display` prints it as the command's output.
#[derive(Clone, Debug, PartialEq)]
pub struct PrepareReport {
    /// Why nothing was prepared (no GPU, no TensorRT), or `None` when engines were prepared.
    pub noop: Option<String>,
    /// What discovery reported, for a no-op (the messages list what was tried).
    pub noop_details: Vec<String>,
    /// The model names found in the folder.
    pub model_names: Vec<String>,
    pub cache_dir: PathBuf,
    pub precision: Precision,
    pub tolerance: Tolerance,
    pub gpu: Option<GpuFacts>,
    pub tensorrt_version: Option<String>,
    pub builder: Option<String>,
    /// The validator as text ("shim …", "trtexec (…)").
    pub validator: Option<String>,
    /// The TensorRT shim used and how it was found ("… (prebuilt)", "… (built on this unit)").
    pub shim: Option<String>,
    /// One entry per model, in ensemble order (empty for a no-op).
    pub models: Vec<ModelReport>,
}

impl PrepareReport {
    pub fn is_noop(&self) -> bool {
        self.noop.is_some()
    }
}

/// The report table's heading, aligned with its rows (format in `Display for PrepareReport`).
const TABLE_HEADING: &str =
    "  model            engine  seconds frames  box |Δ| px/limit   score |Δ|/limit   boxes  file";

impl fmt::Display for PrepareReport {
    /// A heading, the build and validation settings, then one table row per model; no trailing
    /// newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = Vec::new();
        if let Some(why) = &self.noop {
            lines.push(format!("trident-edge prepare: {why}"));
            lines.extend(self.noop_details.iter().map(|d| format!("  {d}")));
            lines.push(format!("  models: {}", self.model_names.join(", ")));
            return f.write_str(&lines.join("\n"));
        }
        let built = self.models.iter().filter(|m| m.built).count();
        lines.push(format!(
            "trident-edge prepare: {} TensorRT engine(s) ready in {} ({built} built, {} from the cache)",
            self.models.len(),
            self.cache_dir.display(),
            self.models.len() - built
        ));
        let gpu = self
            .gpu
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let validator = self.validator.as_deref().unwrap_or_default();
        lines.push(format!(
            "  {} on {gpu}, TensorRT {}, built with {}, checked with {validator} against tract",
            self.precision,
            self.tensorrt_version.as_deref().unwrap_or("?"),
            self.builder.as_deref().unwrap_or("?"),
        ));
        if let Some(shim) = &self.shim {
            lines.push(format!("  shim: {shim}"));
        }
        let t = &self.tolerance;
        lines.push(format!(
            "  tolerance: score ±{}, box ±{}% of the input side (at each frame's {} best anchors)",
            t.score_abs,
            t.box_fraction * 100.0,
            t.box_anchors
        ));
        lines.push(TABLE_HEADING.to_string());
        for m in &self.models {
            let a = &m.agreement;
            let limit = t.box_fraction * m.side as f32;
            lines.push(format!(
                "  {:<16} {:<6} {:>8.1} {:>6} {:>17} {:>17} {:>7}  {}",
                m.name,
                if m.built { "built" } else { "cached" },
                m.seconds,
                a.frames,
                format!("{:.3}/{limit:.3}", a.max_abs_box_px),
                format!("{:.4}/{}", a.max_abs_score, t.score_abs),
                a.boxes_compared,
                m.engine.display()
            ));
        }
        f.write_str(&lines.join("\n"))
    }
}

/// An engine that failed validation (and was removed from the cache).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationFailure {
    pub model: String,
    pub engine: PathBuf,
    /// The differences measured, when the engine ran on every frame.
    pub agreement: Option<Agreement>,
    pub reason: String,
}

impl fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model {}: {} (engine {})",
            self.model,
            self.reason,
            self.engine.display()
        )
    }
}

/// Prepares every model of `opts.models_dir` with this machine's GPU and TensorRT.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    let mut plan = ShimPlan::for_models_dir(&opts.models_dir, &opts.cache_dir);
    plan.root = opts.root.clone();
    prepare_with(opts, Toolchain::discover(&plan))
}

/// [`prepare`] with the toolchain given.
pub fn prepare_with(opts: &PrepareOptions, tools: Toolchain) -> Result<PrepareReport> {
    check_options(opts)?;
    let set = ModelSet::load_dir(&opts.models_dir)?;
    let mut report = PrepareReport {
        noop: None,
        noop_details: Vec::new(),
        model_names: set.models.iter().map(|m| m.name().to_string()).collect(),
        cache_dir: opts.cache_dir.clone(),
        precision: opts.precision,
        tolerance: opts.tolerance,
        gpu: tools.gpu.as_ref().ok().cloned(),
        tensorrt_version: None,
        builder: None,
        validator: tools.validator.as_ref().map(ToString::to_string),
        shim: tools.shim.as_ref().ok().map(|(path, origin)| {
            let how = match origin {
                ShimOrigin::Prebuilt => "prebuilt",
                ShimOrigin::Cached => "built on this unit earlier",
                ShimOrigin::BuiltNow => "built on this unit now",
            };
            format!("{} ({how})", path.display())
        }),
        models: Vec::new(),
    };
    let shim_problem = tools.shim.err();
    let (gpu, builder, validator) = match (tools.gpu, tools.builder, tools.validator) {
        (Ok(gpu), Ok(builder), Some(validator)) => (gpu, builder, validator),
        (gpu, builder, validator) => {
            let no_gpu = gpu.is_err();
            let no_trt = builder.is_err() || validator.is_none();
            report.noop_details = [
                gpu.err(),
                shim_problem.map(|p| format!("shim: {p}")),
                builder.err(),
            ]
            .into_iter()
            .flatten()
            .collect();
            if validator.is_none() {
                report.noop_details.push(
                    "no way to run engines (neither the in-process runtime nor trtexec)".into(),
                );
            }
            let what = match (no_gpu, no_trt) {
                (true, true) => "no NVIDIA GPU found and TensorRT not available",
                (true, false) => "no NVIDIA GPU found",
                _ => "TensorRT not available",
            };
            report.noop = Some(format!(
                "{what}: nothing to prepare; the runtime will use onnxruntime/tract"
            ));
            return Ok(report);
        }
    };
    report.tensorrt_version = Some(builder.tensorrt_version()?);
    report.builder = Some(builder.name().to_string());

    let cache = EngineCache::new(&opts.cache_dir);
    let mut failures = Vec::new();
    for model in &set.models {
        let side = model.card.imgsz as usize;
        let mut req = BuildRequest::new(&model.onnx_path, opts.precision, [1, 3, side, side]);
        req.workspace_mib = opts.workspace_mib;
        // The same timing cache as `trident export --engine`, so rebuilds skip timed kernels.
        req.timing_cache = Some(cache.root().join("timing.cache"));
        let started = Instant::now();
        let (engine, built) =
            ensure_engine(&cache, builder.as_ref(), &req, &model.card.sha256, &gpu)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            model = model.name(),
            engine = %engine.display(),
            built,
            seconds,
            "engine {}; validating against tract",
            if built { "built" } else { "found in the cache" }
        );
        let failure = |agreement: Option<Agreement>, reason: String| ValidationFailure {
            model: model.name().to_string(),
            engine: engine.clone(),
            agreement,
            reason,
        };
        let outcome = match validate(model, &engine, &validator, opts.frames, &opts.tolerance) {
            Ok(a) => match verdict(&a, &opts.tolerance, side) {
                None => Ok(a),
                Some(why) => Err(failure(Some(a), why)),
            },
            Err(e) => Err(failure(None, format!("could not be validated: {e}"))),
        };
        match outcome {
            Ok(agreement) => report.models.push(ModelReport {
                name: model.name().to_string(),
                onnx: model.onnx_path.clone(),
                engine,
                built,
                seconds,
                side,
                agreement,
            }),
            Err(mut f) => {
                tracing::error!(model = %f.model, reason = %f.reason, "engine failed validation; removing it");
                // Reported with the failure rather than instead of it: the failure is the news.
                if let Err(e) = cache.remove(&f.engine) {
                    f.reason
                        .push_str(&format!("; removing it from the cache failed too: {e}"));
                }
                failures.push(f);
            }
        }
    }
    if !failures.is_empty() {
        return Err(Error::EngineValidation(failures));
    }
    Ok(report)
}

/// Refuses options that would make validation meaningless (no frames, a NaN or negative limit).
fn check_options(opts: &PrepareOptions) -> Result<()> {
    let bad = |field: &str, message: String| {
        Err(Error::Core(trident_core::Error::invalid(
            format!("prepare: {field}"),
            message,
        )))
    };
    if opts.frames == 0 {
        return bad("frames", "0; validation needs at least one frame".into());
    }
    let t = &opts.tolerance;
    if t.box_anchors == 0 {
        return bad("box anchors", "0; boxes would go unchecked".into());
    }
    for (field, v) in [
        ("score tolerance", t.score_abs),
        ("box tolerance", t.box_fraction),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return bad(field, format!("{v}; expected a finite number ≥ 0"));
        }
    }
    Ok(())
}

/// Why `a` is outside `tol` for a `side`-pixel input, or `None` when it is within.
fn verdict(a: &Agreement, tol: &Tolerance, side: usize) -> Option<String> {
    let box_limit = tol.box_fraction * side as f32;
    // `compare` records NaN and infinity as infinite differences, so these never see NaN.
    let box_bad = a.max_abs_box_px > box_limit;
    let score_bad = a.max_abs_score > tol.score_abs;
    (box_bad || score_bad).then(|| {
        format!(
            "outputs differ from tract's beyond the tolerance over {} frames: max |Δ| box {:.3} px \
             (limit {box_limit:.3} px = {}% of {side}), max |Δ| score {:.4} (limit {})",
            a.frames,
            a.max_abs_box_px,
            tol.box_fraction * 100.0,
            a.max_abs_score,
            tol.score_abs
        )
    })
}

/// Runs the engine and tract on the same frames and measures the differences.
fn validate(
    model: &LoadedModel,
    engine: &Path,
    validator: &Validator,
    frames: usize,
    tolerance: &Tolerance,
) -> Result<Agreement> {
    let side = model.card.imgsz as usize;
    let shape = [1, 3, side, side];
    let onnx = OnnxModel {
        path: &model.onnx_path,
        bytes: &model.bytes,
    };
    let mut reference =
        backend::load(BackendKind::Tract, &onnx, shape, &BackendOptions::default())?;
    let mut runner = match validator {
        Validator::Native(shim) => Runner::Native(TrtEngine::load_named(
            shim,
            engine,
            &model.card.input.name,
            &model.card.output.name,
        )?),
        Validator::Trtexec(program) => Runner::Trtexec(Trtexec::at(program)),
    };
    let mut agreement = Agreement::default();
    let (mut expected, mut actual) = (Vec::new(), Vec::new());
    for input in validation_frames(side, frames) {
        let ref_shape = reference.run(&input, &mut expected)?;
        let got_shape = runner.run(model, engine, &input, &mut actual)?;
        compare(
            &mut agreement,
            (&expected, &ref_shape),
            (&actual, &got_shape),
            tolerance.box_anchors,
        )?;
    }
    Ok(agreement)
}

/// Where an engine runs during validation.
enum Runner {
    Native(TrtEngine),
    Trtexec(Trtexec),
}

impl Runner {
    fn run(
        &mut self,
        model: &LoadedModel,
        engine: &Path,
        input: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<Vec<usize>> {
        match self {
            Runner::Native(e) => Ok(e.run(input, out)?),
            Runner::Trtexec(t) => {
                let card = &model.card;
                let tensor = t.infer_output(engine, &card.input.name, input, &card.output.name)?;
                *out = tensor.values;
                Ok(tensor.shape)
            }
        }
    }
}

/// Folds one frame's differences into `a`. Both outputs are `[1, 4 + nc, N]`: rows 0–3 are the
/// box (cx, cy, w, h, input pixels), rows 4.. the class scores. Boxes are compared at the
/// `box_anchors` best anchors by tract's best class score.
fn compare(
    a: &mut Agreement,
    (expected, expected_shape): (&[f32], &[usize]),
    (actual, actual_shape): (&[f32], &[usize]),
    box_anchors: usize,
) -> Result<()> {
    if expected_shape != actual_shape || expected.len() != actual.len() {
        return Err(Error::Shape(format!(
            "the engine's output is {actual_shape:?} ({} values), tract's {expected_shape:?} ({} values)",
            actual.len(),
            expected.len()
        )));
    }
    let (rows, n) = match *expected_shape {
        [1, rows, n] if rows > 4 && rows * n == expected.len() => (rows, n),
        _ => {
            return Err(Error::Shape(format!(
                "output {expected_shape:?} is not the YOLOv8 layout [1, 4 + classes, anchors]"
            )));
        }
    };
    // NaN or infinity on either side counts as an infinite difference.
    let diff = |x: f32, y: f32| {
        let d = (x - y).abs();
        if d.is_finite() { d } else { f32::INFINITY }
    };
    let mut ranked: Vec<(f32, usize)> = Vec::with_capacity(n);
    for anchor in 0..n {
        let mut best = f32::NEG_INFINITY;
        for row in 4..rows {
            let (x, y) = (expected[row * n + anchor], actual[row * n + anchor]);
            a.max_abs_score = a.max_abs_score.max(diff(x, y));
            best = best.max(x);
        }
        ranked.push((best, anchor));
    }
    let k = box_anchors.min(n);
    if k < n {
        ranked.select_nth_unstable_by(k - 1, |p, q| q.0.total_cmp(&p.0));
    }
    for &(_, anchor) in &ranked[..k] {
        for row in 0..4 {
            let at = row * n + anchor;
            a.max_abs_box_px = a.max_abs_box_px.max(diff(expected[at], actual[at]));
        }
    }
    a.boxes_compared += k;
    a.frames += 1;
    Ok(())
}

/// Letterboxed synthetic frames for a `side`×`side` model, the same on every run and machine:
/// sources of four aspect ratios (16:9, 4:3, 1:1, 3:4, so the padding varies) with colour
/// gradients, a few solid rectangles and pixel noise from a fixed-seed xorshift generator. They
/// exercise every layer with varied activations; whether they look like fish does not matter for
/// comparing two runtimes of the same network.
pub fn validation_frames(side: usize, count: usize) -> Vec<Vec<f32>> {
    const ASPECTS: [(usize, usize); 4] = [(16, 9), (4, 3), (1, 1), (3, 4)];
    (0..count)
        .map(|i| {
            let (aw, ah) = ASPECTS[i % ASPECTS.len()];
            // The longer source side is 1.5× the input, so the letterbox downscales.
            let long = side * 3 / 2;
            let (w, h) = if aw >= ah {
                (long, (long * ah / aw).max(1))
            } else {
                ((long * aw / ah).max(1), long)
            };
            let mut rng = XorShift(
                0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            );
            let mut rgb = vec![0u8; w * h * 3];
            for y in 0..h {
                for x in 0..w {
                    let p = (y * w + x) * 3;
                    let noise = (rng.next() % 33) as i32 - 16;
                    let base = [x * 255 / w, y * 255 / h, (x + y) * 255 / (w + h)];
                    for c in 0..3 {
                        rgb[p + c] = (base[(c + i) % 3] as i32 + noise).clamp(0, 255) as u8;
                    }
                }
            }
            for _ in 0..3 + i % 4 {
                let (rw, rh) = (
                    1 + rng.next() as usize % (w / 3).max(1),
                    1 + rng.next() as usize % (h / 3).max(1),
                );
                let (x0, y0) = (
                    rng.next() as usize % (w - rw + 1),
                    rng.next() as usize % (h - rh + 1),
                );
                let colour = [rng.next() as u8, rng.next() as u8, rng.next() as u8];
                for y in y0..y0 + rh {
                    for x in x0..x0 + rw {
                        rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&colour);
                    }
                }
            }
            let mut chw = vec![0.0f32; 3 * side * side];
            LetterboxPlan::new(w as u32, h as u32, side as u32, side as u32).run(&rgb, &mut chw);
            chw
        })
        .collect()
}

/// xorshift64: a fixed sequence on every platform, unlike a library RNG across versions.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
