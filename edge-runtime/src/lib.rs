//! trident's device runtime as a library: inference backends behind one trait and the detector
//! pipeline (letterbox → model → YOLOv8 decode → NMS → source coordinates).
//!
//! The same code runs in the `trident-edge` binary on a Nano and in the host commands that must
//! compute exactly what the device computes (export verification, calibration, host predict).

pub mod backend;
pub mod bench;
pub mod deployment;
pub mod detector;
pub mod doctor;
pub mod ensemble;
pub mod error;
pub mod governor;
pub mod health;
pub mod http;
pub mod models;
pub mod output;
pub mod prepare;
#[cfg(feature = "gstreamer")]
pub mod run;
pub mod source;
pub mod systemd;
pub mod trt_shim;

pub use backend::{Backend, BackendKind, BackendOptions};
pub use detector::OnnxDetector;
pub use error::{Error, Result};
