//! ONNX graphs: building them from checkpoints, writing them atomically.

pub mod builder;
pub mod detector;

use std::path::Path;

use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::error::{Error, Result};

/// Serialises `model` to `path` through a temporary file and a rename.
pub fn write(model: &ModelProto, path: &Path) -> Result<Vec<u8>> {
    let bytes = model.encode_to_vec();
    trident_core::fsutil::write_atomic(path, &bytes)?;
    Ok(bytes)
}

/// Parses ONNX bytes (read from `path`, named in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| {
        Error::onnx(
            path,
            format!("not an ONNX model ({e}); truncated or corrupt?"),
        )
    })
}
