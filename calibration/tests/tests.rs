//! Calibration's integration tests, one binary: calibrate on fixture models and fusion against ensemble-boxes.
mod calibrate;
mod fuse_parity;
