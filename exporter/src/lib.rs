//! The exporter: trainer checkpoints → ONNX the Nano's TensorRT 8.2 parses.
//!
//! No libtorch: weights come from the safetensors checkpoint through `trident-core`, the graph
//! from the shared model spec. [`tract_runner`] runs the result for verification.

pub mod error;
pub mod inspect;
pub mod lint;
pub mod metadata;
pub mod onnx;
pub mod tract_runner;

pub use error::{Error, Result};
