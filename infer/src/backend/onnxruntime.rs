//! ONNX Runtime through `ort`, loaded at run time (feature `onnxruntime`).

use super::{Backend, BackendOptions};
use crate::error::Result;

#[cfg(feature = "onnxruntime")]
pub fn load(
    onnx: &[u8],
    input_shape: [usize; 4],
    options: &BackendOptions,
) -> Result<Box<dyn Backend>> {
    Ok(Box::new(enabled::OrtBackend::load(
        onnx,
        input_shape,
        options,
    )?))
}

#[cfg(not(feature = "onnxruntime"))]
pub fn load(_: &[u8], _: [usize; 4], _: &BackendOptions) -> Result<Box<dyn Backend>> {
    Err(crate::Error::NotCompiled {
        backend: "onnxruntime",
        feature: "onnxruntime",
    })
}

#[cfg(feature = "onnxruntime")]
mod enabled {
    use std::sync::OnceLock;

    use ort::session::Session;
    use ort::session::builder::GraphOptimizationLevel;
    use ort::value::TensorRef;

    use super::super::{Backend, BackendKind, BackendOptions, check_input, onnxruntime_library};
    use crate::error::{Error, Result};

    /// The process-wide environment; the library can be loaded once per process.
    fn environment() -> Result<&'static ort::environment::Environment> {
        static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
            OnceLock::new();
        ENV.get_or_init(|| {
            let lib = onnxruntime_library();
            let builder = ort::init_from(&lib).map_err(|e| {
                format!(
                    "cannot load {} ({e}); set ORT_DYLIB_PATH to libonnxruntime.so (≥ 1.17)",
                    lib.display()
                )
            })?;
            builder
                .with_name("trident")
                .build()
                .map_err(|e| format!("cannot create an environment: {e}"))
        })
        .as_ref()
        .map_err(|e| Error::backend("onnxruntime", e))
    }

    pub struct OrtBackend {
        session: Session,
        input_shape: [usize; 4],
    }

    fn err(e: impl std::fmt::Display) -> Error {
        Error::backend("onnxruntime", e)
    }

    impl OrtBackend {
        pub fn load(
            onnx: &[u8],
            input_shape: [usize; 4],
            options: &BackendOptions,
        ) -> Result<Self> {
            let env = environment()?;
            let mut builder = Session::builder(env)
                .map_err(err)?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(err)?;
            if let Some(threads) = options.threads {
                builder = builder.with_intra_threads(threads).map_err(err)?;
            }
            // Ensemble members run side by side on their own threads: intra-op threads that
            // spin while waiting for work steal the cores the other models need (measured on 2
            // cores: three sessions at 46 fps spinning, 83 fps not).
            builder = builder
                .with_intra_op_spinning(options.spinning)
                .map_err(err)?;
            let session = builder.commit_from_memory(onnx).map_err(err)?;
            Ok(OrtBackend {
                session,
                input_shape,
            })
        }
    }

    impl Backend for OrtBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::OnnxRuntime
        }

        fn input_shape(&self) -> [usize; 4] {
            self.input_shape
        }

        fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>> {
            check_input(BackendKind::OnnxRuntime, self.input_shape, input)?;
            let shape = self.input_shape.map(|d| d as i64);
            let x = TensorRef::from_array_view((shape, input)).map_err(err)?;
            let outputs = self.session.run(ort::inputs![x]).map_err(err)?;
            let (shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
            out.clear();
            out.extend_from_slice(values);
            Ok(shape.iter().map(|&d| d as usize).collect())
        }
    }
}
