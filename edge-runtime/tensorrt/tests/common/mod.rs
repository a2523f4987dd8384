//! A stand-in `trtexec`: a shell script that prints the banner of a chosen TensorRT version,
//! records its arguments, and acts out an outcome chosen by the ONNX file's name:
//! `*unsupported*` (parse failure), `*oom*` (out of memory), `*crash*` (writes half an engine, then
//! dies), `*nopass*` (exits 0 without `&&&& PASSED`), anything else succeeds and writes
//! `engine(<onnx bytes>)` to the `--saveEngine` path.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use trident_tensorrt::{GpuFacts, Trtexec};

pub struct FakeTrtexec {
    pub dir: tempfile::TempDir,
    pub program: PathBuf,
}

impl FakeTrtexec {
    /// `encoded` is the number in the banner, e.g. 8201 or 100300.
    pub fn new(encoded: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("trtexec");
        let log = dir.path().to_str().unwrap();
        let script = format!(
            r#"#!/bin/sh
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{encoded}] # $0 $*"
if [ "$1" = "--help" ]; then
  echo help >> "{log}/help.log"
  echo "=== Model Options ==="
  exit 0
fi
: > "{log}/argv.txt"
for a in "$@"; do printf '%s\n' "$a" >> "{log}/argv.txt"; done
echo build >> "{log}/builds.log"
onnx=""; out=""
for a in "$@"; do
  case "$a" in
    --onnx=*) onnx="${{a#--onnx=}}" ;;
    --saveEngine=*) out="${{a#--saveEngine=}}" ;;
  esac
done
i=0
while [ $i -lt 30 ]; do echo "[I] noise line $i"; i=$((i+1)); done
case "$(basename "$onnx")" in
  *unsupported*)
    echo "[I] [TRT] No importer registered for op: GridSample. Attempting to import as plugin."
    echo "[E] [TRT] ModelImporter.cpp:773: While parsing node number 171 [GridSample -> \"y\"]:" >&2
    echo "[E] [TRT] In node 171 (importFallbackPluginImporter): UNSUPPORTED_NODE: Assertion failed: creator && \"Plugin not found\"" >&2
    echo "[E] Failed to parse onnx file" >&2
    echo "&&&& FAILED TensorRT.trtexec [TensorRT v{encoded}] # $0 $*"
    exit 1 ;;
  *oom*)
    echo "[W] [TRT] Requested amount of GPU memory (1073741824 bytes) could not be allocated." >&2
    echo "[E] [TRT] 2: [virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory (no further information)" >&2
    echo "&&&& FAILED TensorRT.trtexec [TensorRT v{encoded}] # $0 $*"
    exit 1 ;;
  *crash*)
    printf 'half an eng' > "$out"
    echo "[E] simulated crash while serializing" >&2
    exit 139 ;;
  *nopass*)
    printf 'engine' > "$out"
    exit 0 ;;
  *)
    {{ printf 'engine('; cat "$onnx"; printf ')'; }} > "$out"
    echo "[I] Engine built in 1.0 sec."
    echo "&&&& PASSED TensorRT.trtexec [TensorRT v{encoded}] # $0 $*"
    exit 0 ;;
esac
"#
        );
        install_script(&program, &script);
        FakeTrtexec { dir, program }
    }

    pub fn trtexec(&self) -> Trtexec {
        Trtexec::at(&self.program)
    }

    /// Arguments of the last build, one per element (empty when no build ran).
    pub fn argv(&self) -> Vec<String> {
        read_lines(&self.dir.path().join("argv.txt"))
    }

    /// How many builds ran.
    pub fn builds(&self) -> usize {
        read_lines(&self.dir.path().join("builds.log")).len()
    }

    /// How many times `--help` (the version probe) ran.
    pub fn help_calls(&self) -> usize {
        read_lines(&self.dir.path().join("help.log")).len()
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

pub use trident_e2e::install_script;

/// Files in `dir` (names only), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn nano() -> GpuFacts {
    GpuFacts {
        name: "NVIDIA Tegra X1".into(),
        compute_capability: (5, 3),
    }
}
