//! Calibration: what a deployment package's `calibration.yaml` says, fitted on validation data.
//!
//! [`calibrate`] runs the ensemble's models over a validation split through the edge runtime's
//! own detector code (same letterbox, decoding and NMS as the device), then fits per-model
//! temperatures (NLL over detections matched to ground truth; D-ECE before and after), searches
//! the fusion (WBF against NMS, IoU threshold, model weights) on validation mAP, picks per-class
//! thresholds (F1, or F-beta for critical classes) and keeps the test-time views whose mAP gain
//! pays for their latency. [`fuse`] fuses prediction files offline, as `ensemble-boxes` does.

pub mod calibrate;
pub mod collect;
pub mod config;
mod error;
pub mod fit;
pub mod fuse;
pub mod metrics;
pub mod plots;
mod report;
pub mod scoring;
pub mod simulate;
pub mod tta;

pub use calibrate::{CalibrateRequest, Outcome, calibrate, calibrate_models};
pub use error::{Error, Result};
