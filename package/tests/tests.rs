//! The package crate's integration tests, one binary: archive, extraction, device facts, signatures, verification.
mod archive;
mod common;
mod extract;
mod facts;
mod mender;
mod signature;
mod verify;
