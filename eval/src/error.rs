/// Errors of the evaluator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    /// Predictions that do not fit the dataset; each entry names the item.
    #[error("{} invalid prediction(s) in {file}:\n{}", .problems.len(), .problems.join("\n"))]
    Predictions { file: String, problems: Vec<String> },
    #[error(transparent)]
    Plot(#[from] trident_plot::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Predictions { .. } => true,
            Error::Plot(_) => false,
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
