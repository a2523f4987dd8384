//! Building through TensorRT's C++ API, via the small C shim in `shim/trident_trt.cpp` (feature
//! `tensorrt`). Without the feature the type still exists and says how to get it, so callers need no
//! `cfg` of their own. All `unsafe` of the crate lives in the `ffi` module below.

use std::path::Path;

use crate::{BuildReport, BuildRequest, EngineBuilder, Error, Result};

/// The in-process TensorRT builder. Only constructible through [`NativeBuilder::new`], which fails
/// with [`Error::NotCompiled`] unless the crate was built with `--features tensorrt`.
#[derive(Debug)]
pub struct NativeBuilder {
    _private: (),
}

impl NativeBuilder {
    #[cfg(not(feature = "tensorrt"))]
    pub fn new() -> Result<Self> {
        Err(Error::NotCompiled("tensorrt"))
    }

    /// Checks that the TensorRT library loaded at run time is the one the shim was compiled
    /// against (same major.minor; the dynamic linker already pins the major through the soname).
    #[cfg(feature = "tensorrt")]
    pub fn new() -> Result<Self> {
        let compiled = ffi::compiled_version();
        let runtime = ffi::runtime_version().ok_or_else(|| Error::Tool {
            program: "libnvinfer".into(),
            message: "getInferLibVersion() returned a number that is not a TensorRT version".into(),
        })?;
        if (compiled.major, compiled.minor) != (runtime.major, runtime.minor) {
            return Err(Error::Tool {
                program: "libnvinfer".into(),
                message: format!(
                    "the native builder was compiled against TensorRT {compiled} but TensorRT {runtime} is loaded; \
                     rebuild trident on this machine or use trtexec"
                ),
            });
        }
        Ok(NativeBuilder { _private: () })
    }
}

impl EngineBuilder for NativeBuilder {
    fn name(&self) -> &'static str {
        "native"
    }

    #[cfg(not(feature = "tensorrt"))]
    fn tensorrt_version(&self) -> Result<String> {
        Err(Error::NotCompiled("tensorrt"))
    }

    #[cfg(not(feature = "tensorrt"))]
    fn build(&self, _req: &BuildRequest, _engine_out: &Path) -> Result<BuildReport> {
        Err(Error::NotCompiled("tensorrt"))
    }

    /// The run-time library's version: that is what builds (and must later run) the engine.
    #[cfg(feature = "tensorrt")]
    fn tensorrt_version(&self) -> Result<String> {
        Ok(ffi::runtime_version()
            .unwrap_or_else(ffi::compiled_version)
            .to_string())
    }

    #[cfg(feature = "tensorrt")]
    fn build(&self, req: &BuildRequest, engine_out: &Path) -> Result<BuildReport> {
        compiled::build(self, req, engine_out)
    }
}

#[cfg(feature = "tensorrt")]
mod compiled {
    use std::ffi::CString;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use super::ffi;
    use crate::builder::{check_onnx, tail_lines};
    use crate::outcome::{FailureHint, LOG_TAIL_LINES, classify_failure};
    use crate::{BuildReport, BuildRequest, EngineBuilder, Error, Precision, Result};

