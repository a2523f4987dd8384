use std::path::PathBuf;

/// Errors of the edge runtime library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    /// A backend asked for by name that this build does not contain (candle-style: the API is
    /// there, the implementation is not).
    #[error(
        "the {backend} backend is not compiled into this build of trident; rebuild with `--features {feature}`"
    )]
    NotCompiled {
        backend: &'static str,
        feature: &'static str,
    },
    /// TensorRT cannot be used on this machine: no shim that loads (the message says, per
    /// candidate, why: libnvinfer missing, another TensorRT minor, …).
    #[error("tensorrt: {0}")]
    TensorRtUnavailable(String),
    /// Building, caching or running a TensorRT engine (trident-tensorrt's error, which names the
    /// file or program involved).
    #[error(transparent)]
    TensorRt(#[from] trident_tensorrt::Error),
    /// TensorRT engines whose outputs disagree with tract's beyond the tolerance (or that could
    /// not be run); each has been removed from the engine cache.
    #[error(
        "{} TensorRT engine(s) failed validation against tract and were removed from the cache: {}",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    EngineValidation(Vec<crate::prepare::ValidationFailure>),
    /// A backend that is compiled in but cannot start here (library missing, bad model).
    #[error("{backend}: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    /// Every backend in the configured order failed; each reason is listed.
    #[error("no inference backend could load {}: {}", model.display(), reasons.join("; "))]
    NoBackend {
        model: PathBuf,
        reasons: Vec<String>,
    },
    /// A model folder that cannot serve as the ensemble (missing cards, changed files, classes
    /// that disagree).
    #[error("{0}")]
    Models(String),
    /// A camera or file source that cannot be parsed, opened or read.
    #[error("source {source_uri}: {message}")]
    Source { source_uri: String, message: String },
    /// Input of the wrong size or a model output that is not the YOLOv8 layout.
    #[error("{0}")]
    Shape(String),
    /// A deployment profile that does not parse or validate; `message` starts with the field
    /// path (`ladder[2].fps: …`); line and column are 0 when unknown.
    #[error("{}: {message}", profile_location(path, *line, *column))]
    Profile {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A power sensor that cannot be found or read.
    #[error("power: {0}")]
    Power(String),
    /// A benchmark that cannot run as asked (unknown level, a source that ends, a model that
    /// fails) or whose results cannot be written.
    #[error("bench: {0}")]
    Bench(String),
    /// A command asked for something that does not exist (a ladder level, a model by name).
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn backend(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Error::Backend {
            backend,
            message: message.to_string(),
        }
    }

    /// True when the user's input is at fault (exit status 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::TensorRt(e) => e.is_input_error(),
            // The model passed tract's checks at export; a disagreeing engine is TensorRT's doing.
            Error::EngineValidation(_) => false,
            Error::NotCompiled { .. } | Error::Shape(_) | Error::Models(_) => true,
            Error::Profile { .. } | Error::Usage(_) => true,
            Error::Power(_) | Error::Bench(_) => false,
            Error::Backend { .. } | Error::NoBackend { .. } | Error::Source { .. } => false,
            Error::TensorRtUnavailable(_) => false,
        }
    }
}

/// `file:line:col`, or the file alone when the line is unknown.
fn profile_location(path: &std::path::Path, line: usize, column: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{column}", path.display())
    }
}
