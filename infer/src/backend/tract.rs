//! tract: pure-Rust ONNX inference, the portable default (and the host's verification reference).

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::{Backend, BackendKind, check_input};
use crate::error::{Error, Result};

pub struct TractBackend {
    plan: TypedRunnableModel<TypedModel>,
    input_shape: [usize; 4],
    /// The input tensor, written in place every frame: tract holds its clone of the `Arc` only
    /// during a run, so it is unique again between frames.
    input: Arc<Tensor>,
}

fn err(e: TractError) -> Error {
    Error::backend("tract", format!("{e:#}"))
}

impl TractBackend {
    /// Optimises the graph for a fixed `[batch, 3, h, w]` input.
    pub fn load(onnx: &[u8], input_shape: [usize; 4]) -> Result<Self> {
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(err)?
            .with_input_fact(0, f32::fact(input_shape).into())
            .map_err(err)?
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        let input = Arc::new(Tensor::zero::<f32>(&input_shape).map_err(err)?);
        Ok(TractBackend {
            plan,
            input_shape,
            input,
        })
    }
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>> {
        check_input(BackendKind::Tract, self.input_shape, input)?;
        match Arc::get_mut(&mut self.input) {
            Some(t) => t.as_slice_mut::<f32>().map_err(err)?.copy_from_slice(input),
            // Only if tract kept a reference past a run (it does not in 0.22).
            None => {
                self.input = Arc::new(Tensor::from_shape(&self.input_shape, input).map_err(err)?)
            }
        }
        let x = TValue::Const(self.input.clone());
        let outputs = self.plan.run(tvec!(x)).map_err(err)?;
        let y = outputs[0].to_array_view::<f32>().map_err(err)?;
        out.clear();
        out.extend(y.iter().copied());
        Ok(y.shape().to_vec())
    }
}
