//! The cache key: everything that makes a serialized engine valid or not. TensorRT refuses (or,
//! worse, mis-runs) an engine built by another TensorRT version or for another GPU, and an engine
//! says nothing about which ONNX it came from, so the key is the ONNX *content*, never its name.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, GpuFacts, Precision, Result};

/// Bumped when the meaning of a key (or of the canonical form below) changes, so old cache entries
/// stop matching instead of being misread.
const KEY_FORMAT: &str = "trident-tensorrt engine key v1";

/// Identifies one engine. Two builds with equal keys are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EngineKey {
    /// Hex SHA-256 of the ONNX file's bytes.
    pub onnx_sha256: String,
    /// e.g. "8.2.1".
    pub tensorrt_version: String,
    pub gpu: GpuFacts,
    pub precision: Precision,
    /// Static input shape (N, C, H, W).
    pub input_shape: [usize; 4],
}

impl EngineKey {
    /// The cache file stem: the first 16 hex digits of the SHA-256 of [`Self::canonical`]. The
    /// cache still compares the full key stored next to the engine, so a prefix collision is a
    /// miss, never a wrong engine.
    pub fn id(&self) -> String {
        sha256_hex(self.canonical().as_bytes())[..16].to_string()
    }

    /// A canonical text form covering every field: one `name=value` line per field in a fixed
    /// order, strings JSON-quoted so no value can forge a line break or separator.
    pub fn canonical(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let (major, minor) = self.gpu.compute_capability;
        let [n, c, h, w] = self.input_shape;
        format!(
            "{KEY_FORMAT}\nonnx_sha256={}\ntensorrt_version={}\ngpu_name={}\ncompute_capability={major}.{minor}\nprecision={}\ninput_shape={n}x{c}x{h}x{w}\n",
            q(&self.onnx_sha256),
            q(&self.tensorrt_version),
            q(&self.gpu.name),
            self.precision,
        )
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's content, read in chunks (engines and models can be large).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EngineKey {
        EngineKey {
            onnx_sha256: "ab".repeat(32),
            tensorrt_version: "8.2.1".into(),
            gpu: GpuFacts {
                name: "NVIDIA Tegra X1".into(),
                compute_capability: (5, 3),
            },
            precision: Precision::Fp16,
            input_shape: [1, 3, 640, 640],
        }
    }

    #[test]
    fn id_is_stable_hex_and_covers_every_field() {
        let k = key();
        assert_eq!(k.id(), key().id());
        assert_eq!(k.id().len(), 16);
        assert!(k.id().chars().all(|c| c.is_ascii_hexdigit()));
        let variants: Vec<EngineKey> = vec![
            EngineKey {
                onnx_sha256: "cd".repeat(32),
                ..key()
            },
            EngineKey {
                tensorrt_version: "8.2.3".into(),
                ..key()
            },
            EngineKey {
                gpu: GpuFacts {
                    name: "NVIDIA Tegra X2".into(),
                    ..key().gpu
                },
                ..key()
            },
            EngineKey {
                gpu: GpuFacts {
                    compute_capability: (6, 2),
                    ..key().gpu
                },
                ..key()
            },
            EngineKey {
                precision: Precision::Fp32,
                ..key()
            },
            EngineKey {
                input_shape: [1, 3, 320, 320],
                ..key()
            },
        ];
        let mut ids: Vec<String> = variants.iter().map(EngineKey::id).collect();
        ids.push(k.id());
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 7, "every field must change the id");
    }

    #[test]
    fn canonical_quotes_strings() {
        let k = EngineKey {
            gpu: GpuFacts {
                name: "x\nprecision=fp32".into(),
                ..key().gpu
            },
            ..key()
        };
        assert!(
            k.canonical().contains(r#"gpu_name="x\nprecision=fp32""#),
            "{}",
            k.canonical()
        );
    }

    #[test]
    fn hashes_known_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
        assert!(
            sha256_file(&dir.path().join("missing"))
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
