//! The one error type of the package crate.
//!
//! Every message names what it is about (a file, an archive entry, a manifest field, a key's
//! origin) and says what was expected. No message ever carries secret key material: key errors
//! name where the key came from ("environment variable X", a file path), never its text.

use std::path::PathBuf;

/// Errors of building, signing, verifying and unpacking a deployment package.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest or file-format error from `trident-core`.
    #[error(transparent)]
    Core(#[from] trident_core::Error),
    /// The models of a package being built (feature `build`): a folder that cannot serve as the
    /// ensemble.
    #[cfg(feature = "build")]
    #[error(transparent)]
    Models(#[from] trident_infer::Error),
    /// A file or folder could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A package archive that is malformed, hostile or over a limit; `entry` names the archive
    /// member when the problem is one member.
    #[error("{}{}: {message}", path.display(), entry.as_ref().map(|e| format!(": entry `{e}`")).unwrap_or_default())]
    Archive {
        path: PathBuf,
        entry: Option<String>,
        message: String,
    },
    /// A signature that is malformed, from another key, or does not match its data.
    #[error("{}: {message}", path.display())]
    Signature { path: PathBuf, message: String },
    /// A public or secret key that cannot be used; `origin` is a path or "environment variable X".
    #[error("{origin}: {message}")]
    Key { origin: String, message: String },
    /// The package was built for another device than this one.
    #[error(
        "incompatible {field}: the package needs {package}, this device has {device} (from {origin})"
    )]
    Incompatible {
        /// The manifest field, e.g. `target.jetpack`.
        field: String,
        /// What the package needs.
        package: String,
        /// What the device has.
        device: String,
        /// Where the device value was read.
        origin: String,
    },
    /// Input that is readable but not acceptable; `location` names the file, entry or field.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with the action and the path in the message.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Input that is not acceptable.
    pub fn invalid(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            location: location.into(),
            message: message.into(),
        }
    }

    /// A problem with one member (or, with `entry` `None`, the whole) of an archive.
    pub fn archive(
        path: impl Into<PathBuf>,
        entry: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Error::Archive {
            path: path.into(),
            entry: entry.map(str::to_string),
            message: message.into(),
        }
    }

    /// A signature problem.
    pub fn signature(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Signature {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A key problem; `origin` must never be key material.
    pub fn key(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Key {
            origin: origin.into(),
            message: message.into(),
        }
    }

    /// True when the user's input is at fault (the CLI exits with status 2): a bad package,
    /// signature, key or manifest, or a device the package does not fit. False for failures of
    /// the machine (a full disk, a folder that cannot be written).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Core(e) => e.is_input_error(),
            #[cfg(feature = "build")]
            Error::Models(e) => e.is_input_error(),
            Error::Io { action, .. } => {
                action.starts_with("cannot read") || *action == "cannot open"
            }
            Error::Archive { .. }
            | Error::Signature { .. }
            | Error::Key { .. }
            | Error::Incompatible { .. }
            | Error::Invalid { .. } => true,
        }
    }
}

/// An I/O error with its chain of causes in one line (tar and zstd wrap their causes).
pub(crate) fn io_chain(e: &std::io::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_entry_and_input_errors_are_told_apart() {
        let e = Error::archive("p.tar.zst", Some("../x"), "leaves the package");
        assert_eq!(e.to_string(), "p.tar.zst: entry `../x`: leaves the package");
        assert!(e.is_input_error());
        let e = Error::archive("p.tar.zst", None, "truncated");
        assert_eq!(e.to_string(), "p.tar.zst: truncated");
        let full = std::io::Error::other("disk full");
        assert!(!Error::io("cannot write", "out", full).is_input_error());
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(Error::io("cannot read", "in", missing).is_input_error());
        let e = Error::Incompatible {
            field: "target.arch".into(),
            package: "aarch64".into(),
            device: "x86_64".into(),
            origin: "this program's build".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("target.arch") && text.contains("aarch64") && text.contains("x86_64")
        );
    }
}

impl trident_core::blame::Blame for Error {
    fn is_input_error(&self) -> bool {
        Error::is_input_error(self)
    }
}

trident_core::blame_errors!(Error);
