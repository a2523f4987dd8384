//! The inference layer's integration tests, one binary (ripgrep's layout): the ensemble on
//! frames (views, calibration, fusion, failing models) and fusion against the `ensemble-boxes`
//! package.

mod ensemble;
mod fusion_parity;
