//! The host trainer: a YOLOv8-style anchor-free detector in tch (libtorch), trained as three
//! ensemble variants (`high_recall`, `balanced`, `high_precision`).
//!
//! - [`model`]: the graph, built from the shared [`trident_core::model_spec::ModelSpec`].
//! - [`loss`]: task-aligned assignment, BCE, CIoU and DFL.
//! - [`data`]: RAM-cached images, mosaic/affine/HSV/flip augmentation, a background loader.
//! - [`train`]: the loop (AdamW/SGD with warm-up, EMA, clipping, AMP on CUDA, early stopping,
//!   time budget, resume, Ctrl-C), validated every epoch with `trident-eval`.
//! - [`checkpoint`]: safetensors with the spec and training state in the header.
//! - [`init`]: start weights (`--weights`, a trident checkpoint or an Ultralytics state dict) and
//!   frozen layers.
//! - [`predict`]: tch inference through the runtime's letterbox and decoder.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod init;
pub mod loss;
pub mod model;
pub mod optim;
pub mod predict;
pub mod report;
pub mod train;
pub mod validate;

pub use error::{Error, Result};
