//! The ensemble: per-model detections → fused detections.

pub mod fusion;
pub mod runner;
mod worker;
