use std::path::PathBuf;

use crate::lint::Finding;

/// Errors of the exporter.
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
    /// Input that is not acceptable; `location` names the file or field.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    /// A command-line option out of range; the message names it.
    #[error("{0}")]
    Option(String),
    /// An ONNX file that cannot be read or does not have the expected layout.
    #[error("{}: {message}", path.display())]
    Onnx { path: PathBuf, message: String },
    /// One field of an ONNX file holds what no model can (a negative or overflowing dimension,
    /// a tensor whose data is not what its dims and type say); `field` is its protobuf path,
    /// e.g. `graph.initializer[3] \`conv.weight\` dims`.
    #[error("{}: {field}: {message}", path.display())]
    OnnxField {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// An ONNX file over the size cap, refused before it is read. `bytes` is `None` when the size
    /// was not known up front (a pipe, a device, a file still growing) and reading stopped at
    /// the cap.
    #[error(
        "{}: {} is over the {cap}-byte cap on ONNX files (trident_exporter::onnx::read::MAX_ONNX_BYTES); \
         a detection model is far smaller: is this the right file?",
        path.display(),
        bytes.map_or_else(|| "the file".to_string(), |b| format!("the file is {b} bytes, which"))
    )]
    OnnxTooLarge {
        path: PathBuf,
        bytes: Option<u64>,
        cap: u64,
    },
    /// The graph uses what TensorRT 8.2 cannot parse.
    #[error(
        "{}: TensorRT 8.2 cannot build this graph ({} finding(s)):\n  {}\npass --allow-unsupported to write it anyway",
        path.display(),
        findings.len(),
        findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Unsupported {
        path: PathBuf,
        findings: Vec<Finding>,
    },
    /// The exported graph does not compute what its source computes.
    #[error("verification failed: {0}")]
    Verification(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn onnx(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Onnx {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn onnx_field(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::OnnxField {
            path: path.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn invalid(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            location: location.into(),
            message: message.into(),
        }
    }

    /// True when the user's input is at fault (exit status 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            Error::Data(e) => e.is_input_error(),
            Error::Eval(e) => e.is_input_error(),
            Error::Infer(e) => e.is_input_error(),
            Error::Invalid { .. } => true,
            Error::Option(_)
            | Error::Onnx { .. }
            | Error::OnnxField { .. }
            | Error::OnnxTooLarge { .. }
            | Error::Unsupported { .. } => true,
            Error::Verification(_) => false,
        }
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
