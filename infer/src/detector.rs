//! One detection model on frames: letterbox into a reused input buffer, run the backend, decode
//! the YOLOv8 layout, NMS, and map boxes back to frame pixels. The host's `trident predict
//! --models`, export verification and calibration call this same code, so what they measure is
//! what a Nano computes.

use std::time::Instant;

use trident_core::geometry::BoxXyxy;
use trident_core::letterbox::{Letterbox, LetterboxPlan};
use trident_core::postprocess::{Detection, NmsOptions, decode};

use crate::backend::Backend;
use crate::error::{Error, Result};

pub struct OnnxDetector {
    backend: Box<dyn Backend>,
    num_classes: usize,
    input: Vec<f32>,
    output: Vec<f32>,
    /// Letterbox plans per content scale for the last frame size: cameras keep their size, so
    /// each is built once.
    plans: Vec<(f32, LetterboxPlan)>,
    /// The mirrored frame of a flipped test-time view, reused.
    mirrored: Vec<u8>,
    /// Where the time of the passes since the last [`take_times`](Self::take_times) went.
    times: PassTimes,
}

/// Seconds spent in each step of a model's passes: what `trident-edge bench` reports per model
/// and what tells a slow pre-processing step from a slow model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassTimes {
    /// Letterbox into the input tensor (and mirroring, for a flipped test-time view).
    pub preprocess: f64,
    /// The backend's forward pass.
    pub forward: f64,
    /// Decoding, NMS and mapping boxes back to the frame (and merging test-time views).
    pub postprocess: f64,
}

impl PassTimes {
    pub fn total(&self) -> f64 {
        self.preprocess + self.forward + self.postprocess
    }
}

/// One test-time view of a frame: mirrored left–right or not, content scaled inside the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub flip: bool,
    pub scale: f32,
}

impl View {
    /// The frame as it is.
    pub const PLAIN: View = View {
        flip: false,
        scale: 1.0,
    };
}

impl OnnxDetector {
    /// A detector for a batch-1 backend over `num_classes` classes.
    pub fn new(backend: Box<dyn Backend>, num_classes: usize) -> Result<Self> {
        let [batch, channels, h, w] = backend.input_shape();
        if batch != 1 || channels != 3 {
            return Err(Error::Shape(format!(
                "the detector runs one RGB frame at a time; the backend takes {:?}",
                backend.input_shape()
            )));
        }
        Ok(OnnxDetector {
            backend,
            num_classes,
            input: vec![0.0; 3 * h * w],
            output: Vec::new(),
            plans: Vec::new(),
            mirrored: Vec::new(),
            times: PassTimes::default(),
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The time spent since the last call, by step; resets the counters.
    pub fn take_times(&mut self) -> PassTimes {
        std::mem::take(&mut self.times)
    }

    /// Adds post-processing done outside the detector (merging test-time views).
    pub fn add_postprocess(&mut self, seconds: f64) {
        self.times.postprocess += seconds;
    }

    /// Letterboxes an RGB frame (`width × height × 3` bytes) into the input buffer and runs the
    /// model. Returns the raw `[1, 4 + nc, N]` output and the letterbox geometry.
    pub fn infer(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<(&[f32], Letterbox)> {
        self.infer_scaled(rgb, width, height, 1.0)
    }

    fn infer_scaled(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        scale: f32,
    ) -> Result<(&[f32], Letterbox)> {
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(Error::Shape(format!(
                "frame of {width}×{height} needs {} RGB bytes, got {}",
                width as usize * height as usize * 3,
                rgb.len()
            )));
        }
        let [_, _, h, w] = self.backend.input_shape();
        if self
            .plans
            .first()
            .is_some_and(|(_, p)| p.geometry.src_w != width || p.geometry.src_h != height)
        {
            self.plans.clear();
        }
        let k = match self.plans.iter().position(|(s, _)| *s == scale) {
            Some(k) => k,
            None => {
                let plan = LetterboxPlan::with_content_scale(
                    width,
                    height,
                    w as u32,
                    h as u32,
                    f64::from(scale),
                );
                self.plans.push((scale, plan));
                self.plans.len() - 1
            }
        };
        let plan = &self.plans[k].1;
        let t = Instant::now();
        plan.run(rgb, &mut self.input);
        let geometry = plan.geometry;
        self.times.preprocess += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ran = self.infer_prepared();
        self.times.forward += t.elapsed().as_secs_f64();
        ran?;
        Ok((&self.output, geometry))
    }

    /// Runs the model on the letterboxed input buffer and checks the output layout.
    fn infer_prepared(&mut self) -> Result<()> {
        let shape = self.backend.run(&self.input, &mut self.output)?;
        let rows = 4 + self.num_classes;
        if shape.len() != 3 || shape[0] != 1 || shape[1] != rows {
            return Err(Error::Shape(format!(
                "model output {shape:?} is not the YOLOv8 layout [1, 4 + {} classes = {rows}, N]",
                self.num_classes
            )));
        }
        Ok(())
    }

    /// Detections in frame pixels, highest score first; boxes that collapse to nothing after
    /// clipping to the frame are dropped (as the trainer's validation does).
    pub fn detect(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        opts: &NmsOptions,
    ) -> Result<Vec<Detection>> {
        self.detect_view(rgb, width, height, opts, View::PLAIN)
    }

    /// [`detect`](Self::detect) on a test-time view; boxes come back in the frame's own
    /// coordinates (unmirrored).
    pub fn detect_view(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        opts: &NmsOptions,
        view: View,
    ) -> Result<Vec<Detection>> {
        let nc = self.num_classes;
        let mut mirrored = std::mem::take(&mut self.mirrored);
        let source = if view.flip {
            let t = Instant::now();
            mirror(rgb, width as usize, &mut mirrored);
            self.times.preprocess += t.elapsed().as_secs_f64();
            &mirrored[..]
        } else {
            rgb
        };
        let mut post = None;
        let result =
            self.infer_scaled(source, width, height, view.scale)
                .map(|(output, geometry)| {
                    let t = Instant::now();
                    let n = output.len() / (4 + nc);
                    let d = to_source(decode(output, nc, n, opts), &geometry);
                    post = Some(t);
                    d
                });
        self.mirrored = mirrored;
        let mut detections = result?;
        if view.flip {
            let w = f64::from(width);
            for d in &mut detections {
                (d.bbox.x1, d.bbox.x2) = (w - d.bbox.x2, w - d.bbox.x1);
            }
        }
        if let Some(t) = post {
            self.times.postprocess += t.elapsed().as_secs_f64();
        }
        Ok(detections)
    }
}

/// Mirrors packed RGB rows left–right into `out` (resized as needed, reused across frames).
fn mirror(rgb: &[u8], width: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(rgb.len());
    for row in rgb.chunks_exact(width * 3) {
        out.extend(row.chunks_exact(3).rev().flatten());
    }
}

/// Maps detections from model-input pixels to source pixels, dropping empty boxes.
pub fn to_source(detections: Vec<Detection>, geometry: &Letterbox) -> Vec<Detection> {
    detections
        .into_iter()
        .filter_map(|d| {
            let b: BoxXyxy = geometry.to_source(&d.bbox);
            (b.x2 > b.x1 && b.y2 > b.y1).then_some(Detection { bbox: b, ..d })
        })
        .collect()
}
