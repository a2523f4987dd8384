/// Errors of calibration and offline fusion.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    #[error(transparent)]
    Data(#[from] trident_data::Error),
    #[error(transparent)]
    Eval(#[from] trident_eval::Error),
    #[error(transparent)]
    Infer(#[from] trident_infer::Error),
    #[error(transparent)]
    Plot(#[from] trident_plot::Error),
    /// A model failed on an image of the split.
    #[error("model {model} on {image}: {source}")]
    ModelRun {
        model: String,
        image: String,
        source: Box<trident_infer::Error>,
    },
    /// Input that cannot be calibrated or fused: `location` names the file, field or item.
    #[error("{location}: {message}")]
    Input { location: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Input {
            location: location.into(),
            message: message.into(),
        }
    }

    /// Whether the user's input is at fault (exit status 2) rather than the machine.
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Data(e) => e.is_input_error(),
            Error::Eval(e) => e.is_input_error(),
            Error::Infer(e) => e.is_input_error(),
            Error::Plot(_) => false,
            Error::ModelRun { source, .. } => source.is_input_error(),
            Error::Input { .. } => true,
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
