//! What the runtime writes: detections as JSON Lines.

pub mod jsonl;
