//! YAML for every config file, with errors that name the file, line and column.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result, read_to_string};

/// Parses YAML text; `path` names the source in errors.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| Error::Yaml {
        path: path.to_path_buf(),
        // The first line carries "line L column C: what"; the rest is a source snippet.
        message: e
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string(),
    })
}

/// Reads and parses a YAML file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    parse_yaml(&read_to_string(path)?, path)
}
