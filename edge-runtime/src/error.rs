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
            Error::NotCompiled { .. } | Error::Shape(_) => true,
            Error::Backend { .. } | Error::NoBackend { .. } => false,
        }
    }
}
