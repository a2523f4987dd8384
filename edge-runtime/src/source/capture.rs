//! A running GStreamer pipeline that hands out RGB frames (gstreamer-rs, GStreamer 1.14 API).
//!
//! The caller pulls: `next_frame` first drains the bus (errors, EOS), then takes the appsink's
//! one buffered sample. Live sources keep only the newest frame (`max-buffers=1 drop=true`), so
//! a slow ensemble never builds a backlog; frames the appsink discarded are counted through a
//! pad probe. A failed source is torn down (state Null) and reopened after a backoff delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::{Backoff, MediaElements, SourceOptions, SourceUri, pipeline_for, redact};
use crate::error::{Error, Result};

/// One RGB frame; its buffer is reused from frame to frame.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Packed RGB, `width × height × 3` bytes (row padding removed).
    pub rgb: Vec<u8>,
    /// Frames delivered by this source so far, this one included.
    pub index: u64,
    /// Presentation time in the stream, when known.
    pub pts_ns: Option<u64>,
}

/// What a pull produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Pull {
    Frame,
    /// No frame within the timeout (a live source between frames).
    Timeout,
    /// The file ended (and does not loop).
    Eos,
    /// The pipeline failed; it will be reopened after `retry_in_s`.
    Failed {
        message: String,
        retry_in_s: f64,
    },
    /// Waiting for the backoff delay before reopening.
    Reconnecting,
    /// A frame arrived that could not be converted to RGB; it was skipped (and counted).
    Skipped {
        message: String,
    },
}

/// Counters per source, for logs, `/metrics` and the run summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceStats {
    pub frames: u64,
    /// Buffers that reached the appsink but were replaced by newer ones before being pulled
    /// (live sources; a file played with back-pressure drops nothing).
    pub dropped: u64,
    pub reconnects: u64,
    pub errors: u64,
    /// Failures that were stalls: a live source that delivered nothing, without an error, for
    /// `stall_after` (counted in `errors` too).
    pub stalls: u64,
    /// Frames that could not be converted to RGB and were skipped.
    pub skipped: u64,
}

pub struct Source {
    pub uri: SourceUri,
    opts: SourceOptions,
    running: Option<Running>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    stats: SourceStats,
    /// Buffers counted by earlier pipelines of this source.
    arrived_before: u64,
    /// The last sign of progress: a frame, the pipeline's start, or a resume after a pause.
    progress_at: Instant,
}

struct Running {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    arrived: Arc<AtomicU64>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Always leave the pipeline in Null: it releases the camera and its threads.
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn init() -> Result<()> {
    gst::init().map_err(|e| Error::Source {
        source_uri: "gstreamer".into(),
        message: format!("cannot initialise GStreamer: {e}"),
    })
}

impl Source {
    /// Opens `uri` and waits (up to 10 s) until it is playing; errors name the source and, on
    /// Jetson CSI cameras, hint at nvargus-daemon.
    pub fn open(uri: SourceUri, opts: SourceOptions) -> Result<Self> {
        init()?;
        if let SourceUri::File { path } = &uri
            && !path.is_file()
        {
            return Err(Error::Source {
                source_uri: uri.to_string(),
                message: format!("{}: no such file", path.display()),
            });
        }
        let running = start(&uri, &opts)?;
        Ok(Source {
            uri,
            opts,
            running: Some(running),
            backoff: Backoff::default(),
            retry_at: None,
            stats: SourceStats::default(),
            arrived_before: 0,
            progress_at: Instant::now(),
        })
    }

    /// The reconnection policy (default 1 s doubling to 30 s).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn stats(&self) -> SourceStats {
        let mut s = self.stats.clone();
        // A file played with back-pressure drops nothing: buffers waiting in the appsink or
        // flushed by a rewind are not losses.
        let lossless = matches!(self.uri, SourceUri::File { .. }) && !self.opts.realtime_file;
        if let Some(r) = &self.running
            && !lossless
        {
            let arrived = self.arrived_before + r.arrived.load(Ordering::Relaxed);
            // One buffer may be waiting in the appsink (max-buffers=1), not yet pulled.
            s.dropped = arrived.saturating_sub(s.frames + 1);
        }
        s
    }

