use std::path::PathBuf;

/// Errors raised while reading or writing the project's shared file formats.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON document did not parse or did not match its schema.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A config file whose content is wrong at a known place: `file:line:column: field: what was
    /// expected` (the file alone when the place is unknown, line 0).
    #[error("{}: {message}", located(path, *line, *column))]
    Located {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Input that parsed but is not acceptable; `location` names the file, line, item or field.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn invalid(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            location: location.into(),
            message: message.into(),
        }
    }

    /// True when the error is the user's input being wrong (the CLI exits with status 2), as
    /// opposed to a failure of the machine (a full disk, a permission problem on output).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Io { action, .. } => {
                action.starts_with("cannot read") || *action == "cannot open"
            }
            Error::Json { .. } | Error::Located { .. } | Error::Invalid { .. } => true,
        }
    }
}

/// `file:line:col`, or the file alone when the line is unknown (0).
fn located(path: &std::path::Path, line: usize, column: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{column}", path.display())
    }
}

/// Reads a file to a string with the path in the error.
pub fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))
}