    /// Builds into a temporary file next to `engine_out` and renames it on success.
    pub(super) fn build(
        b: &super::NativeBuilder,
        req: &BuildRequest,
        engine_out: &Path,
    ) -> Result<BuildReport> {
        check_onnx(req)?;
        let version = ffi::runtime_version().unwrap_or_else(ffi::compiled_version);
        if req.precision == Precision::Fp16 && !version.has_fp16_flag() {
            return Err(Error::PrecisionUnavailable {
                builder: b.name().to_string(),
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
        let (status, log) = ffi::build(
            &onnx,
            &out,
            req.precision == Precision::Fp16,
            req.workspace_mib.saturating_mul(1 << 20),
            cache.as_deref(),
        );
        let seconds = started.elapsed().as_secs_f64();
        let hint = match status {
            ffi::OK => {
                partial
                    .persist(engine_out)
                    .map_err(|e| Error::io(engine_out, e.error))?;
                tracing::info!(engine = %engine_out.display(), seconds, "TensorRT built the engine");
                return Ok(BuildReport {
                    builder: b.name().to_string(),
                    tensorrt_version: version.to_string(),
                    seconds,
                    log_tail: tail_lines(&log, LOG_TAIL_LINES),
                });
            }
            ffi::OUT_OF_MEMORY => FailureHint::OutOfMemory,
            ffi::PARSE_FAILED => FailureHint::ParseFailed,
            _ => FailureHint::Unknown,
        };
        let message = format!("the TensorRT builder failed (shim status {status})");
        Err(classify_failure(
            b.name(),
            &req.onnx,
            req.workspace_mib,
            &log,
            hint,
            message,
        ))
    }

    fn c_path(p: &Path) -> Result<CString> {
        use std::os::unix::ffi::OsStrExt;
        CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::BadInput {
            path: p.to_path_buf(),
            expected: "a path without NUL bytes".into(),
        })
    }
}

/// Declarations of `shim/trident_trt.h` and safe wrappers around them.
#[cfg(feature = "tensorrt")]
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{CStr, c_char, c_int};

    use crate::TrtVersion;

    pub const OK: c_int = 0;
    pub const OUT_OF_MEMORY: c_int = 2;
    pub const PARSE_FAILED: c_int = 3;

    /// Size of the log buffer handed to the shim; it keeps the tail of the log when longer.
    const LOG_BYTES: usize = 64 * 1024;

    unsafe extern "C" {
        fn trident_trt_compiled_version(major: *mut i32, minor: *mut i32, patch: *mut i32);
        fn trident_trt_runtime_version() -> i32;
        fn trident_trt_build(
            onnx_path: *const c_char,
            engine_path: *const c_char,
            fp16: c_int,
            workspace_bytes: u64,
            timing_cache_path: *const c_char,
            log: *mut c_char,
            log_len: usize,
        ) -> c_int;
    }

    /// NV_TENSORRT_MAJOR/MINOR/PATCH of the headers the shim was compiled with.
    pub fn compiled_version() -> TrtVersion {
        let (mut major, mut minor, mut patch) = (0i32, 0i32, 0i32);
        // SAFETY: the three pointers are valid, aligned, writable i32s for the duration of the call;
        // the shim only stores compile-time constants through them.
        unsafe { trident_trt_compiled_version(&mut major, &mut minor, &mut patch) };
        let u = |v: i32| u32::try_from(v).unwrap_or(0);
        TrtVersion::new(u(major), u(minor), u(patch))
    }

    /// getInferLibVersion() of the loaded libnvinfer, decoded.
    pub fn runtime_version() -> Option<TrtVersion> {
        // SAFETY: takes no arguments; getInferLibVersion() only returns a constant of the library.
        let n = unsafe { trident_trt_runtime_version() };
        TrtVersion::from_encoded(u32::try_from(n).ok()?)
    }

    /// Runs the shim's build; returns its status and captured log.
    pub fn build(
        onnx: &CStr,
        engine: &CStr,
        fp16: bool,
        workspace_bytes: u64,
        timing_cache: Option<&CStr>,
    ) -> (c_int, String) {
        let mut log = vec![0u8; LOG_BYTES];
        let cache_ptr = timing_cache.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: `onnx`, `engine` and (if non-null) `cache_ptr` are NUL-terminated strings borrowed
        // for the whole call; `log` is a writable buffer of exactly `log.len()` bytes that the shim
        // NUL-terminates within that length; the shim catches every C++ exception, so none unwinds
        // into Rust; it keeps no pointer after returning.
        let status = unsafe {
            trident_trt_build(
                onnx.as_ptr(),
                engine.as_ptr(),
                c_int::from(fp16),
                workspace_bytes,
                cache_ptr,
                log.as_mut_ptr().cast::<c_char>(),
                log.len(),
            )
        };
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        (status, String::from_utf8_lossy(&log[..end]).into_owned())
    }
}