    /// Pauses the pipeline outside capture windows (a camera stops streaming; nothing queues).
    pub fn pause(&mut self) {
        if let Some(r) = &self.running
            && r.pipeline.current_state() == gst::State::Playing
        {
            let _ = r.pipeline.set_state(gst::State::Paused);
        }
    }

    /// Resumes a paused pipeline (the stall timeout starts again).
    pub fn resume(&mut self) {
        if let Some(r) = &self.running
            && r.pipeline.current_state() != gst::State::Playing
        {
            let _ = r.pipeline.set_state(gst::State::Playing);
            self.progress_at = Instant::now();
        }
    }

    /// Pulls the next frame into `frame` (its buffer is reused), waiting up to `timeout`.
    pub fn next_frame(&mut self, frame: &mut Frame, timeout: Duration) -> Result<Pull> {
        let Some(running) = self.running.as_mut() else {
            return self.reconnect(timeout);
        };
        if let Some(problem) = drain_bus(&running.pipeline) {
            return self.on_bus_problem(problem);
        }
        let timeout = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
        let Some(sample) = running.sink.try_pull_sample(timeout) else {
            if running.sink.is_eos() {
                // A streaming error ends in EOS too: the bus says which it was.
                let problem = drain_bus(&running.pipeline).unwrap_or(BusProblem::Eos);
                return self.on_bus_problem(problem);
            }
            if let Some(limit) = self.opts.stall_after
                && self.uri.is_live()
                && self.progress_at.elapsed() >= limit
            {
                self.stats.stalls += 1;
                return Ok(self.fail(format!(
                    "no frame for {:.0} s and no error: stalled; reopening",
                    self.progress_at.elapsed().as_secs_f64()
                )));
            }
            return Ok(Pull::Timeout);
        };
        self.progress_at = Instant::now();
        if let Err(message) = copy_rgb(&sample, frame) {
            self.stats.skipped += 1;
            // One line for the first and then every 100th: a broken stream may do it per frame.
            if self.stats.skipped % 100 == 1 {
                tracing::warn!(
                    "source {}: frame skipped ({message}); {} so far",
                    self.uri,
                    self.stats.skipped
                );
            }
            return Ok(Pull::Skipped { message });
        }
        self.stats.frames += 1;
        frame.index = self.stats.frames;
        self.backoff.reset();
        Ok(Pull::Frame)
    }

    fn on_bus_problem(&mut self, problem: BusProblem) -> Result<Pull> {
        match problem {
            BusProblem::Eos if self.uri.is_live() => {
                // A camera does not end: it was unplugged or the stream dropped.
                Ok(self.fail("the live stream ended".into()))
            }
            BusProblem::Eos if self.opts.loop_file => {
                let running = self.running.as_ref().expect("a running pipeline sent EOS");
                let rewound = running.pipeline.seek_simple(
                    gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                    gst::ClockTime::ZERO,
                );
                Ok(match rewound {
                    Ok(()) => Pull::Timeout,
                    // Reopening starts the file again from its beginning.
                    Err(e) => self.fail(format!("cannot rewind to loop: {e}")),
                })
            }
            BusProblem::Eos => Ok(Pull::Eos),
            BusProblem::Error(message) => Ok(self.fail(message)),
        }
    }

    /// Tears the pipeline down and schedules a reopen.
    fn fail(&mut self, message: String) -> Pull {
        if let Some(r) = self.running.take() {
            self.arrived_before += r.arrived.load(Ordering::Relaxed);
        }
        self.stats.errors += 1;
        let delay = self.backoff.fail();
        self.retry_at = Some(Instant::now() + Duration::from_secs_f64(delay));
        let hint = match self.uri {
            SourceUri::Csi { .. } => {
                " (on Jetson, a stuck camera daemon is common: `sudo systemctl restart nvargus-daemon`)"
            }
            _ => "",
        };
        tracing::warn!(
            "source {}: {message}{hint}; retrying in {delay:.0} s (failure {})",
            self.uri,
            self.backoff.failures
        );
        Pull::Failed {
            message,
            retry_in_s: delay,
        }
    }

