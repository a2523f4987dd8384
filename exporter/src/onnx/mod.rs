//! ONNX graphs: building them from checkpoints, writing them atomically, reading untrusted ones.

pub mod builder;
pub mod detector;
pub mod read;

use std::path::Path;

use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::error::Result;

/// Serialises `model` to `path` through a temporary file and a rename.
pub fn write(model: &ModelProto, path: &Path) -> Result<Vec<u8>> {
    let bytes = model.encode_to_vec();
    trident_core::fsutil::write_atomic(path, &bytes)?;
    Ok(bytes)
}

/// Parses untrusted ONNX bytes (read from `path`, named in errors); see [`read::parse`].
pub fn parse(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    read::parse(bytes, path)
}
