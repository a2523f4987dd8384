//! The engine cache: `<root>/<id>.engine` plus a sidecar `<root>/<id>.json` holding the full key,
//! the engine's SHA-256, the builder and the build time. An engine is served only when its sidecar
//! matches the requested key exactly and its bytes hash to the recorded digest; anything else
//! (stale, foreign, truncated, hand-copied) is logged and rebuilt, never handed to TensorRT.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::key::{hex, sha256_file};
use crate::{BuildRequest, EngineBuilder, EngineKey, Error, GpuFacts, Result};

/// Version of the sidecar layout.
const SIDECAR_FORMAT: u32 = 1;

/// What is written next to each cached engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: u32,
    pub key: EngineKey,
    /// Hex SHA-256 of the `.engine` file.
    pub engine_sha256: String,
    /// [`EngineBuilder::name`] of the builder that produced it.
    pub builder: String,
    /// When it was inserted, seconds since the Unix epoch.
    pub built_at_unix_s: u64,
}

/// A directory of engines keyed by [`EngineKey::id`].
#[derive(Debug, Clone)]
pub struct EngineCache {
    root: PathBuf,
}

impl EngineCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EngineCache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the engine for `key` lives (whether or not it exists yet).
    pub fn engine_path(&self, key: &EngineKey) -> PathBuf {
        self.root.join(format!("{}.engine", key.id()))
    }

    /// Where the sidecar for `key` lives.
    pub fn sidecar_path(&self, key: &EngineKey) -> PathBuf {
        self.root.join(format!("{}.json", key.id()))
    }

    /// The cached engine for `key`, if there is a valid one. A missing entry is `Ok(None)`; a
    /// sidecar that does not parse, names another key, or an engine whose digest differs is
    /// warned about and also `Ok(None)`, so the caller rebuilds (and [`Self::insert`] replaces it).
    /// Only I/O failures other than "not found" are errors.
    pub fn lookup(&self, key: &EngineKey) -> Result<Option<PathBuf>> {
        let engine = self.engine_path(key);
        let sidecar_path = self.sidecar_path(key);
        let text = match std::fs::read_to_string(&sidecar_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if engine.exists() {
                    tracing::warn!(engine = %engine.display(), "cached engine has no sidecar (interrupted insert?); rebuilding");
                } else {
                    tracing::debug!(id = %key.id(), "engine cache miss");
                }
                return Ok(None);
            }
            Err(e) => return Err(Error::io(&sidecar_path, e)),
        };
        let sidecar: Sidecar = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(sidecar = %sidecar_path.display(), error = %e, "unreadable engine sidecar; rebuilding");
                return Ok(None);
            }
        };
        if sidecar.key != *key {
            tracing::warn!(
                sidecar = %sidecar_path.display(),
                cached = ?sidecar.key,
                wanted = ?key,
                "cached engine was built for another key; rebuilding"
            );
            return Ok(None);
        }
        let actual = match sha256_file(&engine) {
            Ok(d) => d,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(engine = %engine.display(), "sidecar without engine; rebuilding");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if actual != sidecar.engine_sha256 {
            tracing::warn!(
                engine = %engine.display(),
                expected = %sidecar.engine_sha256,
                actual = %actual,
                "cached engine does not match its recorded sha256 (corrupt or replaced); rebuilding"
            );
            return Ok(None);
        }
        tracing::debug!(engine = %engine.display(), builder = %sidecar.builder, "engine cache hit");
        Ok(Some(engine))
    }

    /// Copies the engine at `built` into the cache under `key` and records its sidecar. Both files
    /// are written to temporary files in the cache directory and renamed into place, the engine
    /// first, so a reader never sees a partial engine and never a sidecar vouching for a missing
    /// or older engine. Returns the cached engine's path.
    pub fn insert(&self, key: &EngineKey, built: &Path, builder: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let engine = self.engine_path(key);
        let engine_sha256 = copy_atomic_hashed(built, &self.root, &engine)?;
        let sidecar = Sidecar {
            format: SIDECAR_FORMAT,
            key: key.clone(),
            engine_sha256,
            builder: builder.to_string(),
            built_at_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let json = serde_json::to_vec_pretty(&sidecar)
            .map_err(|e| Error::io(self.sidecar_path(key), std::io::Error::other(e)))?;
        write_atomic(&self.root, &self.sidecar_path(key), &json)?;
        tracing::info!(engine = %engine.display(), builder, "engine cached");
        Ok(engine)
    }
}

