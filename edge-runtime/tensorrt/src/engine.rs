//! Running a serialized engine in-process through the shim's engine runtime
//! (`shim/trident_trt_engine.cpp`, in the shim library [`crate::Shim`] opens). trident's engines take one float32 input
//! `images` `[1, 3, H, W]` and give a float32 `output0` `[1, 4 + nc, N]`, even when built fp16:
//! TensorRT keeps the ONNX's IO types unless told otherwise, so no conversion happens here.
//! The FFI itself is in [`crate::shim`]; this module owns the handle.

use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::shim::{BAD_ENGINE, BAD_IO, CUDA, MAX_DIMS, OK, OUT_OF_MEMORY, RawEngine, RawInfo};
use crate::{Error, Result, Shim};

/// The input trident's exports (and Ultralytics') name.
pub const INPUT_NAME: &str = "images";
/// The output trident's exports (and Ultralytics') name.
pub const OUTPUT_NAME: &str = "output0";

/// The name and static shape of an engine's input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A deserialized engine with its execution context, CUDA stream and device buffers, all
/// allocated by [`Self::load`] and reused by every [`Self::run`]; dropping it frees them.
pub struct TrtEngine {
    path: PathBuf,
    input: TensorInfo,
    output: TensorInfo,
    handle: Handle,
}

impl fmt::Debug for TrtEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrtEngine")
            .field("path", &self.path)
            .field("input", &self.input)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl TrtEngine {
    /// Loads the engine at `path`, feeding its only input and reading its first output, whatever
    /// their names (a model brought as ONNX may not use `images`/`output0`).
    pub fn load(shim: &Arc<Shim>, path: impl AsRef<Path>) -> Result<Self> {
        Self::load_io(shim, path.as_ref(), None, None)
    }

    /// Loads the engine at `path` with the input and output chosen by name (looked up with
    /// `getBindingIndex` on TensorRT 8.2, by IO tensor name from 8.5).
    pub fn load_named(
        shim: &Arc<Shim>,
        path: impl AsRef<Path>,
        input: &str,
        output: &str,
    ) -> Result<Self> {
        Self::load_io(shim, path.as_ref(), Some(input), Some(output))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input fed by [`Self::run`].
    pub fn input(&self) -> &TensorInfo {
        &self.input
    }

    /// The output [`Self::run`] returns.
    pub fn output(&self) -> &TensorInfo {
        &self.output
    }

    fn load_io(
        shim: &Arc<Shim>,
        path: &Path,
        input: Option<&str>,
        output: Option<&str>,
    ) -> Result<Self> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;

        let c = |what: &str, s: &[u8]| {
            CString::new(s).map_err(|_| Error::BadInput {
                path: path.to_path_buf(),
                expected: format!("{what} without NUL bytes"),
            })
        };
        let c_path = c("a path", path.as_os_str().as_bytes())?;
        let c_input = input
            .map(|s| c("an input name", s.as_bytes()))
            .transpose()?;
        let c_output = output
            .map(|s| c("an output name", s.as_bytes()))
            .transpose()?;
        let (raw, in_info, out_info) = shim
            .engine_load(&c_path, c_input.as_deref(), c_output.as_deref())
            .map_err(|(status, log)| failure(path, status, &log))?;
        let handle = Handle {
            shim: Arc::clone(shim),
            raw,
            log: vec![0u8; LOG_BYTES],
        };
        let shape = |info: &Info| -> Result<TensorInfo> {
            let dims = info
                .dims
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<usize>, _>>()
                .map_err(|_| Error::Engine {
                    engine: path.to_path_buf(),
                    message: format!("tensor {} has a dynamic shape {:?}", info.name, info.dims),
                    log_tail: String::new(),
                })?;
            Ok(TensorInfo {
                name: info.name.clone(),
                shape: dims,
            })
        };
        let engine = TrtEngine {
            path: path.to_path_buf(),
            input: shape(&Info::from_raw(&in_info))?,
            output: shape(&Info::from_raw(&out_info))?,
            handle,
        };
        tracing::info!(
            engine = %path.display(),
            input = ?engine.input,
            output = ?engine.output,
            "TensorRT engine loaded"
        );
        Ok(engine)
    }

    /// Runs one inference on `input` (exactly [`Self::input`]`.len()` values, NCHW). `out` is
    /// cleared and filled with the output (its capacity is reused, so a caller that keeps it
    /// allocates nothing per frame); the output's shape is returned.
    pub fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>> {
        if input.len() != self.input.len() {
            return Err(Error::Engine {
                engine: self.path.clone(),
                message: format!(
                    "input has {} values; {} {:?} takes {}",
                    input.len(),
                    self.input.name,
                    self.input.shape,
                    self.input.len()
                ),
                log_tail: String::new(),
            });
        }
        out.clear();
        out.resize(self.output.len(), 0.0);
        self.handle
            .run(input, out)
            .map_err(|(status, log)| failure(&self.path, status, &log))?;
        Ok(self.output.shape.clone())
    }
}

