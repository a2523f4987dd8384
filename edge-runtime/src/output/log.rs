//! The detections log writer: JSON Lines that survive crashes, full disks and failed rotations
//! without stopping detection.
//!
//! # What a reader can rely on
//!
//! - Lines are written whole: complete lines, up to 64 KiB in one `write_all`. A write that fails
//!   part-way (a full disk, `EFBIG`, an I/O error) is cut back to the last complete line before
//!   anything else is written, so a torn fragment never sits inside the file and a retried batch
//!   never duplicates lines.
//! - After a crash (kill -9, a power cut) at most the last line of the current file is
//!   incomplete; readers skip it and reopening the log cuts it ([`super::jsonl::repair`]).
//! - Every line written before the last `fdatasync` survives a power cut. The log is synced at
//!   most every [`LogOptions::fsync_every`] (default 5 s), before a rotation and at shutdown;
//!   [`LogCounters::lines_synced`] says how far that reaches (`/healthz` shows it).
//! - Lines wait in memory at most [`LogOptions::flush_every`] (default 1 s) or
//!   [`LogOptions::batch_lines`] lines before they are written; a kill -9 loses at most those.
//!
//! # When writing fails
//!
//! Detection goes on. Lines are kept in memory (at most [`LogOptions::buffer_bytes`]; beyond it
//! the oldest are dropped and counted), the write is retried with backoff (0.5 s doubling to
//! 5 s), and writing resumes — the kept lines first, in order — as soon as it works. A log that
//! cannot even be opened at the start (a full or read-only folder) is retried the same way.
//!
//! A rotation creates the next file before it moves anything, so a folder that takes no new
//! file (or a rotation target that cannot be replaced) leaves the current file in place: lines
//! go on into it, past `max_bytes`, and the rotation is retried later.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::jsonl::{FrameRecord, repair};
use crate::source::Backoff;

/// Most bytes of whole lines in one write.
const CHUNK: usize = 64 << 10;

/// Rotation, batching and durability.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Rotate when the current file would exceed this size.
    pub max_bytes: u64,
    /// Rotated files kept (`detections.1.jsonl` is the newest).
    pub keep: usize,
    /// Lines that wait before a write…
    pub batch_lines: usize,
    /// …or the longest a line waits.
    pub flush_every: Duration,
    /// `fdatasync` at most this often (and before rotation and at shutdown).
    pub fsync_every: Duration,
    /// Lines kept in memory while writes fail; beyond it the oldest are dropped.
    pub buffer_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_bytes: 64 << 20,
            keep: 5,
            batch_lines: 30,
            flush_every: Duration::from_secs(1),
            fsync_every: Duration::from_secs(5),
            buffer_bytes: 16 << 20,
        }
    }
}

/// What the log did, for `/healthz`, `/metrics` and the run summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LogCounters {
    /// Lines written to the file (this run).
    pub lines_written: u64,
    /// Lines known to be on disk (written before the last successful `fdatasync`).
    pub lines_synced: u64,
    /// Lines waiting in memory now.
    pub lines_pending: u64,
    /// Lines dropped because the memory buffer was full while writes failed, and the detections
    /// they held.
    pub lines_dropped: u64,
    pub detections_dropped: u64,
    /// Failed attempts to open, write, cut back or sync the log.
    pub write_errors: u64,
    pub rotations: u64,
    pub rotation_errors: u64,
    /// The last error while it lasts (cleared when writing works again).
    pub failing: Option<String>,
    /// Seconds since writing began to fail (while it does).
    pub failing_for_s: Option<f64>,
}

/// One waiting line and the detections in it.
struct Line {
    text: Vec<u8>,
    detections: u32,
}

pub struct DetectionLog {
    path: PathBuf,
    opts: LogOptions,
    file: Option<File>,
    /// Size of the current file up to its last complete line.
    size: u64,
    /// A failed write may have left a fragment after `size` that is still to be cut.
    torn: bool,
    pending: VecDeque<Line>,
    pending_bytes: usize,
    /// Line buffers kept for reuse.
    spare: Vec<Vec<u8>>,
    batch: Vec<u8>,
    oldest_pending: Option<Instant>,
    last_sync: Instant,
    retry: Backoff,
    retry_at: Option<Instant>,
    rotate_after: Option<Instant>,
    failing_since: Option<Instant>,
    counters: LogCounters,
}

