//! Dataset tools for the Ultralytics layout: active-learning selection and annotation packages
//! ([`active`]), synthetic underwater scenes ([`synth`]), checks of
//! a dataset's files and labels ([`check`]), stratified splits ([`split`]), annotations imported from COCO JSON
//! ([`import`]) and loading ground truth in pixels ([`truth`]).

pub mod active;
pub mod check;
pub mod error;
pub mod import;
pub mod mine;
pub mod phash;
mod scene;
pub mod split;
pub mod synth;
pub mod truth;

pub use error::{Error, Result};
