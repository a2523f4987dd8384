//! trident's device runtime as a library: sources, the energy/FPS governor, outputs, health and
//! HTTP, the systemd service, TensorRT engine preparation, the on-unit bench and the run loop,
//! around the inference layer of [`trident_infer`] (backends, detector, ensemble), which the host
//! commands share.

pub mod bench;
pub mod doctor;
pub mod error;
pub mod governor;
pub mod health;
pub mod http;
pub mod output;
pub mod prepare;
#[cfg(feature = "gstreamer")]
pub mod run;
pub mod source;
pub mod systemd;

pub use error::{Error, Result};
