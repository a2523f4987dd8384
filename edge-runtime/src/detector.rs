//! One detection model on frames: letterbox into a reused input buffer, run the backend, decode
//! the YOLOv8 layout, NMS, and map boxes back to frame pixels. The host's `trident predict
//! --models`, export verification and calibration call this same code, so what they measure is
//! what a Nano computes.

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
    /// The letterbox plan of the last frame size: cameras keep their size, so it is built once.
    plan: Option<LetterboxPlan>,
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
            plan: None,
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Letterboxes an RGB frame (`width × height × 3` bytes) into the input buffer and runs the
    /// model. Returns the raw `[1, 4 + nc, N]` output and the letterbox geometry.
    pub fn infer(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<(&[f32], Letterbox)> {
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(Error::Shape(format!(
                "frame of {width}×{height} needs {} RGB bytes, got {}",
                width as usize * height as usize * 3,
                rgb.len()
            )));
        }
        let [_, _, h, w] = self.backend.input_shape();
        let stale = self
            .plan
            .as_ref()
            .is_none_or(|p| p.geometry.src_w != width || p.geometry.src_h != height);
        if stale {
            self.plan = Some(LetterboxPlan::new(width, height, w as u32, h as u32));
        }
        let plan = self.plan.as_ref().expect("plan set above");
        plan.run(rgb, &mut self.input);
        let geometry = plan.geometry;
        self.infer_prepared()?;
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
        let nc = self.num_classes;
        let (output, geometry) = self.infer(rgb, width, height)?;
        let n = output.len() / (4 + nc);
        Ok(to_source(decode(output, nc, n, opts), &geometry))
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
