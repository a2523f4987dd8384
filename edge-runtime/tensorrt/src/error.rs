//! The crate's one error type. Every variant names the file or program involved and says what was
//! expected, because these errors surface on a Jetson's console far from the code that raised them.

use std::path::PathBuf;

/// Errors of engine building and running, GPU detection and the engine cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shim library that cannot be used, and why (see [`crate::ShimProblem`]).
    #[error("TensorRT shim {}: {problem}", .path.display())]
    Shim {
        path: PathBuf,
        problem: crate::ShimProblem,
    },

    /// No usable shim among the candidates (each listed with its problem).
    #[error("no usable TensorRT shim ({tried})")]
    NoShim { tried: String },

    /// Building the shim from source on this machine failed.
    #[error("building the TensorRT shim: {message}{}", fmt_tail(.log_tail))]
    ShimBuild { message: String, log_tail: String },

    /// Neither the native builder nor a trtexec program is available.
    #[error(
        "no TensorRT engine builder is available (tried: {}); on a Jetson install TensorRT with JetPack \
         (trtexec is at /usr/src/tensorrt/bin/trtexec), or set TRTEXEC=/path/to/trtexec, or point \
         TRIDENT_TRT_SHIM at a libtrident_trt.so built for this TensorRT",
        .tried.join("; ")
    )]
    NoTensorRt { tried: Vec<String> },

    /// The builder ran and failed for a reason that is neither memory nor the model's operators.
    #[error("{builder} failed to build a TensorRT engine: {message}{}", fmt_tail(.log_tail))]
    BuildFailed {
        builder: String,
        message: String,
        log_tail: String,
    },

    /// The build ran out of GPU memory. On a Jetson Nano the GPU shares the 4 GB with the CPU, so
    /// other processes and the desktop compete with TensorRT's tactic search.
    #[error(
        "{builder} ran out of GPU memory while building the engine (workspace {workspace_mib} MiB); lower the \
         workspace (e.g. 512 MiB), close other processes using the GPU, or on a Jetson Nano stop the desktop \
         with `sudo systemctl isolate multi-user.target`{}",
        fmt_tail(.log_tail)
    )]
    OutOfMemory {
        builder: String,
        workspace_mib: u64,
        log_tail: String,
    },

    /// TensorRT's ONNX parser rejected the model: an operator it has no importer for (`op` is
    /// `Some`), or another parse failure (`op` is `None`).
    #[error(
        "{builder}: TensorRT could not parse {}: {}; re-export the model with operators this TensorRT \
         version supports{}",
        .onnx.display(),
        match .op { Some(op) => format!("operator `{op}` is not supported (no importer registered)"), None => "the ONNX parser failed".to_string() },
        fmt_tail(.log_tail)
    )]
    UnsupportedOp {
        builder: String,
        onnx: PathBuf,
        op: Option<String>,
        log_tail: String,
    },

    /// The requested precision cannot be built by this builder/TensorRT version.
    #[error("{builder} with TensorRT {tensorrt_version}: {message}")]
    PrecisionUnavailable {
        builder: String,
        tensorrt_version: String,
        message: String,
    },

    /// A file the caller named does not exist or is not what was expected.
    #[error("{}: expected {expected}", .path.display())]
    BadInput { path: PathBuf, expected: String },

    /// The ONNX file's content is not the one the caller vouched for (stale export or wrong file).
    #[error("{}: expected sha256 {expected}, found {actual}; the ONNX file changed since it was exported", .path.display())]
    OnnxChanged {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// An environment variable with a value that cannot be used.
    #[error("environment variable {var}={value:?}: expected {expected}")]
    BadEnv {
        var: &'static str,
        value: String,
        expected: String,
    },

    /// An external program (trtexec) behaved unexpectedly outside a build.
    #[error("{}: {message}", .program.display())]
    Tool { program: PathBuf, message: String },

    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Loading or running a serialized engine failed (in-process runtime or trtexec).
    #[error("TensorRT engine {}: {message}{}", .engine.display(), fmt_tail(.log_tail))]
    Engine {
        engine: PathBuf,
        message: String,
        log_tail: String,
    },

    /// No GPU could be identified; the message lists what was tried.
    #[error("{0}")]
    Gpu(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the user's input is at fault (a missing or changed ONNX file, a model TensorRT
    /// cannot parse, a malformed override, a precision the installed TensorRT cannot build), so a
    /// CLI can exit with its "bad input" status; false for environment and tool failures.
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::BadInput { .. }
            | Error::OnnxChanged { .. }
            | Error::BadEnv { .. }
            | Error::UnsupportedOp { .. }
            | Error::PrecisionUnavailable { .. } => true,
            Error::Shim { .. }
            | Error::NoShim { .. }
            | Error::ShimBuild { .. }
            | Error::NoTensorRt { .. }
            | Error::BuildFailed { .. }
            | Error::OutOfMemory { .. }
            | Error::Tool { .. }
            | Error::Io { .. }
            | Error::Engine { .. }
            | Error::Gpu(_) => false,
        }
    }

    /// The builder's last log lines, for the variants that carry them.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            Error::BuildFailed { log_tail, .. }
            | Error::OutOfMemory { log_tail, .. }
            | Error::UnsupportedOp { log_tail, .. }
            | Error::Engine { log_tail, .. }
            | Error::ShimBuild { log_tail, .. } => Some(log_tail),
            _ => None,
        }
    }
}

fn fmt_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\nlast log lines:\n{tail}")
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
