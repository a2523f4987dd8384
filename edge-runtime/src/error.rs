/// Errors of the device runtime library (the inference layer's come wrapped, [`Error::Infer`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    /// The inference layer's errors (backends, models, the ensemble).
    #[error(transparent)]
    Infer(#[from] trident_infer::Error),
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
    /// A camera or file source that cannot be parsed, opened or read.
    #[error("source {source_uri}: {message}")]
    Source { source_uri: String, message: String },
    /// Input of the wrong size, or engines and models whose shapes disagree.
    #[error("{0}")]
    Shape(String),
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
    /// True when the user's input is at fault (exit status 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Infer(e) => e.is_input_error(),
            Error::TensorRt(e) => e.is_input_error(),
            // The model passed tract's checks at export; a disagreeing engine is TensorRT's doing.
            Error::EngineValidation(_) => false,
            Error::Shape(_) | Error::Usage(_) => true,
            Error::Power(_) | Error::Bench(_) | Error::Source { .. } => false,
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
