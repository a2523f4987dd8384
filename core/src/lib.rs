//! The contracts every trident stage agrees on.
//!
//! Everything that crosses a stage boundary — box conventions, the prediction file format, the
//! Ultralytics dataset layout, the letterbox transform — is defined once here so that the trainer,
//! the calibration tools and the edge runtime cannot drift apart. This crate must stay free of
//! tch, Python and GPU dependencies: the edge runtime links it.

pub mod bench;
pub mod blame;
pub mod calibration;
pub mod checkpoint;
pub mod dataset;
pub mod digest;
pub mod error;
pub mod flags;
pub mod fsutil;
pub mod geometry;
pub mod labels;
pub mod letterbox;
pub mod model_card;
pub mod model_spec;
pub mod package;
pub mod postprocess;
pub mod prediction;
pub mod profile;
pub mod yaml;

pub use error::{Error, Result};
pub use geometry::{BoxXywh, BoxXyxy};
