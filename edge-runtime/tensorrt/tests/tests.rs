//! The TensorRT crate's integration tests, one binary: the engine cache, builds, GPU detection, builder selection, the shim, trtexec.
mod cache;
mod common;
mod engine;
mod gpu;
mod select;
mod shim;
mod trtexec;
