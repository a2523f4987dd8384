//! Deployment's integration tests, one binary: the fleet over real SSH servers (faults, provision, push, rollout, transport).
mod common;
mod faults;
mod mender;
mod provision;
mod push;
mod rollout;
mod transport;
