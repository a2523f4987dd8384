//! Errors of the deploy stage.

use std::path::PathBuf;

/// What can go wrong while managing units.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    #[error(transparent)]
    Package(#[from] trident_package::Error),
    /// The inventory (or a command-line selection) is wrong; `location` is `file:line` and the
    /// field.
    #[error("{location}: {message}")]
    Inventory { location: String, message: String },
    /// A local file or process could not be used.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The unit could not be reached, or a command on it failed; `step` says which.
    #[error("{unit}: {step}: {message}")]
    Remote {
        unit: String,
        step: &'static str,
        message: String,
    },
    /// Another deploy holds the unit's lock.
    #[error(
        "{unit}: busy: another deploy holds the unit's lock: {holder}; run again when it is done, or pass --wait DURATION to queue behind it"
    )]
    Busy { unit: String, holder: String },
    /// The unit is not one this package can run on.
    #[error("{unit}: refused: {message}")]
    Incompatible { unit: String, message: String },
}

/// How [`Error::Remote`] messages of a failed connection begin.
pub const UNREACHABLE: &str = "cannot reach the unit over SSH";

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn inventory(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Inventory {
            location: location.into(),
            message: message.into(),
        }
    }

    pub fn remote(unit: &str, step: &'static str, message: impl Into<String>) -> Self {
        Error::Remote {
            unit: unit.to_string(),
            step,
            message: message.into(),
        }
    }

    /// True when the unit could not be reached over SSH at all (as opposed to a step on it
    /// failing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Remote { message, .. } if message.starts_with(UNREACHABLE))
    }

    /// True when the user's input is at fault (the CLI exits with status 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Package(e) => e.is_input_error(),
            Error::Inventory { .. } => true,
            // A file the user named that cannot be read (the inventory, a package): their input,
            // as in trident-core.
            Error::Io { action, .. } => action.starts_with("cannot read"),
            Error::Remote { .. } | Error::Busy { .. } | Error::Incompatible { .. } => false,
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
