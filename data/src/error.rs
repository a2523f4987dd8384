use std::path::PathBuf;

/// Errors of the dataset tools.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    #[error("cannot decode image {}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("cannot encode image {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// Several input problems, each already formatted as `location: message`.
    #[error("{} problem(s) in the input:\n{}", .0.len(), .0.join("\n"))]
    Problems(Vec<String>),
    #[error("invalid option {option}: {message}")]
    Option {
        option: &'static str,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the user's input is at fault (exit status 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Image { .. } | Error::Problems(_) | Error::Option { .. } => true,
            Error::Encode { .. } => false,
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
