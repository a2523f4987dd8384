//! The `trident` binary's integration tests, one binary (one link of the heavy CLI dependencies).
mod bad_invocations;
mod calibrate;
mod cli;
mod common;
mod deploy;
mod edge_run;
mod export;
mod field_data;
mod fuse;
mod package;
mod package_aarch64;
mod package_mender;
