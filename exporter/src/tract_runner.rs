//! ONNX inference through tract (pure Rust): the portable reference the exporter checks against,
//! and the edge runtime's default backend.

use tract_onnx::prelude::*;

use crate::error::{Error, Result};

/// An optimised, runnable tract plan for a fixed input shape.
pub struct TractModel {
    plan: TypedRunnableModel<TypedModel>,
    pub input_shape: [usize; 4],
}

impl TractModel {
    /// Loads ONNX bytes for a `[batch, 3, side, side]` input.
    pub fn load(onnx: &[u8], batch: usize, side: usize) -> Result<Self> {
        let err = |e: TractError| Error::Tract(format!("{e:#}"));
        let shape = [batch, 3, side, side];
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(err)?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(err)?
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok(TractModel {
            plan,
            input_shape: shape,
        })
    }

    /// Runs a CHW float batch; returns the first output's shape and values.
    pub fn run(&self, input: &[f32]) -> Result<(Vec<usize>, Vec<f32>)> {
        let err = |e: TractError| Error::Tract(format!("{e:#}"));
        let x = tract_ndarray::Array4::from_shape_vec(self.input_shape, input.to_vec())
            .map_err(|e| Error::Tract(format!("input of the wrong size: {e}")))?;
        let out = self.plan.run(tvec!(Tensor::from(x).into())).map_err(err)?;
        let y = out[0].to_array_view::<f32>().map_err(err)?;
        Ok((y.shape().to_vec(), y.iter().copied().collect()))
    }
}
