//! TensorRT through trident-tensorrt's engine runtime, in the shim library opened at run time
//! ([`crate::trt_shim`]). Loading a model means finding the shim, then the model's engine in the
//! content-keyed engine cache — the one `trident-edge prepare` filled and validated — or building
//! one there on a miss, then deserializing it. Engines are specific to the GPU and TensorRT
//! version, so they are never shipped, only built on the device.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use trident_tensorrt::{DEFAULT_WORKSPACE_MIB, Precision};

use super::{Backend, BackendKind, OnnxModel, check_input};
use crate::error::{Error, Result};
use crate::trt_shim::ShimPlan;

/// Environment variable naming the engine cache directory.
pub const ENGINE_CACHE_ENV: &str = "TRIDENT_ENGINE_CACHE";
/// The engine cache of a provisioned device (used when `/var/lib/trident` exists).
pub const SYSTEM_ENGINE_CACHE: &str = "/var/lib/trident/engines";

/// Where engines are cached when nobody says: `$TRIDENT_ENGINE_CACHE`; else
/// `/var/lib/trident/engines` on a provisioned device (where `/var/lib/trident` exists); else
/// `~/.cache/trident/engines`. `trident export --engine` has no such rule of its own (it caches
/// beside its `--out`), so `prepare` and the runtime share this one.
pub fn default_engine_cache() -> PathBuf {
    let env = std::env::var_os(ENGINE_CACHE_ENV);
    let home = std::env::var_os("HOME");
    default_engine_cache_in(
        env.as_deref(),
        Path::new(SYSTEM_ENGINE_CACHE),
        home.as_deref(),
    )
}

/// [`default_engine_cache`] with its inputs injected: the variable's value, the system cache
/// path, and `$HOME`.
pub fn default_engine_cache_in(
    env: Option<&OsStr>,
    system: &Path,
    home: Option<&OsStr>,
) -> PathBuf {
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if system.parent().is_some_and(Path::is_dir) {
        return system.to_path_buf();
    }
    match home.filter(|v| !v.is_empty()) {
        Some(home) => Path::new(home).join(".cache/trident/engines"),
        // No home (a bare service account): the system path, whose creation error names it.
        None => system.to_path_buf(),
    }
}

/// How the TensorRT backend finds or builds engines.
#[derive(Clone, Debug)]
pub struct TensorRtOptions {
    pub cache_dir: PathBuf,
    /// `None`: the cached fp16 engine, else the cached fp32 one (whichever `prepare` made), else
    /// build fp16. `Some`: exactly that precision, built on a miss.
    pub precision: Option<Precision>,
    /// Builder workspace for a build on a miss, MiB.
    pub workspace_mib: u64,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions {
            cache_dir: default_engine_cache(),
            precision: None,
            workspace_mib: DEFAULT_WORKSPACE_MIB,
        }
    }
}

/// Loads `model` for a fixed `input_shape` through its cached (or newly built) engine.
pub fn load(
    model: &OnnxModel<'_>,
    input_shape: [usize; 4],
    options: &TensorRtOptions,
) -> Result<Box<dyn Backend>> {
    let models_dir = model.path.parent().unwrap_or(Path::new("."));
    let plan = ShimPlan::for_models_dir(models_dir, &options.cache_dir);
    let (shim, _origin) = plan.open().map_err(Error::TensorRtUnavailable)?;
    let (engine_path, precision) = engine_for(&shim, model, input_shape, options)?;
    let engine = trident_tensorrt::TrtEngine::load(&shim, &engine_path)?;
    if engine.input().shape != input_shape {
        return Err(Error::Shape(format!(
            "tensorrt: engine {} takes {} {:?}, the model was asked for {input_shape:?}",
            engine_path.display(),
            engine.input().name,
            engine.input().shape
        )));
    }
    Ok(Box::new(TensorRtBackend {
        engine,
        input_shape,
        precision,
    }))
}

/// A model running on its TensorRT engine.
struct TensorRtBackend {
    engine: trident_tensorrt::TrtEngine,
    input_shape: [usize; 4],
    precision: trident_tensorrt::Precision,
}

impl Backend for TensorRtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::TensorRt
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    fn run(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<Vec<usize>> {
        check_input(BackendKind::TensorRt, self.input_shape, input)?;
        Ok(self.engine.run(input, out)?)
    }

    fn precision(&self) -> String {
        self.precision.to_string()
    }
}

/// The engine for `model` and its precision: from the cache, else built into it.
fn engine_for(
    shim: &std::sync::Arc<trident_tensorrt::Shim>,
    model: &OnnxModel<'_>,
    input_shape: [usize; 4],
    options: &TensorRtOptions,
) -> Result<(PathBuf, Precision)> {
    {
        use trident_tensorrt::{
            BuildRequest, EngineBuilder, EngineCache, EngineKey, NativeBuilder, detect_gpu,
            ensure_engine, sha256_hex,
        };
        let builder = NativeBuilder::new(std::sync::Arc::clone(shim));
        let gpu = detect_gpu()?;
        let cache = EngineCache::new(&options.cache_dir);
        let sha = sha256_hex(model.bytes);
        // Whatever `prepare` made (fp16 by default, fp32 if asked) before building anything.
        let wanted = match options.precision {
            None => vec![Precision::Fp16, Precision::Fp32],
            Some(p) => vec![p],
        };
        let tensorrt_version = builder.tensorrt_version()?;
        for precision in wanted {
            let key = EngineKey {
                onnx_sha256: sha.clone(),
                tensorrt_version: tensorrt_version.clone(),
                gpu: gpu.clone(),
                precision,
                input_shape,
            };
            if let Some(engine) = cache.lookup(&key)? {
                return Ok((engine, precision));
            }
        }
        // The builder reads the file; ensure_engine refuses it (naming it) if its bytes are not
        // the ones being loaded, so a cached engine never stands for another model.
        tracing::warn!(
            model = %model.path.display(),
            cache = %cache.root().display(),
            "no prepared TensorRT engine; building one now (minutes on a Jetson Nano); \
             run `trident-edge prepare` beforehand to build and validate engines"
        );
        let precision = options.precision.unwrap_or(Precision::Fp16);
        let mut req = BuildRequest::new(model.path, precision, input_shape);
        req.workspace_mib = options.workspace_mib;
        req.timing_cache = Some(cache.root().join("timing.cache"));
        let (engine, _built) = ensure_engine(&cache, &builder, &req, &sha, &gpu)?;
        Ok((engine, precision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_cache_default_follows_env_then_system_then_home() {
        let d = tempfile::tempdir().unwrap();
        let system = d.path().join("var/lib/trident/engines");
        let home = OsStr::new("/home/diver");
        let env = OsStr::new("/srv/engines");

        assert_eq!(
            default_engine_cache_in(Some(env), &system, Some(home)),
            PathBuf::from("/srv/engines")
        );
        assert_eq!(
            default_engine_cache_in(Some(OsStr::new("")), &system, Some(home)),
            PathBuf::from("/home/diver/.cache/trident/engines"),
            "an empty variable counts as unset; no /var/lib/trident yet"
        );
        std::fs::create_dir_all(system.parent().unwrap()).unwrap();
        assert_eq!(default_engine_cache_in(None, &system, Some(home)), system);
        assert_eq!(
            default_engine_cache_in(None, Path::new("/nonexistent/trident/engines"), None),
            PathBuf::from("/nonexistent/trident/engines")
        );
    }
}
