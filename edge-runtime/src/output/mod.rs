//! What the runtime writes: detections as JSON Lines, snapshots of critical classes.

pub mod jsonl;
pub mod log;
pub mod snapshot;
