//! Detections as JSON Lines: one line per processed frame (written by
//! [`DetectionLog`](super::log::DetectionLog), which says what a reader can rely on).
//!
//! After a crash — even kill -9 in the middle of a write — at most the last line of the current
//! file is incomplete. Readers skip it ([`read`]); reopening the log cuts it away first
//! ([`repair`]), so new lines never glue onto a torn one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One detection in frame pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionRecord {
    pub class: usize,
    pub name: String,
    pub score: f32,
    /// x1, y1, x2, y2 in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// One processed frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Unix time in seconds.
    pub time: f64,
    pub source: String,
    /// Frames delivered by the source so far, this one included (a frame the source replaced
    /// with a newer one before it was pulled is not counted).
    pub frame: u64,
    /// The frame's presentation time in its stream, seconds, when the source gives one: for a
    /// file, its position in the file, which ties a detection to a frame of a recorded clip
    /// (and to that frame's annotations) even when frames were skipped or the file looped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pts: Option<f64>,
    /// Quality-ladder level the frame ran at (0 = best).
    pub level: usize,
    pub detections: Vec<DetectionRecord>,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| trident_core::Error::io(action, path, e).into()
}

/// Truncates `file` after its last newline; returns the resulting size.
pub(crate) fn repair(file: &mut File, path: &Path) -> Result<u64> {
    let len = file.metadata().map_err(io("reading", path))?.len();
    if len == 0 {
        return Ok(0);
    }
    // Scan back from the end in chunks for the last '\n'.
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))
            .map_err(io("reading", path))?;
        file.read_exact(&mut chunk[..n])
            .map_err(io("reading", path))?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                tracing::warn!(
                    "{}: cut an incomplete last line ({} bytes) left by an interrupted write",
                    path.display(),
                    len - keep
                );
                file.set_len(keep).map_err(io("repairing", path))?;
            }
            return Ok(keep);
        }
        end = start;
    }
    tracing::warn!("{}: no complete line; starting it afresh", path.display());
    file.set_len(0).map_err(io("repairing", path))?;
    Ok(0)
}

/// Reads a detections log: every complete line, and whether an incomplete last line was skipped.
/// A complete line that does not parse is an error naming the file and line.
pub fn read(path: &Path) -> Result<(Vec<FrameRecord>, bool)> {
    let text = std::fs::read(path).map_err(io("reading", path))?;
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn = complete < text.len();
    let mut records = Vec::new();
    for (i, line) in text[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let record = serde_json::from_slice(line).map_err(|e| {
            Error::from(trident_core::Error::Json {
                path: path.to_path_buf(),
                line: i + 1,
                column: e.column(),
                message: e.to_string(),
            })
        })?;
        records.push(record);
    }
    Ok((records, torn))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A frame record with one detection, shared by the log writer's tests.
    pub(crate) fn record(frame: u64) -> FrameRecord {
        FrameRecord {
            pts: None,
            time: 1.5e9 + frame as f64,
            source: "test://ball".into(),
            frame,
            level: 1,
            detections: vec![DetectionRecord {
                class: 2,
                name: "abalone".into(),
                score: 0.875,
                bbox: [1.0, 2.0, 30.5, 40.25],
            }],
        }
    }

    #[test]
    fn a_torn_last_line_is_skipped_by_readers_and_cut_on_repair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detections.jsonl");
        let mut text = String::new();
        for f in 0..3 {
            text.push_str(&serde_json::to_string(&record(f)).unwrap());
            text.push('\n');
        }
        let complete = text.len() as u64;
        text.push_str(r#"{"time": 1500000003.0, "source": "te"#); // kill -9 mid-write
        std::fs::write(&path, &text).unwrap();
        let (records, torn) = read(&path).unwrap();
        assert_eq!((records.len(), torn), (3, true));

        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert_eq!(repair(&mut file, &path).unwrap(), complete);
        assert_eq!(read(&path).unwrap(), (records, false));

        std::fs::write(&path, "{\"not\": \"a frame\"}\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("detections.jsonl:1"), "{err}");
    }
}
