//! Dataset tools for the Ultralytics layout: synthetic underwater scenes ([`synth`]), checks of
//! a dataset's files and labels ([`check`]), stratified splits ([`split`]) and loading ground
//! truth in pixels ([`truth`]).

pub mod check;
pub mod error;
mod scene;
pub mod split;
pub mod synth;
pub mod truth;

pub use error::{Error, Result};
