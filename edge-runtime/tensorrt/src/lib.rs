//! Turns an exported ONNX model into a TensorRT engine for the GPU it will run on, with a cache keyed
//! by content (ONNX digest, TensorRT version, GPU, precision, input shape) so a Jetson builds each
//! engine once — builds take minutes there — and never loads an engine built for something else.
//!
//! TensorRT is never linked. Its C++ API is reached through a small shim library with a C ABI,
//! `libtrident_trt.so` ([`Shim`]), opened at run time: shipped prebuilt in a package when release
//! CI had a JetPack sysroot with TensorRT, otherwise built on the unit from the source every package
//! carries ([`shim_build`]). Two builders implement [`EngineBuilder`]: [`NativeBuilder`] (the
//! shim) and [`Trtexec`] (NVIDIA's command-line tool). [`select_builder`] picks the first available.
//! Everything here builds and is tested on machines without TensorRT or a GPU: the tests drive a
//! stand-in shim (C, built by the test, with a stand-in libnvinfer) and a stand-in trtexec script.
//!
//! Built engines run in-process through [`TrtEngine`] (the shim's engine runtime), or once at a
//! time through [`Trtexec::infer`] for checking them without a shim.
//!
//! Used by `trident export --engine` on the host, and by `trident-edge prepare` and the edge
//! runtime's TensorRT backend on the device.

mod builder;
mod cache;
mod engine;
mod error;
mod gpu;
mod key;
mod native;
mod outcome;
mod shim;
pub mod shim_build;
mod trtexec;
mod trtexec_run;
mod version;

pub use builder::{BuildReport, BuildRequest, DEFAULT_WORKSPACE_MIB, EngineBuilder, Precision};
pub use cache::{EngineCache, Sidecar, ensure_engine};
pub use engine::{INPUT_NAME, OUTPUT_NAME, TensorInfo, TrtEngine};
pub use error::{Error, Result};
pub use gpu::{GPU_ENV, GpuFacts, detect_gpu, detect_gpu_in, parse_nvidia_smi, parse_override};
pub use key::{EngineKey, sha256_file, sha256_hex};
pub use native::NativeBuilder;
pub use outcome::{FailureHint, LOG_TAIL_LINES, classify_failure, unsupported_op};
pub use shim::{ABI_VERSION, SHIM_ENV, SHIM_FILE, Shim, ShimProblem, ShimSearch, describe_tried};
pub use trtexec::{JETPACK_TRTEXEC, TRTEXEC_ENV, Trtexec};
pub use trtexec_run::{ExportedTensor, parse_exported_output};
pub use version::TrtVersion;

/// The best available builder: the native one over `shim` when there is one, else trtexec from
/// `$TRTEXEC`, `$PATH` or JetPack's /usr/src/tensorrt/bin/trtexec. `shim` is the caller's search
/// result (the error says why there is none). Each fallback is logged with its reason; when nothing
/// is available the error lists what was tried and how to fix it.
pub fn select_builder(
    shim: std::result::Result<std::sync::Arc<Shim>, String>,
) -> Result<Box<dyn EngineBuilder>> {
    let env = std::env::var_os(TRTEXEC_ENV);
    let path = std::env::var_os("PATH");
    select_builder_in(
        shim,
        Trtexec::discover_in(
            env.as_deref(),
            path.as_deref(),
            std::path::Path::new(JETPACK_TRTEXEC),
        ),
    )
}

/// [`select_builder`] with the trtexec discovery result injected (for tests and callers with their
/// own search).
pub fn select_builder_in(
    shim: std::result::Result<std::sync::Arc<Shim>, String>,
    trtexec: Result<Trtexec, Vec<String>>,
) -> Result<Box<dyn EngineBuilder>> {
    let mut tried = Vec::new();
    match shim {
        Ok(shim) => {
            tracing::info!(shim = %shim.path().display(), "using the native TensorRT builder");
            return Ok(Box::new(NativeBuilder::new(shim)));
        }
        Err(why) => {
            tracing::info!("no TensorRT shim ({why}); looking for trtexec");
            tried.push(format!("native builder ({why})"));
        }
    }
    match trtexec {
        Ok(t) => {
            tracing::info!(program = %t.program().display(), "using trtexec to build TensorRT engines");
            Ok(Box::new(t))
        }
        Err(more) => {
            tried.extend(more);
            Err(Error::NoTensorRt { tried })
        }
    }
}