impl DetectionLog {
    /// The log at `path`, opened for appending (an incomplete last line left by a crash is cut).
    /// Never fails: a log that cannot be opened is retried while lines wait in memory.
    pub fn open(path: &Path, opts: LogOptions) -> Self {
        let now = Instant::now();
        let mut log = DetectionLog {
            path: path.to_path_buf(),
            opts,
            file: None,
            size: 0,
            torn: false,
            pending: VecDeque::new(),
            pending_bytes: 0,
            spare: Vec::new(),
            batch: Vec::new(),
            oldest_pending: None,
            last_sync: now,
            retry: Backoff::new(0.5, 5.0),
            retry_at: None,
            rotate_after: None,
            failing_since: None,
            counters: LogCounters::default(),
        };
        if let Err(e) = log.open_file() {
            log.failed(now, "opening", &e);
        }
        log
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn counters(&self) -> LogCounters {
        let mut c = self.counters.clone();
        c.lines_pending = self.pending.len() as u64;
        c.failing_for_s = self.failing_since.map(|t| t.elapsed().as_secs_f64());
        c
    }

    /// Queues one frame's line; writes when a batch is due. Never fails: see the module docs.
    pub fn append(&mut self, record: &FrameRecord) {
        let mut text = self.spare.pop().unwrap_or_default();
        text.clear();
        serde_json::to_writer(&mut text, record).expect("records serialise");
        text.push(b'\n');
        self.pending_bytes += text.len();
        self.pending.push_back(Line {
            text,
            detections: record.detections.len() as u32,
        });
        let now = Instant::now();
        self.oldest_pending.get_or_insert(now);
        self.bound_memory();
        self.tick(now);
    }

    /// Writes and syncs what is due at `now` (call it on every turn of the run loop, frames or
    /// not, so waiting lines reach the disk while a source is stalled).
    pub fn tick(&mut self, now: Instant) {
        let batch_due = self.pending.len() >= self.opts.batch_lines
            || self
                .oldest_pending
                .is_some_and(|t| now.duration_since(t) >= self.opts.flush_every);
        if batch_due {
            self.write_pending(now);
        }
        if self.counters.lines_synced < self.counters.lines_written
            && now.duration_since(self.last_sync) >= self.opts.fsync_every
        {
            self.sync(now);
        }
    }

    /// Writes every waiting line now and syncs (shutdown). Returns whether all reached the disk.
    pub fn close(&mut self) -> bool {
        let now = Instant::now();
        self.retry_at = None;
        self.write_pending(now);
        if self.counters.lines_synced < self.counters.lines_written {
            self.sync(now);
        }
        self.pending.is_empty() && self.counters.lines_synced == self.counters.lines_written
    }

    /// Drops the oldest lines while the waiting ones exceed the memory bound.
    fn bound_memory(&mut self) {
        let mut dropped = 0u64;
        while self.pending_bytes > self.opts.buffer_bytes && self.pending.len() > 1 {
            let line = self.pending.pop_front().expect("more than one line");
            self.pending_bytes -= line.text.len();
            self.counters.lines_dropped += 1;
            self.counters.detections_dropped += u64::from(line.detections);
            dropped += 1;
            self.recycle(line.text);
        }
        if dropped > 0 && self.counters.lines_dropped == dropped {
            tracing::error!(
                "{}: the detections waiting to be written exceed {} bytes; dropping the oldest \
                 (counted in /metrics as trident_log_lines_dropped_total)",
                self.path.display(),
                self.opts.buffer_bytes
            );
        }
    }

    fn recycle(&mut self, text: Vec<u8>) {
        if self.spare.len() < self.opts.batch_lines.max(1) {
            self.spare.push(text);
        }
    }

    fn write_pending(&mut self, now: Instant) {
        if self.pending.is_empty() || self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        if let Err((action, e)) = self.try_write(now) {
            self.failed(now, action, &e);
            return;
        }
        if let Some(since) = self.failing_since.take() {
            tracing::warn!(
                "{}: writing again after {:.1} s of failures ({} lines dropped so far)",
                self.path.display(),
                now.duration_since(since).as_secs_f64(),
                self.counters.lines_dropped
            );
        }
        self.counters.failing = None;
        self.retry.reset();
        self.retry_at = None;
    }

    fn try_write(&mut self, now: Instant) -> Result<(), (&'static str, std::io::Error)> {
        if self.file.is_none() {
            self.open_file().map_err(|e| ("opening", e))?;
        }
        if self.torn {
            // The fragment of a failed write goes before anything else is appended.
            let file = self.file.as_mut().expect("opened above");
            file.set_len(self.size)
                .map_err(|e| ("cutting a failed write from", e))?;
            self.torn = false;
        }
        if self.size > 0
            && self.size + self.pending_bytes as u64 > self.opts.max_bytes
            && self.rotate_after.is_none_or(|t| now >= t)
        {
            self.rotate(now);
        }
        // Whole lines, at most CHUNK bytes a write; one line a write while writing fails, so a
        // nearly full disk still takes every line it has room for.
        let limit = if self.failing_since.is_some() {
            1
        } else {
            CHUNK
        };
        while !self.pending.is_empty() {
            self.batch.clear();
            let mut lines = 0;
            for line in &self.pending {
                if lines > 0 && self.batch.len() + line.text.len() > limit {
                    break;
                }
                self.batch.extend_from_slice(&line.text);
                lines += 1;
            }
            let file = self.file.as_mut().expect("opened above");
            if let Err(e) = file.write_all(&self.batch) {
                // Part of the chunk may be in the file: cut it now, or before the next write.
                self.torn = true;
                if file.set_len(self.size).is_ok() {
                    self.torn = false;
                }
                return Err(("writing", e));
            }
            self.size += self.batch.len() as u64;
            self.counters.lines_written += lines as u64;
            self.pending_bytes -= self.batch.len();
            for _ in 0..lines {
                let line = self.pending.pop_front().expect("counted above");
                self.recycle(line.text);
            }
        }
        self.oldest_pending = None;
        Ok(())
    }

    fn sync(&mut self, now: Instant) {
        let Some(file) = &self.file else { return };
        match file.sync_data() {
            Ok(()) => {
                self.counters.lines_synced = self.counters.lines_written;
                self.last_sync = now;
            }
            Err(e) => self.failed(now, "syncing", &e),
        }
    }

    fn failed(&mut self, now: Instant, action: &str, e: &std::io::Error) {
        self.counters.write_errors += 1;
        let message = format!("{action} {}: {e}", self.path.display());
        let delay = self.retry.fail();
        self.retry_at = Some(now + Duration::from_secs_f64(delay));
        if self.failing_since.is_none() {
            self.failing_since = Some(now);
            tracing::error!(
                "{message}; detections are kept in memory (up to {} bytes) and writing is retried",
                self.opts.buffer_bytes
            );
        } else {
            tracing::debug!("{message}; retrying in {delay:.1} s");
        }
        self.counters.failing = Some(message);
    }

    fn open_file(&mut self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = open_append(&self.path, false)?;
        self.size = repair(&mut file, &self.path).map_err(std::io::Error::other)?;
        self.file = Some(file);
        self.torn = false;
        Ok(())
    }

    /// `x.jsonl` → `x.1.jsonl` (older ones shift up; the oldest beyond `keep` is removed), the
    /// new file made first. A failure leaves the current file in place and is retried in 10 s.
    fn rotate(&mut self, now: Instant) {
        match self.try_rotate() {
            Ok(()) => {
                self.counters.rotations += 1;
                self.rotate_after = None;
            }
            Err(e) => {
                self.counters.rotation_errors += 1;
                self.rotate_after = Some(now + Duration::from_secs(10));
                tracing::warn!(
                    "{}: cannot rotate ({e}); writing on into the current file",
                    self.path.display()
                );
            }
        }
    }

    fn try_rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| self.path.with_extension(format!("{n}.jsonl"));
        let next = self.path.with_extension("jsonl.next");
        // What is in the current file is durable before it is renamed.
        if let Some(f) = &self.file {
            f.sync_data()?;
            self.counters.lines_synced = self.counters.lines_written;
        }
        let _ = std::fs::remove_file(&next);
        let fresh = open_append(&next, true)?;
        let keep = self.opts.keep.max(1);
        let shifted = (|| {
            match std::fs::remove_file(numbered(keep)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))
        })();
        if let Err(e) = shifted {
            let _ = std::fs::remove_file(&next);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&next, &self.path) {
            // Put the current file back rather than write into the rotated one.
            let _ = std::fs::rename(numbered(1), &self.path);
            let _ = std::fs::remove_file(&next);
            return Err(e);
        }
        self.file = Some(fresh);
        self.size = 0;
        // The renames are durable with the folder's entry list.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

fn open_append(path: &Path, new: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .create(!new)
        .create_new(new)
        .read(true)
        .append(true)
        .open(path)
}

impl Drop for DetectionLog {
    fn drop(&mut self) {
        if !self.close() {
            tracing::error!(
                "{}: {} lines not written at exit ({})",
                self.path.display(),
                self.pending.len(),
                self.counters.failing.as_deref().unwrap_or("not synced")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::jsonl::read;
    use crate::output::jsonl::tests::record;

    fn frames(p: &Path) -> Vec<u64> {
        read(p).unwrap().0.iter().map(|r| r.frame).collect()
    }

    #[test]
    fn lines_wait_for_a_batch_or_their_age_and_are_synced_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/detections.jsonl");
        let opts = LogOptions {
            batch_lines: 4,
            flush_every: Duration::from_secs(3600),
            ..LogOptions::default()
        };
        let mut log = DetectionLog::open(&path, opts);
        for f in 0..3 {
            log.append(&record(f));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "batched");
        log.append(&record(3));
        assert_eq!(frames(&path), [0, 1, 2, 3]);
        log.append(&record(4));
        // The age bound writes a lone line on a later turn of the loop.
        log.opts.flush_every = Duration::ZERO;
        log.tick(Instant::now());
        assert_eq!(frames(&path).len(), 5);
        let c = log.counters();
        assert_eq!((c.lines_written, c.lines_pending), (5, 0));
        assert!(log.close());
        assert_eq!(log.counters().lines_synced, 5);
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
            ..LogOptions::default()
        };
        let mut log = DetectionLog::open(&path, opts);
        for f in 0..10 {
            log.append(&record(f));
        }
        assert_eq!(log.counters().rotations, 3);
        drop(log);
        assert_eq!(frames(&path), [9]);
        assert_eq!(frames(&dir.path().join("detections.1.jsonl")), [6, 7, 8]);
        assert_eq!(frames(&dir.path().join("detections.2.jsonl")), [3, 4, 5]);
        assert!(!dir.path().join("detections.3.jsonl").exists());
        assert!(!dir.path().join("detections.jsonl.next").exists());
    }

    #[test]
    fn a_log_that_cannot_be_written_keeps_the_newest_lines_in_memory_and_resumes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detections.jsonl");
        // A folder where the file should be: opening fails (as root too) until it is gone.
        std::fs::create_dir(&path).unwrap();
        let line = serde_json::to_string(&record(0)).unwrap().len();
        let opts = LogOptions {
            batch_lines: 1,
            buffer_bytes: line * 5 + 5,
            ..LogOptions::default()
        };
        let mut log = DetectionLog::open(&path, opts);
        for f in 0..8 {
            log.append(&record(f));
        }
        let c = log.counters();
        assert!(c.failing.as_deref().unwrap().contains("opening"), "{c:?}");
        assert_eq!(
            (c.lines_written, c.lines_pending, c.lines_dropped),
            (0, 5, 3)
        );
        assert_eq!(c.detections_dropped, 3);
        assert!(c.write_errors >= 1);
        std::fs::remove_dir(&path).unwrap();
        // Retried after the backoff delay, not on every line.
        log.retry_at = Some(Instant::now());
        log.append(&record(8));
        let c = log.counters();
        // The new line made room by dropping one more: five kept, all written, in order.
        assert_eq!((c.lines_written, c.lines_pending, c.failing), (5, 0, None));
        assert_eq!(c.lines_dropped, 4);
        assert_eq!(frames(&path), [4, 5, 6, 7, 8], "the oldest were dropped");
    }

