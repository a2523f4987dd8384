//! The `trident-edge` crate's integration tests, one binary. Three keep their own process:
//! `jetson_media` and `secrets` register stand-in GStreamer elements (Jetson's, an `rtspsrc`)
//! for the whole process, which the other tests must not see, and `http_limits` counts the
//! process's file descriptors.
mod bad_invocations;
mod bench;
mod cli;
mod common;
mod faults;
mod fixture_pair;
mod governor_sim;
mod http;
mod prepare;
mod sources;
#[cfg(feature = "gstreamer")]
mod stall_element;
mod tensorrt_twin;
