//! trident's inference layer: what the host and the device must compute identically.
//!
//! - [`backend`]: TensorRT (engines through a shim opened at run time), ONNX Runtime (feature
//!   `onnxruntime`, loaded at run time) and tract (pure Rust, always there) behind one trait,
//!   tried in order with each fallback logged;
//! - [`detector`]: letterbox → model → YOLOv8 decode → NMS → source coordinates, test-time views;
//! - [`models`]: a folder of ONNX models with their cards, checked to agree;
//! - [`ensemble`]: one thread per model, calibration tables, Weighted Boxes Fusion, per-class
//!   thresholds, failed models retried and re-admitted;
//! - [`deployment`]: what a unit runs — models and tables from a folder or a verified package.
//!
//! The device runtime (`trident-edge`: sources, governor, outputs, HTTP, service) and the host
//! commands (export verification, calibration, `trident predict`) both build on it; it pulls in
//! no GStreamer, HTTP server or libtorch.

pub mod backend;
mod backoff;
pub mod deployment;
pub mod detector;
pub mod ensemble;
pub mod error;
pub mod models;
pub mod trt_shim;

pub use backend::{Backend, BackendKind, BackendOptions};
pub use backoff::Backoff;
pub use detector::OnnxDetector;
pub use error::{Error, Result};
