//! The TensorRT shim, `libtrident_trt.so`, opened at run time (dlopen through `libloading`) and never
//! linked: one trident binary runs on units with and without TensorRT, and says why when it cannot
//! use it. The shim links libnvinfer, libnvonnxparser and libcudart itself, so a unit without
//! TensorRT fails here, at `dlopen`, with the dynamic linker's message naming the missing library.
//!
//! A shim is usable when its ABI version is this crate's ([`ABI_VERSION`]) and the libnvinfer it
//! loaded has the major.minor of the headers it was compiled against: TensorRT's C++ classes are
//! only compatible within a minor, and the soname (`libnvinfer.so.8`) pins the major alone, so
//! 8.2 headers would otherwise load against JetPack 4.6's 8.0 library. A unit with another minor
//! gets its own shim built from source ([`crate::shim_build`]).
//!
//! All `unsafe` of the crate's FFI is in this module.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Error, Result, TrtVersion};

/// The shim's file name, in a package's `lib/` and in the on-unit build cache.
pub const SHIM_FILE: &str = "libtrident_trt.so";
/// An explicit shim to use before any other (a developer's build, or a test's stand-in).
pub const SHIM_ENV: &str = "TRIDENT_TRT_SHIM";
/// `TRIDENT_TRT_ABI_VERSION` of `shim/trident_trt.h`, which this module declares.
pub const ABI_VERSION: i32 = 1;

pub(crate) const OK: c_int = 0;
pub(crate) const OUT_OF_MEMORY: c_int = 2;
pub(crate) const PARSE_FAILED: c_int = 3;
pub(crate) const BAD_ENGINE: c_int = 4;
pub(crate) const BAD_IO: c_int = 5;
pub(crate) const CUDA: c_int = 6;

pub(crate) const MAX_DIMS: usize = 8;
pub(crate) const NAME_BYTES: usize = 256;

/// `trident_trt_engine`: opaque, only ever behind a pointer (the Nomicon's opaque-type pattern).
#[repr(C)]
pub(crate) struct RawEngine {
    _data: [u8; 0],
    _marker: std::marker::PhantomData<(*mut u8, std::marker::PhantomPinned)>,
}

/// `trident_trt_tensor_info`.
#[repr(C)]
pub(crate) struct RawInfo {
    pub name: [c_char; NAME_BYTES],
    pub nb_dims: i32,
    pub dims: [i64; MAX_DIMS],
}

impl RawInfo {
    pub fn blank() -> Self {
        RawInfo {
            name: [0; NAME_BYTES],
            nb_dims: 0,
            dims: [0; MAX_DIMS],
        }
    }
}

type AbiVersionFn = unsafe extern "C" fn() -> i32;
type CompiledVersionFn = unsafe extern "C" fn(*mut i32, *mut i32, *mut i32);
type RuntimeVersionFn = unsafe extern "C" fn() -> i32;
type BuildFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    c_int,
    u64,
    *const c_char,
    *mut c_char,
    usize,
) -> c_int;
type EngineLoadFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const c_char,
    *mut *mut RawEngine,
    *mut RawInfo,
    *mut RawInfo,
    *mut c_char,
    usize,
) -> c_int;
type EngineRunFn = unsafe extern "C" fn(
    *mut RawEngine,
    *const f32,
    usize,
    *mut f32,
    usize,
    *mut c_char,
    usize,
) -> c_int;
type EngineFreeFn = unsafe extern "C" fn(*mut RawEngine);

/// A loaded shim: the library, its functions, and the TensorRT it was compiled for and runs with.
/// Shared (`Arc`) by every builder and engine made from it, so the library stays mapped while any
/// engine handle lives.
pub struct Shim {
    path: PathBuf,
    compiled: TrtVersion,
    runtime: TrtVersion,
    build: BuildFn,
    engine_load: EngineLoadFn,
    engine_run: EngineRunFn,
    engine_free: EngineFreeFn,
    // Last: dropped after nothing can call through the pointers above.
    _lib: libloading::Library,
}

