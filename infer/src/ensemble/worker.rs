//! One long-lived thread per model. Threads are started when the ensemble loads, not per frame:
//! each owns its detector (backend, input and output tensors, letterbox plans) for the whole
//! run, reads the current frame from one shared, reused buffer, and hands its detections back
//! through bounded channels (fixed-capacity queues: nothing is allocated per message).
//!
//! A panic in a model's pass is caught on its thread and answered as that job's error, so the
//! thread (and the detector it owns) outlives it: the ensemble can retry the model later and
//! re-admit it when it works again, without reloading anything.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use trident_core::postprocess::{Detection, NmsOptions, nms};

use crate::detector::{OnnxDetector, PassTimes, View};
use crate::error::{Error, Result};

/// The frame every model of the ensemble reads; its buffer keeps its capacity between frames.
#[derive(Debug, Default)]
pub struct SharedFrame {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

pub type FrameSlot = Arc<RwLock<SharedFrame>>;

/// What a model is asked to do with the current frame.
#[derive(Clone, Debug)]
pub struct Job {
    /// Decoding and NMS, with the model's own confidence floor.
    pub nms: NmsOptions,
    /// Test-time views run after the plain one (empty: no TTA).
    pub views: Arc<[View]>,
}

/// A model's detections in frame pixels, the seconds its passes took (wall, from the job's
/// arrival) and where they went.
pub type JobResult = Result<(Vec<Detection>, f64, PassTimes)>;

pub struct Worker {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<JobResult>,
    thread: Option<JoinHandle<()>>,
    name: String,
}

impl Worker {
    pub fn spawn(name: &str, detector: OnnxDetector, frame: FrameSlot) -> Result<Self> {
        let (jobs, job_rx) = sync_channel::<Job>(1);
        let (result_tx, results) = sync_channel::<JobResult>(1);
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || {
                let name = thread_name;
                let mut detector = detector;
                while let Ok(job) = job_rx.recv() {
                    let t = Instant::now();
                    detector.take_times();
                    let result = {
                        // A poisoned lock only means another model panicked mid-read; the
                        // frame itself is intact (only the ensemble writes it).
                        let f = frame.read().unwrap_or_else(PoisonError::into_inner);
                        std::panic::catch_unwind(AssertUnwindSafe(|| {
                            run_views(&mut detector, &f, &job)
                        }))
                        .unwrap_or_else(|panic| Err(panicked(&name, &*panic)))
                    };
                    let timed =
                        result.map(|d| (d, t.elapsed().as_secs_f64(), detector.take_times()));
                    if result_tx.send(timed).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::backend("ensemble", format!("cannot start a model thread: {e}")))?;
        Ok(Worker {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
            name: name.to_string(),
        })
    }

    /// Hands the model a job; fails when its thread has ended (it panicked).
    pub fn submit(&self, job: Job) -> Result<()> {
        let sent = self.jobs.as_ref().map(|j| j.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.gone()),
        }
    }

    /// Waits for the result of the job submitted last.
    pub fn collect(&self) -> JobResult {
        self.results.recv().unwrap_or_else(|_| Err(self.gone()))
    }

    fn gone(&self) -> Error {
        Error::backend(
            "ensemble",
            format!("the thread of model `{}` stopped (it panicked)", self.name),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the job queue ends the thread's loop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A caught panic as the job's error (its message when it has one).
fn panicked(model: &str, panic: &(dyn std::any::Any + Send)) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    Error::backend(
        "ensemble",
        format!("model `{model}` panicked in its pass: {what}"),
    )
}

/// The plain view, then each test-time view; with views, the union goes through the model's
/// NMS again (Ultralytics merges its augmented predictions the same way).
fn run_views(detector: &mut OnnxDetector, f: &SharedFrame, job: &Job) -> Result<Vec<Detection>> {
    let mut all = detector.detect(&f.rgb, f.width, f.height, &job.nms)?;
    if job.views.is_empty() {
        return Ok(all);
    }
    for &view in job.views.iter() {
        all.extend(detector.detect_view(&f.rgb, f.width, f.height, &job.nms, view)?);
    }
    let t = Instant::now();
    let merged = nms(all, &job.nms);
    detector.add_postprocess(t.elapsed().as_secs_f64());
    Ok(merged)
}