/// The error for a shim status other than OK, with what the status means for the user.
fn failure(path: &Path, status: std::ffi::c_int, log: &str) -> Error {
    let message = match status {
        BAD_ENGINE => "not an engine this TensorRT can load on this GPU (built by another \
            TensorRT version or for another GPU, or corrupt); delete it and rebuild it with \
            `trident-edge prepare`"
            .to_string(),
        BAD_IO => "its input/output is not what trident expects (one float32 input, float32 \
            output, static shapes)"
            .to_string(),
        OUT_OF_MEMORY => "out of GPU memory; close other processes using the GPU (on a \
            Jetson Nano the 4 GB are shared with the CPU)"
            .to_string(),
        CUDA => "a CUDA runtime call failed (no usable GPU, or a driver that does not match)"
            .to_string(),
        s => format!("TensorRT failed (shim status {s})"),
    };
    Error::Engine {
        engine: path.to_path_buf(),
        message,
        log_tail: crate::builder::tail_lines(log, crate::LOG_TAIL_LINES),
    }
}

/// Log buffer size. Each handle owns one, so a run allocates nothing.
const LOG_BYTES: usize = 16 * 1024;

/// A tensor as the shim reported it.
struct Info {
    name: String,
    dims: Vec<i64>,
}

impl Info {
    fn from_raw(raw: &RawInfo) -> Self {
        let bytes: Vec<u8> = raw
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        let n = usize::try_from(raw.nb_dims).unwrap_or(0).min(MAX_DIMS);
        Info {
            name: String::from_utf8_lossy(&bytes).into_owned(),
            dims: raw.dims[..n].to_vec(),
        }
    }
}

/// Owns one `trident_trt_engine` (freed on drop), the shim that made it (kept loaded while the
/// handle lives) and the log buffer its runs write to.
struct Handle {
    shim: Arc<Shim>,
    raw: NonNull<RawEngine>,
    log: Vec<u8>,
}

// SAFETY: the handle is only reachable through `&mut Handle` for runs (so never from two threads at
// once, which is all TensorRT asks of an execution context), and everything it owns may move between
// threads: the CUDA runtime's primary context is shared by every host thread of the process, so
// device buffers and the stream stay valid on any thread; the shim keeps no thread-local state
// between calls (its log sink is set and reset within each call).
#[allow(unsafe_code)]
unsafe impl Send for Handle {}

impl Drop for Handle {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `raw` came from a successful load of this shim, is owned by this handle alone and
        // is freed exactly once, here; the shim waits for queued work before freeing.
        unsafe { self.shim.engine_free(self.raw) }
    }
}

impl Handle {
    /// One inference; `input` and `output` must have the element counts the load reported (the
    /// shim checks and refuses otherwise).
    #[allow(unsafe_code)]
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), (std::ffi::c_int, String)> {
        if let Some(first) = self.log.first_mut() {
            *first = 0;
        }
        // SAFETY: `raw` is a live engine of `shim`, and `&mut self` guarantees no other call uses it
        // at the same time.
        let status = unsafe { self.shim.engine_run(self.raw, input, output, &mut self.log) };
        if status == OK {
            Ok(())
        } else {
            Err((status, crate::shim::log_text(&self.log)))
        }
    }
}