impl fmt::Debug for Shim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shim")
            .field("path", &self.path)
            .field("compiled", &self.compiled)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// Why a shim could not be used, as `doctor` and the runtime's fallback warning say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimProblem {
    /// The file is not there.
    Missing,
    /// `dlopen` failed because a library it links is absent (`libnvinfer.so.8`, `libcudart.so.10.2`):
    /// TensorRT or CUDA is not installed, or not on the loader's path.
    LibraryMissing(String),
    /// `dlopen` failed otherwise (wrong architecture, a symbol the installed TensorRT lacks, …).
    LoadFailed(String),
    /// Built from another version of `trident_trt.h`.
    Abi { found: i32 },
    /// Compiled against one TensorRT minor, running with another.
    VersionMismatch {
        compiled: TrtVersion,
        runtime: TrtVersion,
    },
}

impl fmt::Display for ShimProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShimProblem::Missing => write!(f, "no such file"),
            ShimProblem::LibraryMissing(lib) => write!(
                f,
                "{lib} is missing (TensorRT/CUDA not installed or not on the library path; on a Jetson: \
                 sudo apt install nvidia-tensorrt, or flash JetPack 4.6 or later)"
            ),
            ShimProblem::LoadFailed(msg) => write!(f, "cannot be loaded: {msg}"),
            ShimProblem::Abi { found } => write!(
                f,
                "built from shim interface version {found}, this trident speaks {ABI_VERSION}; rebuild it \
                 from the package's shim source (`trident-edge prepare`)"
            ),
            ShimProblem::VersionMismatch { compiled, runtime } => write!(
                f,
                "compiled against TensorRT {compiled} but this unit has TensorRT {runtime}; \
                 `trident-edge prepare` builds a shim for {runtime} from the package's shim source"
            ),
        }
    }
}

impl Shim {
    /// Opens the shim at `path` and checks its ABI and TensorRT versions.
    pub fn open(path: &Path) -> Result<Arc<Shim>> {
        Self::open_checked(path).map_err(|problem| Error::Shim {
            path: path.to_path_buf(),
            problem,
        })
    }