    #[test]
    fn a_rotation_that_cannot_happen_leaves_every_line_in_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detections.jsonl");
        // The rotation target is a folder that is not empty: the rename fails (as root too).
        let target = dir.path().join("detections.1.jsonl");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), "x").unwrap();
        let line = serde_json::to_string(&record(0)).unwrap().len() as u64 + 1;
        let opts = LogOptions {
            max_bytes: line * 2,
            keep: 1,
            batch_lines: 1,
            ..LogOptions::default()
        };
        let mut log = DetectionLog::open(&path, opts);
        for f in 0..6 {
            log.append(&record(f));
        }
        let c = log.counters();
        assert_eq!((c.rotations, c.lines_written, c.failing), (0, 6, None));
        assert!(c.rotation_errors >= 1);
        assert_eq!(frames(&path), [0, 1, 2, 3, 4, 5]);
        assert!(target.join("keep").exists());
        assert!(!dir.path().join("detections.jsonl.next").exists());
        // Once the target can be replaced, the next due rotation goes through.
        std::fs::remove_dir_all(&target).unwrap();
        log.rotate_after = Some(Instant::now());
        log.append(&record(6));
        assert_eq!(log.counters().rotations, 1);
        drop(log);
        assert_eq!(frames(&target), [0, 1, 2, 3, 4, 5]);
        assert_eq!(frames(&path), [6]);
    }
}
