//! Detections as JSON Lines: one line per processed frame, appended in batches, rotated by size.
//!
//! A line is only ever written whole, in one `write_all` of complete lines, so after a crash —
//! even kill -9 in the middle of a write — at most the last line of the current file is
//! incomplete. Readers skip it ([`read`]); reopening the log truncates it away first, so new
//! lines never glue onto a torn one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// Rotation and batching.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Rotate when the current file would exceed this size.
    pub max_bytes: u64,
    /// Rotated files kept (`detections.1.jsonl` is the newest).
    pub keep: usize,
    /// Lines buffered before a write.
    pub batch_lines: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_bytes: 64 << 20,
            keep: 5,
            batch_lines: 30,
        }
    }
}

pub struct DetectionLog {
    path: PathBuf,
    file: File,
    size: u64,
    buffer: Vec<u8>,
    buffered_lines: usize,
    opts: LogOptions,
    pub lines_written: u64,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| trident_core::Error::io(action, path, e).into()
}

impl DetectionLog {
    /// Opens (or creates) `path` for appending, cutting an incomplete last line left by a crash.
    pub fn open(path: &Path, opts: LogOptions) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("creating the log folder", dir))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io("opening", path))?;
        let size = repair(&mut file, path)?;
        Ok(DetectionLog {
            path: path.to_path_buf(),
            file,
            size,
            buffer: Vec::new(),
            buffered_lines: 0,
            opts,
            lines_written: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers one frame's line; writes when the batch is full.
    pub fn append(&mut self, record: &FrameRecord) -> Result<()> {
        serde_json::to_writer(&mut self.buffer, record).expect("records serialise");
        self.buffer.push(b'\n');
        self.buffered_lines += 1;
        if self.buffered_lines >= self.opts.batch_lines {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered lines (whole lines, one write) and rotates first if they would not fit.
    pub fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.size > 0 && self.size + self.buffer.len() as u64 > self.opts.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(&self.buffer)
            .map_err(io("writing", &self.path))?;
        self.file.flush().map_err(io("writing", &self.path))?;
        self.size += self.buffer.len() as u64;
        self.lines_written += self.buffered_lines as u64;
        self.buffer.clear();
        self.buffered_lines = 0;
        Ok(())
    }

    /// `x.jsonl` → `x.1.jsonl` (older ones shift up; the oldest beyond `keep` is removed).
    fn rotate(&mut self) -> Result<()> {
        let numbered = |n: usize| self.path.with_extension(format!("{n}.jsonl"));
        let _ = std::fs::remove_file(numbered(self.opts.keep.max(1)));
        for n in (1..self.opts.keep.max(1)).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1)).map_err(io("rotating", &from))?;
            }
        }
        std::fs::rename(&self.path, numbered(1)).map_err(io("rotating", &self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io("opening", &self.path))?;
        self.size = 0;
        Ok(())
    }
}

impl Drop for DetectionLog {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("{}: detections lost at exit: {e}", self.path.display());
        }
    }
}

/// Truncates `file` after its last newline; returns the resulting size.
fn repair(file: &mut File, path: &Path) -> Result<u64> {
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
mod tests {
    use super::*;

    fn record(frame: u64) -> FrameRecord {
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
    fn lines_are_batched_flushed_on_drop_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/detections.jsonl");
        let opts = LogOptions {
            batch_lines: 4,
            ..LogOptions::default()
        };
        let mut log = DetectionLog::open(&path, opts).unwrap();
        for f in 0..3 {
            log.append(&record(f)).unwrap();
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "batched, not yet written"
        );
        log.append(&record(3)).unwrap();
        assert_eq!(read(&path).unwrap().0.len(), 4);
        log.append(&record(4)).unwrap();
        drop(log);
        let (records, torn) = read(&path).unwrap();
        assert_eq!((records.len(), torn), (5, false));
        assert_eq!(records[4], record(4));
    }

    #[test]
    fn a_torn_last_line_is_skipped_by_readers_and_cut_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detections.jsonl");
        let mut text = String::new();
        for f in 0..3 {
            text.push_str(&serde_json::to_string(&record(f)).unwrap());
            text.push('\n');
        }
        text.push_str(r#"{"time": 1500000003.0, "source": "te"#); // kill -9 mid-write
        std::fs::write(&path, &text).unwrap();
        let (records, torn) = read(&path).unwrap();
        assert_eq!((records.len(), torn), (3, true));

        let mut log = DetectionLog::open(&path, LogOptions::default()).unwrap();
        log.append(&record(3)).unwrap();
        drop(log);
        let (records, torn) = read(&path).unwrap();
        assert_eq!((records.len(), torn), (4, false));
        assert_eq!(records[3].frame, 3);

        std::fs::write(&path, "{\"not\": \"a frame\"}\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("detections.jsonl:1"), "{err}");
    }

    #[test]
    fn logs_rotate_by_size_keeping_whole_lines_and_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detections.jsonl");
        let line = serde_json::to_string(&record(0)).unwrap().len() as u64 + 1;
        let opts = LogOptions {
            max_bytes: line * 3,
            keep: 2,
            batch_lines: 1,
        };
        let mut log = DetectionLog::open(&path, opts).unwrap();
        for f in 0..10 {
            log.append(&record(f)).unwrap();
        }
        drop(log);
        let frames =
            |p: &Path| -> Vec<u64> { read(p).unwrap().0.iter().map(|r| r.frame).collect() };
        assert_eq!(frames(&path), [9]);
        assert_eq!(frames(&dir.path().join("detections.1.jsonl")), [6, 7, 8]);
        assert_eq!(frames(&dir.path().join("detections.2.jsonl")), [3, 4, 5]);
        assert!(!dir.path().join("detections.3.jsonl").exists());
    }
}
