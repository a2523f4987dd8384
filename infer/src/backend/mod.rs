//! Inference backends behind one trait, in the style of ONNX Runtime's execution providers: the
//! configured order is tried and every fallback is logged with its reason.
//!
//! - [`BackendKind::Tract`]: pure Rust, always compiled, runs everywhere (also aarch64).
//! - [`BackendKind::OnnxRuntime`]: feature `onnxruntime`; libonnxruntime is loaded at run time.
//! - [`BackendKind::TensorRt`]: always compiled; the model's TensorRT engine from the engine cache
//!   (see [`TensorRtOptions`]) through the shim library opened at run time
//!   ([`crate::trt_shim`]); where no shim loads, an error saying why (libnvinfer missing, another
//!   TensorRT minor, no shim built yet).

mod onnxruntime;
mod tensorrt;
mod tract;

/// [`load`] for TensorRT with explicit [`TensorRtOptions`] (cache, precision, workspace) instead
/// of the environment's defaults.
pub use tensorrt::load as load_tensorrt;
pub use tensorrt::{
    ENGINE_CACHE_ENV, SYSTEM_ENGINE_CACHE, TensorRtOptions, default_engine_cache,
    default_engine_cache_in,
};

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A loaded model for one fixed input shape. Buffers belong to the caller so that the steady
/// state allocates nothing per frame.
pub trait Backend: Send {
    fn kind(&self) -> BackendKind;
    /// `[batch, 3, height, width]`.
    fn input_shape(&self) -> [usize; 4];
    /// Runs `input` (NCHW float32, `input_shape` elements); writes the first output into `out`
    /// (cleared first) and returns its shape.
    fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>>;
    /// Arithmetic precision of the forward pass (`fp32`; an engine built for FP16 says `fp16`).
    fn precision(&self) -> String {
        "fp32".into()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Tract,
    OnnxRuntime,
    TensorRt,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::OnnxRuntime => "onnxruntime",
            BackendKind::TensorRt => "tensorrt",
        }
    }

    /// Whether this build contains the backend.
    pub fn compiled(self) -> bool {
        match self {
            BackendKind::Tract => true,
            BackendKind::OnnxRuntime => cfg!(feature = "onnxruntime"),
            // Compiled always; whether it can run is a matter of the unit (see trt_shim).
            BackendKind::TensorRt => true,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tract" => Ok(BackendKind::Tract),
            "onnxruntime" | "ort" => Ok(BackendKind::OnnxRuntime),
            "tensorrt" | "trt" => Ok(BackendKind::TensorRt),
            other => Err(Error::Shape(format!(
                "unknown backend `{other}`: expected tract, onnxruntime or tensorrt"
            ))),
        }
    }
}

/// Options every backend understands.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Intra-op threads (default: the backend's own choice).
    pub threads: Option<usize>,
    /// Let idle intra-op threads spin-wait for work (ONNX Runtime). Off by default: the
    /// ensemble runs its models concurrently, and spinning threads of one model take the cores
    /// the others are computing on.
    pub spinning: bool,
}

/// An ONNX model to load: its bytes and where they came from (for messages).
pub struct OnnxModel<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
}

/// Loads `model` with one backend.
pub fn load(
    kind: BackendKind,
    model: &OnnxModel<'_>,
    input_shape: [usize; 4],
    options: &BackendOptions,
) -> Result<Box<dyn Backend>> {
    match kind {
        BackendKind::Tract => Ok(Box::new(tract::TractBackend::load(
            model.bytes,
            input_shape,
        )?)),
        BackendKind::OnnxRuntime => onnxruntime::load(model.bytes, input_shape, options),
        // The engine cache, precision and workspace come from the environment's defaults:
        // `BackendOptions` is shared with backends that have no such settings.
        BackendKind::TensorRt => tensorrt::load(model, input_shape, &TensorRtOptions::default()),
    }
}

/// Tries `order` until one backend loads; each fallback is logged with the reason.
pub fn load_first(
    order: &[BackendKind],
    model: &OnnxModel<'_>,
    input_shape: [usize; 4],
    options: &BackendOptions,
) -> Result<Box<dyn Backend>> {
    load_first_explained(order, model, input_shape, options).map(|(b, _)| b)
}

/// [`load_first`], also returning why each backend before the one loaded did not load
/// (`"tensorrt: …"`), for the run summary, `/healthz` and `deploy status`.
pub fn load_first_explained(
    order: &[BackendKind],
    model: &OnnxModel<'_>,
    input_shape: [usize; 4],
    options: &BackendOptions,
) -> Result<(Box<dyn Backend>, Vec<String>)> {
    let mut reasons = Vec::new();
    for (i, &kind) in order.iter().enumerate() {
        match load(kind, model, input_shape, options) {
            Ok(backend) => {
                if i > 0 {
                    tracing::info!("{}: running on {kind}", model.path.display());
                }
                return Ok((backend, reasons));
            }
            Err(e) => {
                if let Some(next) = order.get(i + 1) {
                    tracing::warn!(
                        "{}: {kind} unavailable ({e}); falling back to {next}",
                        model.path.display()
                    );
                }
                reasons.push(format!("{kind}: {e}"));
            }
        }
    }
    Err(Error::NoBackend {
        model: PathBuf::from(model.path),
        reasons,
    })
}

/// Where the ONNX Runtime library is looked for: `ORT_DYLIB_PATH`, else the system's search path.
pub fn onnxruntime_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"))
}

fn check_input(kind: BackendKind, shape: [usize; 4], input: &[f32]) -> Result<()> {
    let want: usize = shape.iter().product();
    if input.len() != want {
        return Err(Error::Shape(format!(
            "{kind}: input has {} values, the model takes {shape:?} = {want}",
            input.len()
        )));
    }
    Ok(())
}
