//! Identifying the GPU an engine is built for. A TensorRT engine only runs on the GPU model (compute
//! capability) and TensorRT version it was built with, so both belong in the cache key.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Environment variable overriding detection: `TRIDENT_GPU="NVIDIA Tegra X1;5.3"` (name, `;`,
/// compute capability). It names the local GPU where neither nvidia-smi nor the device tree can
/// (containers without the device tree, CI with a stand-in trtexec). It does not cross-compile:
/// TensorRT always tunes the engine for the GPU it runs on, so the value must describe that GPU.
pub const GPU_ENV: &str = "TRIDENT_GPU";

/// What identifies a GPU for TensorRT's purposes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuFacts {
    /// Marketing name, e.g. "NVIDIA Tegra X1" (Jetson Nano) or "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// CUDA compute capability (major, minor), e.g. (5, 3) for the Nano.
    pub compute_capability: (u32, u32),
}

impl fmt::Display for GpuFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.compute_capability;
        write!(f, "{} (compute capability {major}.{minor})", self.name)
    }
}

/// Jetson SoCs by the device-tree `compatible` string: name as deviceQuery reports it and the GPU's
/// compute capability. On JetPack 4.x there is no nvidia-smi, so this is how a Nano is recognised.
const TEGRA: &[(&str, &str, (u32, u32))] = &[
    ("nvidia,tegra210", "NVIDIA Tegra X1", (5, 3)),
    ("nvidia,tegra186", "NVIDIA Tegra X2", (6, 2)),
    ("nvidia,tegra194", "NVIDIA Xavier", (7, 2)),
    ("nvidia,tegra234", "NVIDIA Orin", (8, 7)),
];

/// Detects the local GPU: `TRIDENT_GPU` override, then `nvidia-smi` (first GPU), then the Jetson
/// device tree at `/proc/device-tree/compatible`. The error lists what each step found.
pub fn detect_gpu() -> Result<GpuFacts> {
    let env = std::env::var(GPU_ENV).ok();
    detect_gpu_in(Path::new("/"), OsStr::new("nvidia-smi"), env.as_deref())
}

/// [`detect_gpu`] with its inputs injected: `root` prefixes `/proc/device-tree/compatible`,
/// `nvidia_smi` is the program to run, `override_value` stands for `TRIDENT_GPU`.
pub fn detect_gpu_in(
    root: &Path,
    nvidia_smi: &OsStr,
    override_value: Option<&str>,
) -> Result<GpuFacts> {
    let mut tried = Vec::new();
    match override_value {
        Some(v) if !v.trim().is_empty() => return parse_override(v),
        _ => tried.push(format!("{GPU_ENV} (unset)")),
    }
    match query_nvidia_smi(nvidia_smi) {
        Ok(gpu) => {
            tracing::debug!(%gpu, "GPU from nvidia-smi");
            return Ok(gpu);
        }
        Err(why) => tried.push(format!("{} ({why})", nvidia_smi.to_string_lossy())),
    }
    let compatible = root.join("proc/device-tree/compatible");
    match std::fs::read(&compatible) {
        Ok(bytes) => match tegra_from_compatible(&bytes) {
            Some(gpu) => {
                tracing::debug!(%gpu, path = %compatible.display(), "GPU from the Jetson device tree");
                return Ok(gpu);
            }
            None => tried.push(format!(
                "{} (no known Jetson SoC: expected one of {})",
                compatible.display(),
                TEGRA.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
            )),
        },
        Err(e) => tried.push(format!("{} ({e})", compatible.display())),
    }
    Err(Error::Gpu(format!(
        "no NVIDIA GPU found; tried {}; set {GPU_ENV}=\"NAME;MAJOR.MINOR\" (e.g. \"NVIDIA Tegra X1;5.3\") to name it",
        tried.join(", ")
    )))
}

/// Parses `"NVIDIA Tegra X1;5.3"`.
pub fn parse_override(value: &str) -> Result<GpuFacts> {
    let bad = || Error::BadEnv {
        var: GPU_ENV,
        value: value.to_string(),
        expected: "\"NAME;MAJOR.MINOR\", e.g. \"NVIDIA Tegra X1;5.3\"".to_string(),
    };
    let (name, cc) = value.rsplit_once(';').ok_or_else(bad)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad());
    }
    let compute_capability = parse_cc(cc).ok_or_else(bad)?;
    Ok(GpuFacts {
        name: name.to_string(),
        compute_capability,
    })
}

fn parse_cc(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn query_nvidia_smi(program: &OsStr) -> Result<GpuFacts, String> {
    let out = Command::new(program)
        .args(["--query-gpu=name,compute_cap", "--format=csv,noheader"])
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = format!("{} {}", stdout.trim(), stderr.trim());
        return Err(format!("{}: {}", out.status, msg.trim()));
    }
    parse_nvidia_smi(&stdout)
}

/// Parses the first line of `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`, e.g.
/// `NVIDIA H100 80GB HBM3, 9.0`. The name may itself contain commas, so split at the last one.
pub fn parse_nvidia_smi(stdout: &str) -> Result<GpuFacts, String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("printed no GPU")?;
    let unexpected = || format!("unexpected output {line:?}, expected \"NAME, MAJOR.MINOR\"");
    let (name, cc) = line.rsplit_once(',').ok_or_else(unexpected)?;
    let compute_capability = parse_cc(cc).ok_or_else(unexpected)?;
    Ok(GpuFacts {
        name: name.trim().to_string(),
        compute_capability,
    })
}

/// `compatible` is a list of NUL-terminated strings, most specific first, e.g.
/// `nvidia,p3450-0000\0nvidia,jetson-nano\0nvidia,tegra210\0`.
fn tegra_from_compatible(bytes: &[u8]) -> Option<GpuFacts> {
    let entries: Vec<&[u8]> = bytes.split(|b| *b == 0).map(|e| e.trim_ascii()).collect();
    TEGRA.iter().find_map(|(soc, name, cc)| {
        entries.contains(&soc.as_bytes()).then(|| GpuFacts {
            name: (*name).to_string(),
            compute_capability: *cc,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_lines() {
        let g =
            parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0\nNVIDIA H100 80GB HBM3, 9.0\n").unwrap();
        assert_eq!(g.name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g.compute_capability, (9, 0));
        let g = parse_nvidia_smi("Quadro RTX 4000, Mobile, 7.5").unwrap();
        assert_eq!(
            (g.name.as_str(), g.compute_capability),
            ("Quadro RTX 4000, Mobile", (7, 5))
        );
        assert!(parse_nvidia_smi("").is_err());
        assert!(parse_nvidia_smi("NVIDIA A100, [N/A]").is_err());
    }

    #[test]
    fn parses_override() {
        let g = parse_override("NVIDIA Tegra X1;5.3").unwrap();
        assert_eq!(
            (g.name.as_str(), g.compute_capability),
            ("NVIDIA Tegra X1", (5, 3))
        );
        for bad in ["NVIDIA Tegra X1", ";5.3", "X1;5", "X1;five.3"] {
            let e = parse_override(bad).unwrap_err();
            assert!(e.is_input_error(), "{bad}: {e}");
            assert!(e.to_string().contains(GPU_ENV), "{e}");
        }
    }

    #[test]
    fn matches_whole_compatible_entries() {
        let g = tegra_from_compatible(b"nvidia,p3450-0000\0nvidia,jetson-nano\0nvidia,tegra210\0")
            .unwrap();
        assert_eq!(g.compute_capability, (5, 3));
        assert!(tegra_from_compatible(b"nvidia,tegra2100\0").is_none());
    }
}
