use std::path::PathBuf;

/// Errors of the inference layer.
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
    /// Input of the wrong size or a model output that is not the YOLOv8 layout.
    #[error("{0}")]
    Shape(String),
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
            Error::NotCompiled { .. } | Error::Shape(_) | Error::Models(_) => true,
            Error::Backend { .. } | Error::NoBackend { .. } | Error::TensorRtUnavailable(_) => {
                false
            }
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