    fn reconnect(&mut self, timeout: Duration) -> Result<Pull> {
        let due = self.retry_at.is_none_or(|t| Instant::now() >= t);
        if !due {
            std::thread::sleep(timeout.min(self.retry_at.map_or(timeout, |t| t - Instant::now())));
            return Ok(Pull::Reconnecting);
        }
        match start(&self.uri, &self.opts) {
            Ok(r) => {
                self.stats.reconnects += 1;
                tracing::info!("source {}: reconnected", self.uri);
                self.running = Some(r);
                self.retry_at = None;
                self.progress_at = Instant::now();
                Ok(Pull::Reconnecting)
            }
            Err(e) => Ok(self.fail(e.to_string())),
        }
    }
}

enum BusProblem {
    Eos,
    Error(String),
}

fn drain_bus(pipeline: &gst::Pipeline) -> Option<BusProblem> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[
        gst::MessageType::Error,
        gst::MessageType::Eos,
        gst::MessageType::Warning,
    ]) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                let from = e
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_default();
                let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                // Elements may quote their location (with its credentials) in what they say.
                let message = format!("{from}: {}{debug}", e.error());
                return Some(BusProblem::Error(redact(&message).into_owned()));
            }
            gst::MessageView::Eos(_) => return Some(BusProblem::Eos),
            gst::MessageView::Warning(w) => {
                tracing::warn!("gstreamer: {}", redact(&w.error().to_string()));
            }
            _ => {}
        }
    }
    None
}

/// Builds the pipeline and waits until it plays (or fails).
fn start(uri: &SourceUri, opts: &SourceOptions) -> Result<Running> {
    let err = |message: String| Error::Source {
        source_uri: uri.to_string(),
        message,
    };
    // The registry decides the path: Jetson elements present, NVMM-aware pipelines.
    let description = pipeline_for(uri, opts, &MediaElements::detect());
    // GStreamer gets the credentials; logs and errors get the masked line.
    let shown = redact(&description);
    tracing::debug!("source {uri}: {shown}");
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| err(redact(&format!("{e} (pipeline: {shown})")).into_owned()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| err("the launch line is not a pipeline".into()))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| err("no appsink in the pipeline".into()))?;
    let arrived = Arc::new(AtomicU64::new(0));
    if let Some(pad) = sink.static_pad("sink") {
        let counter = Arc::clone(&arrived);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }
    let running = Running {
        pipeline,
        sink,
        arrived,
    };
    running
        .pipeline
        .set_state(gst::State::Playing)
        .map_err(
            |_| err(first_error(&running.pipeline).unwrap_or_else(|| "cannot start".into())),
        )?;
    // Wait for PLAYING (or PAUSED for live sources still prerolling) so errors surface here.
    let (result, state, _) = running.pipeline.state(gst::ClockTime::from_seconds(10));
    if result.is_err() || state < gst::State::Paused {
        return Err(err(first_error(&running.pipeline).unwrap_or_else(|| {
            format!("did not start within 10 s (state {state:?})")
        })));
    }
    Ok(running)
}

fn first_error(pipeline: &gst::Pipeline) -> Option<String> {
    match drain_bus(pipeline)? {
        BusProblem::Error(m) => Some(m),
        BusProblem::Eos => Some("ended before the first frame".into()),
    }
}

/// Copies the sample's RGB plane into `frame`, dropping row padding (GStreamer pads RGB rows to
/// a multiple of 4 bytes).
fn copy_rgb(sample: &gst::Sample, frame: &mut Frame) -> std::result::Result<(), String> {
    let caps = sample.caps().ok_or("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("caps {caps}: {e}"))?;
    let buffer = sample.buffer().ok_or("sample without a buffer")?;
    let video = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| format!("cannot map the frame: {e}"))?;
    let (w, h) = (info.width(), info.height());
    let stride = video.plane_stride()[0] as usize;
    let data = video.plane_data(0).map_err(|e| e.to_string())?;
    let row = w as usize * 3;
    frame.width = w;
    frame.height = h;
    frame.rgb.clear();
    frame.rgb.reserve(row * h as usize);
    for y in 0..h as usize {
        frame
            .rgb
            .extend_from_slice(&data[y * stride..y * stride + row]);
    }
    frame.pts_ns = buffer.pts().map(|t| t.nseconds());
    Ok(())
}