impl EngineCache {
    /// Removes a cached engine and its sidecar, given the engine's path in this cache (as
    /// [`ensure_engine`] returns it). Used when an engine built but then failed validation, so it
    /// is never served. The sidecar goes first: without it the engine is a miss, so no reader can
    /// vouch for an engine that is half deleted. Files already gone are not an error.
    pub fn remove(&self, engine: &Path) -> Result<()> {
        let inside = engine.parent() == Some(self.root.as_path())
            && engine.extension().is_some_and(|e| e == "engine");
        if !inside {
            return Err(Error::BadInput {
                path: engine.to_path_buf(),
                expected: format!(
                    "a <id>.engine file directly in the engine cache {}",
                    self.root.display()
                ),
            });
        }
        for path in [engine.with_extension("json"), engine.to_path_buf()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        tracing::info!(engine = %engine.display(), "engine removed from the cache");
        Ok(())
    }
}

/// Copies `src` to a temporary file in `dir`, hashing while copying (engines can be large and a
/// Nano's memory is short), then renames it to `dest`. Returns the hex SHA-256 of the bytes.
fn copy_atomic_hashed(src: &Path, dir: &Path, dest: &Path) -> Result<String> {
    let mut input = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
    let mut tmp = new_temp(dir)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| Error::io(tmp.path(), e))?;
        total += n as u64;
    }
    if total == 0 {
        return Err(Error::BadInput {
            path: src.to_path_buf(),
            expected: "a serialized TensorRT engine (the file is empty)".to_string(),
        });
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(hex(&hasher.finalize()))
}

fn new_temp(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".trident-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to a temporary file in `dir`, flushes it to disk and renames it to `dest`. The
/// temporary file is removed if anything fails before the rename.
pub(crate) fn write_atomic(dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = new_temp(dir)?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(())
}

/// Returns the cached engine for `req` on `gpu`, building it with `builder` on a miss.
/// `onnx_sha256` is the digest the caller expects `req.onnx` to have (e.g. from the export
/// manifest); the file is hashed and a mismatch is an error, so a cached engine is never served
/// for an ONNX file that changed behind the caller's back. The bool is true when built now.
pub fn ensure_engine(
    cache: &EngineCache,
    builder: &dyn EngineBuilder,
    req: &BuildRequest,
    onnx_sha256: &str,
    gpu: &GpuFacts,
) -> Result<(PathBuf, bool)> {
    crate::builder::check_onnx(req)?;
    let actual = sha256_file(&req.onnx)?;
    if !actual.eq_ignore_ascii_case(onnx_sha256) {
        return Err(Error::OnnxChanged {
            path: req.onnx.clone(),
            expected: onnx_sha256.to_string(),
            actual,
        });
    }
    let key = EngineKey {
        onnx_sha256: actual,
        tensorrt_version: builder.tensorrt_version()?,
        gpu: gpu.clone(),
        precision: req.precision,
        input_shape: req.input_shape,
    };
    if let Some(engine) = cache.lookup(&key)? {
        tracing::info!(engine = %engine.display(), "using cached TensorRT engine");
        return Ok((engine, false));
    }
    tracing::info!(
        onnx = %req.onnx.display(),
        builder = builder.name(),
        tensorrt = %key.tensorrt_version,
        gpu = %gpu,
        precision = %req.precision,
        "building TensorRT engine (minutes on a Jetson Nano)"
    );
    std::fs::create_dir_all(cache.root()).map_err(|e| Error::io(cache.root(), e))?;
    let scratch = tempfile::Builder::new()
        .prefix(".trident-build-")
        .tempdir_in(cache.root())
        .map_err(|e| Error::io(cache.root(), e))?;
    let out = scratch.path().join(format!("{}.engine", key.id()));
    let report = builder.build(req, &out)?;
    if report.tensorrt_version != key.tensorrt_version {
        return Err(Error::BuildFailed {
            builder: report.builder,
            message: format!(
                "built with TensorRT {} but reported {} before the build; not caching an engine whose key is unknown",
                report.tensorrt_version, key.tensorrt_version
            ),
            log_tail: report.log_tail,
        });
    }
    tracing::info!(seconds = report.seconds, builder = %report.builder, "engine built");
    let engine = cache.insert(&key, &out, &report.builder)?;
    Ok((engine, true))
}
