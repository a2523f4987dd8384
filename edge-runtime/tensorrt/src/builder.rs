//! The builder abstraction: what a build is asked to do and what it reports back, independent of
//! whether TensorRT is reached through its C++ API or through the trtexec program.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Result;

/// The precision an engine is built for. `Fp16` allows fp16 kernels (with fp32 fallback); the Nano's
/// Maxwell GPU runs them about twice as fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            _ => Err(format!("{s:?} is not a precision; expected fp32 or fp16")),
        }
    }
}

/// Default builder workspace: 1 GiB. A Jetson Nano has 4 GB shared by CPU and GPU; TensorRT's
/// default (the whole device memory from 8.4 on) lets tactic search starve the rest of the system.
pub const DEFAULT_WORKSPACE_MIB: u64 = 1024;

/// One engine build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// The ONNX model to build from.
    pub onnx: PathBuf,
    pub precision: Precision,
    /// Upper bound on TensorRT's scratch memory during tactic search, in MiB.
    pub workspace_mib: u64,
    /// A TensorRT timing cache to read and update, so rebuilds (a new export, another precision)
    /// skip already-timed kernels; `None` times every kernel afresh.
    pub timing_cache: Option<PathBuf>,
    /// The model's static input shape (N, C, H, W). trident exports static shapes, so no
    /// `--minShapes/--optShapes/--maxShapes` (or optimisation profile) is passed; the shape is only
    /// part of the cache key.
    pub input_shape: [usize; 4],
}

impl BuildRequest {
    /// A request with the default workspace and no timing cache.
    pub fn new(onnx: impl Into<PathBuf>, precision: Precision, input_shape: [usize; 4]) -> Self {
        BuildRequest {
            onnx: onnx.into(),
            precision,
            workspace_mib: DEFAULT_WORKSPACE_MIB,
            timing_cache: None,
            input_shape,
        }
    }
}

/// What a successful build reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// The builder's [`EngineBuilder::name`].
    pub builder: String,
    pub tensorrt_version: String,
    /// Wall-clock build time.
    pub seconds: f64,
    /// The last lines of the builder's log (warnings are worth showing even on success).
    pub log_tail: String,
}

/// Turns an ONNX file into a serialized TensorRT engine.
pub trait EngineBuilder: Send + Sync {
    /// Short name recorded in the cache sidecar and in messages ("trtexec", "native").
    fn name(&self) -> &'static str;

    /// The TensorRT version engines from this builder are built with, e.g. "8.2.1".
    fn tensorrt_version(&self) -> Result<String>;

    /// Builds `req` into `engine_out`. Implementations write to a temporary file next to
    /// `engine_out` and rename it on success, so `engine_out` is either a complete engine or absent.
    fn build(&self, req: &BuildRequest, engine_out: &Path) -> Result<BuildReport>;
}

/// Checks that the request's ONNX file exists before any tool runs, so a typo is reported as the
/// user's mistake rather than as a TensorRT failure.
pub(crate) fn check_onnx(req: &BuildRequest) -> Result<()> {
    if req.onnx.is_file() {
        Ok(())
    } else {
        Err(crate::Error::BadInput {
            path: req.onnx.clone(),
            expected: "an ONNX model file (it does not exist or is not a file)".to_string(),
        })
    }
}

/// The last `n` lines of `log`, for error messages.
pub(crate) fn tail_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_text_forms() {
        assert_eq!(serde_json::to_string(&Precision::Fp16).unwrap(), "\"fp16\"");
        assert_eq!(
            serde_json::from_str::<Precision>("\"fp32\"").unwrap(),
            Precision::Fp32
        );
        assert_eq!(Precision::Fp16.to_string(), "fp16");
        assert_eq!("FP16".parse::<Precision>(), Ok(Precision::Fp16));
        assert!("int8".parse::<Precision>().is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let log: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let t = tail_lines(&log, 20);
        assert!(t.starts_with("line 11\n") && t.ends_with("line 30"), "{t}");
        assert_eq!(tail_lines("a\nb", 20), "a\nb");
    }
}