    fn open_checked(path: &Path) -> Result<Arc<Shim>, ShimProblem> {
        if !path.is_file() {
            return Err(ShimProblem::Missing);
        }
        // SAFETY: loading a library runs its initialisers. The shim's own are those of a C++
        // translation unit with no global constructors beyond the standard library's, and those of
        // TensorRT/CUDA, which JetPack's own tools load the same way; the path is the shim that
        // trident ships or builds, or one the operator named explicitly.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| classify_dlopen(&e))?;
        // SAFETY (each `get`): the symbol types are exactly the declarations of trident_trt.h
        // (checked by the ABI version below before any other function is called); the pointers are
        // copied out and only used while `_lib` (stored in the same struct) keeps the library mapped.
        unsafe {
            let abi: AbiVersionFn = *lib
                .get::<AbiVersionFn>(b"trident_trt_abi_version\0")
                .map_err(|e| ShimProblem::LoadFailed(loader_text(&e)))?;
            let found = abi();
            if found != ABI_VERSION {
                return Err(ShimProblem::Abi { found });
            }
            fn get<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Result<T, ShimProblem> {
                // SAFETY: see the caller; `T` is the matching function-pointer type.
                unsafe { lib.get::<T>(name) }
                    .map(|s| *s)
                    .map_err(|e| ShimProblem::LoadFailed(loader_text(&e)))
            }
            let compiled_version: CompiledVersionFn = get(&lib, b"trident_trt_compiled_version\0")?;
            let runtime_version: RuntimeVersionFn = get(&lib, b"trident_trt_runtime_version\0")?;
            let build: BuildFn = get(&lib, b"trident_trt_build\0")?;
            let engine_load: EngineLoadFn = get(&lib, b"trident_trt_engine_load\0")?;
            let engine_run: EngineRunFn = get(&lib, b"trident_trt_engine_run\0")?;
            let engine_free: EngineFreeFn = get(&lib, b"trident_trt_engine_free\0")?;

            let (mut major, mut minor, mut patch) = (0i32, 0i32, 0i32);
            compiled_version(&mut major, &mut minor, &mut patch);
            let u = |v: i32| u32::try_from(v).unwrap_or(0);
            let compiled = TrtVersion::new(u(major), u(minor), u(patch));
            let encoded = runtime_version();
            let runtime = u32::try_from(encoded)
                .ok()
                .and_then(TrtVersion::from_encoded)
                .ok_or_else(|| {
                    ShimProblem::LoadFailed(format!(
                        "getInferLibVersion() returned {encoded}, which is not a TensorRT version"
                    ))
                })?;
            if (compiled.major, compiled.minor) != (runtime.major, runtime.minor) {
                return Err(ShimProblem::VersionMismatch { compiled, runtime });
            }
            Ok(Arc::new(Shim {
                path: path.to_path_buf(),
                compiled,
                runtime,
                build,
                engine_load,
                engine_run,
                engine_free,
                _lib: lib,
            }))
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The TensorRT of the headers the shim was compiled against.
    pub fn compiled_version(&self) -> TrtVersion {
        self.compiled
    }

    /// The TensorRT loaded at run time: what builds (and must later run) the engines.
    pub fn runtime_version(&self) -> TrtVersion {
        self.runtime
    }

    /// `trident_trt_build`: its status and captured log.
    pub(crate) fn build(
        &self,
        onnx: &CStr,
        engine: &CStr,
        fp16: bool,
        workspace_bytes: u64,
        timing_cache: Option<&CStr>,
    ) -> (c_int, String) {
        let mut log = vec![0u8; 64 * 1024];
        let cache_ptr = timing_cache.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: `onnx`, `engine` and (if non-null) `cache_ptr` are NUL-terminated strings borrowed
        // for the whole call; `log` is writable for exactly `log.len()` bytes and the shim
        // NUL-terminates within that length; the shim catches every C++ exception and keeps no
        // pointer after returning.
        let status = unsafe {
            (self.build)(
                onnx.as_ptr(),
                engine.as_ptr(),
                c_int::from(fp16),
                workspace_bytes,
                cache_ptr,
                log.as_mut_ptr().cast::<c_char>(),
                log.len(),
            )
        };
        (status, log_text(&log))
    }

    /// `trident_trt_engine_load`: the handle and the two tensors, or the status and log.
    pub(crate) fn engine_load(
        &self,
        path: &CStr,
        input: Option<&CStr>,
        output: Option<&CStr>,
    ) -> Result<(std::ptr::NonNull<RawEngine>, RawInfo, RawInfo), (c_int, String)> {
        let mut log = vec![0u8; 16 * 1024];
        let mut raw: *mut RawEngine = std::ptr::null_mut();
        let (mut in_info, mut out_info) = (RawInfo::blank(), RawInfo::blank());
        // SAFETY: the strings are NUL-terminated and borrowed for the call (null stands for "none",
        // as the header allows); `raw`, `in_info` and `out_info` are writable and laid out as the C
        // declarations (`repr(C)`, same field types and array sizes); `log` as in `build`.
        let status = unsafe {
            (self.engine_load)(
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
        match std::ptr::NonNull::new(raw) {
            Some(raw) if status == OK => Ok((raw, in_info, out_info)),
            Some(raw) => {
                // Not reachable per the header (a failed load leaves *out NULL); freed, not leaked.
                // SAFETY: `raw` came from this shim's load and is freed once, here.
                unsafe { (self.engine_free)(raw.as_ptr()) };
                Err((status, log_text(&log)))
            }
            None => Err((if status == OK { -1 } else { status }, log_text(&log))),
        }
    }

    /// `trident_trt_engine_run`.
    ///
    /// # Safety
    /// `raw` must be a live handle from [`Self::engine_load`] of this shim, used by no other call
    /// at the same time.
    pub(crate) unsafe fn engine_run(
        &self,
        raw: std::ptr::NonNull<RawEngine>,
        input: &[f32],
        output: &mut [f32],
        log: &mut [u8],
    ) -> c_int {
        // SAFETY: the caller guarantees `raw`; `input` is readable and `output` writable for exactly
        // the lengths passed; the shim synchronizes its stream before returning, so neither slice is
        // touched after the call; `log` is writable for `log.len()` bytes.
        unsafe {
            (self.engine_run)(
                raw.as_ptr(),
                input.as_ptr(),
                input.len(),
                output.as_mut_ptr(),
                output.len(),
                log.as_mut_ptr().cast::<c_char>(),
                log.len(),
            )
        }
    }

    /// `trident_trt_engine_free`.
    ///
    /// # Safety
    /// `raw` must come from [`Self::engine_load`] of this shim and not be used afterwards.
    pub(crate) unsafe fn engine_free(&self, raw: std::ptr::NonNull<RawEngine>) {
        // SAFETY: the caller guarantees `raw` is live and freed once.
        unsafe { (self.engine_free)(raw.as_ptr()) }
    }
}

pub(crate) fn log_text(log: &[u8]) -> String {
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).into_owned()
}

/// The loader's own message: libloading's text is only "dlopen failed" / "dlsym failed", with the
/// loader's words as its source.
fn loader_text(e: &libloading::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => e.to_string(),
    }
}

/// glibc's message for a missing dependency is
/// `libnvinfer.so.8: cannot open shared object file: No such file or directory`; a missing symbol
/// is `undefined symbol: X`.
fn classify_dlopen(e: &libloading::Error) -> ShimProblem {
    let text = loader_text(e);
    const MISSING: &str = ": cannot open shared object file";
    if let Some(at) = text.find(MISSING) {
        let head = &text[..at];
        let lib = head
            .rsplit([' ', ':'])
            .find(|w| !w.is_empty())
            .unwrap_or(head);
        return ShimProblem::LibraryMissing(lib.to_string());
    }
    ShimProblem::LoadFailed(text)
}

/// Where to look for a shim, in order, and why each candidate was passed over.
#[derive(Debug, Default, Clone)]
pub struct ShimSearch {
    pub candidates: Vec<PathBuf>,
}

impl ShimSearch {
    /// `$TRIDENT_TRT_SHIM` first (when set), then `candidates` in order.
    pub fn with_env(candidates: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut all: Vec<PathBuf> = std::env::var_os(SHIM_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .collect();
        all.extend(candidates);
        ShimSearch { candidates: all }
    }

    /// The first candidate that opens, or every candidate with its problem.
    pub fn open_first(&self) -> Result<Arc<Shim>, Vec<(PathBuf, ShimProblem)>> {
        let mut tried = Vec::new();
        for path in &self.candidates {
            match Shim::open(path) {
                Ok(shim) => {
                    tracing::info!(
                        shim = %path.display(),
                        tensorrt = %shim.runtime_version(),
                        "TensorRT shim loaded"
                    );
                    return Ok(shim);
                }
                Err(Error::Shim { problem, .. }) => tried.push((path.clone(), problem)),
                Err(other) => {
                    tried.push((path.clone(), ShimProblem::LoadFailed(other.to_string())))
                }
            }
        }
        Err(tried)
    }
}

/// "path: problem; path: problem" for messages.
pub fn describe_tried(tried: &[(PathBuf, ShimProblem)]) -> String {
    if tried.is_empty() {
        return "no shim candidates".into();
    }
    tried
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dependency_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Shim::open(&dir.path().join("libtrident_trt.so")).unwrap_err();
        assert!(matches!(
            err,
            Error::Shim {
                problem: ShimProblem::Missing,
                ..
            }
        ));
        // A file that is not a library: the loader's own message, not a "missing library".
        let junk = dir.path().join("junk.so");
        std::fs::write(&junk, b"not an ELF file").unwrap();
        match Shim::open(&junk).unwrap_err() {
            Error::Shim {
                problem: ShimProblem::LoadFailed(msg),
                ..
            } => assert!(msg.contains("junk.so"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn problems_say_what_to_do() {
        let mismatch = ShimProblem::VersionMismatch {
            compiled: TrtVersion::new(8, 2, 1),
            runtime: TrtVersion::new(8, 0, 1),
        };
        let text = mismatch.to_string();
        assert!(text.contains("8.2.1") && text.contains("8.0.1") && text.contains("prepare"));
        assert!(
            ShimProblem::LibraryMissing("libnvinfer.so.8".into())
                .to_string()
                .contains("libnvinfer.so.8 is missing")
        );
    }
}
