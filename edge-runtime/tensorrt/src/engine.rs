//! Running a serialized engine in-process through the shim's engine runtime
//! (`shim/trident_trt_engine.cpp`, feature `tensorrt`). trident's engines take one float32 input
//! `images` `[1, 3, H, W]` and give a float32 `output0` `[1, 4 + nc, N]`, even when built fp16:
//! TensorRT keeps the ONNX's IO types unless told otherwise, so no conversion happens here.
//!
//! Without the feature the type exists with the same API and [`TrtEngine::load`] returns
//! [`Error::NotCompiled`], so callers need no `cfg` of their own. All `unsafe` lives in `ffi`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

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
    #[cfg(feature = "tensorrt")]
    handle: ffi::Handle,
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
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_io(path.as_ref(), None, None)
    }

    /// Loads the engine at `path` with the input and output chosen by name (looked up with
    /// `getBindingIndex` on TensorRT 8.2, by IO tensor name from 8.5).
    pub fn load_named(path: impl AsRef<Path>, input: &str, output: &str) -> Result<Self> {
        Self::load_io(path.as_ref(), Some(input), Some(output))
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

    #[cfg(not(feature = "tensorrt"))]
    fn load_io(_path: &Path, _input: Option<&str>, _output: Option<&str>) -> Result<Self> {
        Err(Error::NotCompiled("tensorrt"))
    }

    /// Runs one inference on `input` (exactly [`Self::input`]`.len()` values, NCHW). `out` is
    /// cleared and filled with the output (its capacity is reused, so a caller that keeps it
    /// allocates nothing per frame); the output's shape is returned.
    #[cfg(not(feature = "tensorrt"))]
    pub fn run(&mut self, _input: &[f32], _out: &mut Vec<f32>) -> Result<Vec<usize>> {
        Err(Error::NotCompiled("tensorrt"))
    }

    #[cfg(feature = "tensorrt")]
    fn load_io(path: &Path, input: Option<&str>, output: Option<&str>) -> Result<Self> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;

        // The same check the builder makes: the shim's C++ ABI is that of the headers it was
        // compiled against, so the loaded libnvinfer must have the same major.minor.
        crate::NativeBuilder::new()?;
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
        let loaded = ffi::load(&c_path, c_input.as_deref(), c_output.as_deref())
            .map_err(|(status, log)| failure(path, status, &log))?;
        let shape = |info: &ffi::Info| -> Result<TensorInfo> {
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
            input: shape(&loaded.input)?,
            output: shape(&loaded.output)?,
            handle: loaded.handle,
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
    #[cfg(feature = "tensorrt")]
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
#[cfg(feature = "tensorrt")]
fn failure(path: &Path, status: std::ffi::c_int, log: &str) -> Error {
    let message = match status {
        ffi::BAD_ENGINE => "not an engine this TensorRT can load on this GPU (built by another \
            TensorRT version or for another GPU, or corrupt); delete it and rebuild it with \
            `trident-edge prepare`"
            .to_string(),
        ffi::BAD_IO => "its input/output is not what trident expects (one float32 input, float32 \
            output, static shapes)"
            .to_string(),
        ffi::OUT_OF_MEMORY => "out of GPU memory; close other processes using the GPU (on a \
            Jetson Nano the 4 GB are shared with the CPU)"
            .to_string(),
        ffi::CUDA => "a CUDA runtime call failed (no usable GPU, or a driver that does not match)"
            .to_string(),
        s => format!("TensorRT failed (shim status {s})"),
    };
    Error::Engine {
        engine: path.to_path_buf(),
        message,
        log_tail: crate::builder::tail_lines(log, crate::LOG_TAIL_LINES),
    }
}

/// Declarations of the runtime half of `shim/trident_trt.h` and safe wrappers around them.
#[cfg(feature = "tensorrt")]
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{CStr, c_char, c_int};
    use std::marker::{PhantomData, PhantomPinned};
    use std::ptr::NonNull;

    pub const OUT_OF_MEMORY: c_int = 2;
    pub const BAD_ENGINE: c_int = 4;
    pub const BAD_IO: c_int = 5;
    pub const CUDA: c_int = 6;
    const OK: c_int = 0;

    const MAX_DIMS: usize = 8;
    const NAME_BYTES: usize = 256;
    /// Log buffer size. Each handle owns one, so a run allocates nothing.
    const LOG_BYTES: usize = 16 * 1024;

    /// `trident_trt_engine`: opaque, only ever behind a pointer (the Nomicon's opaque-type
    /// pattern: not constructible, not Send/Sync/Unpin by itself).
    #[repr(C)]
    pub struct RawEngine {
        _data: [u8; 0],
        _marker: PhantomData<(*mut u8, PhantomPinned)>,
    }

    /// `trident_trt_tensor_info`.
    #[repr(C)]
    struct RawInfo {
        name: [c_char; NAME_BYTES],
        nb_dims: i32,
        dims: [i64; MAX_DIMS],
    }

    unsafe extern "C" {
        fn trident_trt_engine_load(
            engine_path: *const c_char,
            input_name: *const c_char,
            output_name: *const c_char,
            out: *mut *mut RawEngine,
            input: *mut RawInfo,
            output: *mut RawInfo,
            log: *mut c_char,
            log_len: usize,
        ) -> c_int;
        fn trident_trt_engine_run(
            engine: *mut RawEngine,
            input: *const f32,
            input_len: usize,
            output: *mut f32,
            output_len: usize,
            log: *mut c_char,
            log_len: usize,
        ) -> c_int;
        fn trident_trt_engine_free(engine: *mut RawEngine);
    }

    /// A tensor as the shim reported it.
    pub struct Info {
        pub name: String,
        pub dims: Vec<i64>,
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

    /// Owns one `trident_trt_engine` (freed on drop) and the log buffer its runs write to.
    pub struct Handle {
        raw: NonNull<RawEngine>,
        log: Vec<u8>,
    }

    // SAFETY: the handle is only reachable through `&mut Handle` for runs (so never from two
    // threads at once, which is all TensorRT asks of an execution context), and everything it
    // owns may move between threads: the CUDA runtime's primary context is shared by every host
    // thread of the process, so device buffers and the stream stay valid on any thread; the shim
    // keeps no thread-local state between calls (its log sink is set and reset within each call).
    unsafe impl Send for Handle {}

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: `raw` came from a successful trident_trt_engine_load, is owned by this handle
            // alone and is freed exactly once, here; the shim waits for queued work before freeing.
            unsafe { trident_trt_engine_free(self.raw.as_ptr()) }
        }
    }

    pub struct Loaded {
        pub handle: Handle,
        pub input: Info,
        pub output: Info,
    }

    fn log_text(log: &[u8]) -> String {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        String::from_utf8_lossy(&log[..end]).into_owned()
    }

    /// Deserializes the engine; on failure returns the shim's status and log.
    pub fn load(
        path: &CStr,
        input: Option<&CStr>,
        output: Option<&CStr>,
    ) -> Result<Loaded, (c_int, String)> {
        let mut log = vec![0u8; LOG_BYTES];
        let mut raw: *mut RawEngine = std::ptr::null_mut();
        let blank = || RawInfo {
            name: [0; NAME_BYTES],
            nb_dims: 0,
            dims: [0; MAX_DIMS],
        };
        let (mut in_info, mut out_info) = (blank(), blank());
        // SAFETY: `path` and the optional names are NUL-terminated strings borrowed for the whole
        // call (null stands for "none", as the header allows); `raw`, `in_info` and `out_info` are
        // valid, writable and laid out as the C declarations (`repr(C)`, same field types and
        // array sizes); `log` is writable for exactly `log.len()` bytes and the shim
        // NUL-terminates within that length; the shim catches every C++ exception, and keeps no
        // pointer to any argument after returning.
        let status = unsafe {
            trident_trt_engine_load(
                path.as_ptr(),
                input.map_or(std::ptr::null(), CStr::as_ptr),
                output.map_or(std::ptr::null(), CStr::as_ptr),
                &mut raw,
                &mut in_info,
                &mut out_info,
                log.as_mut_ptr().cast::<c_char>(),
                log.len(),
            )
        };
        match NonNull::new(raw) {
            Some(raw) if status == OK => {
                log.fill(0);
                Ok(Loaded {
                    handle: Handle { raw, log },
                    input: Info::from_raw(&in_info),
                    output: Info::from_raw(&out_info),
                })
            }
            Some(raw) => {
                // Not reachable per the header (a failed load leaves *out NULL); freed anyway
                // rather than leaked.
                drop(Handle {
                    raw,
                    log: Vec::new(),
                });
                Err((status, log_text(&log)))
            }
            None => Err((if status == OK { -1 } else { status }, log_text(&log))),
        }
    }

    impl Handle {
        /// One inference; `input` and `output` must have the element counts `load` reported
        /// (the shim checks and refuses otherwise).
        pub fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), (c_int, String)> {
            if let Some(first) = self.log.first_mut() {
                *first = 0;
            }
            // SAFETY: `raw` is a live engine owned by this handle, and `&mut self` guarantees no
            // other call uses it concurrently; `input` is readable and `output` writable for
            // exactly the lengths passed; the shim synchronizes its stream before returning, so
            // neither slice is touched after the call; `log` is writable for `log.len()` bytes and
            // NUL-terminated within it; no C++ exception crosses the boundary.
            let status = unsafe {
                trident_trt_engine_run(
                    self.raw.as_ptr(),
                    input.as_ptr(),
                    input.len(),
                    output.as_mut_ptr(),
                    output.len(),
                    self.log.as_mut_ptr().cast::<c_char>(),
                    self.log.len(),
                )
            };
            if status == OK {
                Ok(())
            } else {
                Err((status, log_text(&self.log)))
            }
        }
    }
}
