//! Frame sources: camera and file URIs → GStreamer pipelines → RGB frames, with latest-frame
//! semantics for live sources, bus error and EOS handling, and reconnection with exponential
//! backoff (feature `gstreamer`; the URI and pipeline text are always available).

#[cfg(feature = "gstreamer")]
mod capture;
mod pipeline;
mod secret;
mod uri;

#[cfg(feature = "gstreamer")]
pub use capture::{Frame, Pull, Source, SourceStats};
pub use pipeline::{MediaElements, pipeline_description, pipeline_for};
pub use secret::{MASK, SecretText, is_secret_key, redact};
/// The reconnection backoff (shared with the ensemble's model retries).
pub use trident_infer::Backoff;
pub use uri::{DEFAULT_STALL_AFTER, SourceOptions, SourceUri, V4l2Caps, V4l2Format};
