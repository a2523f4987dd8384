//! The exporter: trainer checkpoints (or a user's detection ONNX) → ONNX the Nano's TensorRT
//! 8.2 parses, with a model card, verified on real images before anything is written.
//!
//! No libtorch: weights come from the safetensors checkpoint through `trident-core`, the graph
//! from the shared model spec. The graph runs through the runtime's own backends
//! (`trident-infer`: tract, ONNX Runtime) for verification; the caller supplies the reference
//! outputs (the CLI computes the checkpoint's tch forward pass).

pub mod error;
pub mod export;
pub mod fp16;
pub mod inspect;
pub mod lint;
pub mod metadata;
pub mod onnx;
pub mod verify;

pub use error::{Error, Result};
