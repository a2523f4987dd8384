//! The `trident-edge` crate's integration tests, one binary. `jetson_media` and `secrets` keep
//! their own: they register stand-in GStreamer elements (Jetson's, an `rtspsrc`) for their whole
//! process, which the other tests must not see.
mod bad_invocations;
mod bench;
mod cli;
mod common;
mod faults;
mod fixture_pair;
mod governor_sim;
mod http;
mod http_limits;
mod prepare;
mod sources;
#[cfg(feature = "gstreamer")]
mod stall_element;
mod tensorrt_twin;
