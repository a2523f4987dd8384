//! Building through TensorRT's C++ API, via the shim library (`shim/trident_trt.cpp`, opened at run
//! time by [`crate::Shim`]).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::builder::{check_onnx, tail_lines};
use crate::outcome::{FailureHint, LOG_TAIL_LINES, classify_failure};
use crate::shim::{OK, OUT_OF_MEMORY, PARSE_FAILED};
use crate::{BuildReport, BuildRequest, EngineBuilder, Error, Precision, Result, Shim};

/// The in-process TensorRT builder of a loaded shim.
#[derive(Debug, Clone)]
pub struct NativeBuilder {
    shim: Arc<Shim>,
}

impl NativeBuilder {
    /// A builder over `shim` (which [`Shim::open`] already checked against the loaded TensorRT).
    pub fn new(shim: Arc<Shim>) -> Self {
        NativeBuilder { shim }
    }

    pub fn shim(&self) -> &Arc<Shim> {
        &self.shim
    }
}

impl EngineBuilder for NativeBuilder {
    fn name(&self) -> &'static str {
        "native"
    }

    /// The run-time library's version: that is what builds (and must later run) the engine.
    fn tensorrt_version(&self) -> Result<String> {
        Ok(self.shim.runtime_version().to_string())
    }

    /// Builds into a temporary file next to `engine_out` and renames it on success.
    fn build(&self, req: &BuildRequest, engine_out: &Path) -> Result<BuildReport> {
        check_onnx(req)?;
        let version = self.shim.runtime_version();
        if req.precision == Precision::Fp16 && !version.has_fp16_flag() {
            return Err(Error::PrecisionUnavailable {
                builder: self.name().to_string(),
                tensorrt_version: version.to_string(),
                message: "TensorRT 11 removed BuilderFlag::kFP16 (networks are strongly typed); export an fp16 ONNX and build it as fp32".into(),
            });
        }
        let dir = match engine_out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let partial = tempfile::Builder::new()
            .prefix(".native-engine.")
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .into_temp_path();
        let onnx = c_path(&req.onnx)?;
        let out = c_path(&partial)?;
        let cache = req.timing_cache.as_deref().map(c_path).transpose()?;
        let started = Instant::now();
        let (status, log) = self.shim.build(
            &onnx,
            &out,
            req.precision == Precision::Fp16,
            req.workspace_mib.saturating_mul(1 << 20),
            cache.as_deref(),
        );
        let seconds = started.elapsed().as_secs_f64();
        let hint = match status {
            OK => {
                partial
                    .persist(engine_out)
                    .map_err(|e| Error::io(engine_out, e.error))?;
                tracing::info!(engine = %engine_out.display(), seconds, "TensorRT built the engine");
                return Ok(BuildReport {
                    builder: self.name().to_string(),
                    tensorrt_version: version.to_string(),
                    seconds,
                    log_tail: tail_lines(&log, LOG_TAIL_LINES),
                });
            }
            OUT_OF_MEMORY => FailureHint::OutOfMemory,
            PARSE_FAILED => FailureHint::ParseFailed,
            _ => FailureHint::Unknown,
        };
        let message = format!("the TensorRT builder failed (shim status {status})");
        Err(classify_failure(
            self.name(),
            &req.onnx,
            req.workspace_mib,
            &log,
            hint,
            message,
        ))
    }
}

pub(crate) fn c_path(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::BadInput {
        path: p.to_path_buf(),
        expected: "a path without NUL bytes".into(),
    })
}
