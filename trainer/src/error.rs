use std::path::PathBuf;

/// Errors of the trainer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    #[error(transparent)]
    Data(#[from] trident_data::Error),
    #[error(transparent)]
    Eval(#[from] trident_eval::Error),
    #[error(transparent)]
    Plot(#[from] trident_plot::Error),
    /// A dataset that cannot be trained on; the message names the file.
    #[error("{0}")]
    Dataset(String),
    /// A training configuration value that is not acceptable; `location` names file and field.
    #[error("{location}: {message}")]
    Config { location: String, message: String },
    /// A checkpoint that cannot be read or does not fit the model.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// The loss stopped being finite; the last good checkpoint is kept.
    #[error(
        "loss became {value} at epoch {epoch}, batch {batch} (box {box_loss:.4}, cls {cls_loss:.4}, dfl {dfl_loss:.4}); \
         training stopped and the last good checkpoint was kept — lower the learning rate (lr0) or check the labels"
    )]
    NonFiniteLoss {
        epoch: usize,
        batch: usize,
        value: f64,
        box_loss: f64,
        cls_loss: f64,
        dfl_loss: f64,
    },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Device(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            location: location.into(),
            message: message.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// True when the user's input is at fault (exit status 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Data(e) => e.is_input_error(),
            Error::Eval(e) => e.is_input_error(),
            Error::Dataset(_)
            | Error::Config { .. }
            | Error::Checkpoint { .. }
            | Error::Device(_) => true,
            Error::Plot(_) | Error::NonFiniteLoss { .. } | Error::Torch(_) => false,
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
