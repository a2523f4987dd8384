use std::path::PathBuf;

/// Errors of the exporter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    /// A command-line option out of range; the message names it.
    #[error("{0}")]
    Option(String),
    /// An ONNX file that cannot be read or does not have the expected layout.
    #[error("{}: {message}", path.display())]
    Onnx { path: PathBuf, message: String },
    /// tract could not load or run a graph.
    #[error("tract: {0}")]
    Tract(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn onnx(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Onnx {
            path: path.into(),
            message: message.into(),
        }
    }

    /// True when the user's input is at fault (exit status 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Option(_) | Error::Onnx { .. } => true,
            Error::Tract(_) => false,
        }
    }
}
