//! Building the shim from its source on the machine that will load it — a Jetson whose TensorRT
//! minor the release was not built for, or a host with TensorRT 10 — with that machine's C++
//! compiler and TensorRT/CUDA development files (JetPack images have both; Jetson users build
//! DeepStream's custom parsers on the device the same way). The result is cached beside the engines,
//! keyed by the source's digest and the TensorRT version, so each unit builds it once per release.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, SHIM_FILE, Shim, TrtVersion};

/// The files of the shim's source, as every package carries them (`shim/`).
pub const SHIM_SOURCES: [&str; 3] = ["trident_trt.h", "trident_trt.cpp", "trident_trt_engine.cpp"];

/// The C++ compiler override, as build systems spell it.
pub const CXX_ENV: &str = "CXX";

/// The shim's source directory.
#[derive(Debug, Clone)]
pub struct ShimSource {
    dir: PathBuf,
}

impl ShimSource {
    /// `dir` with every file of [`SHIM_SOURCES`].
    pub fn at(dir: &Path) -> Result<Self> {
        for f in SHIM_SOURCES {
            if !dir.join(f).is_file() {
                return Err(Error::BadInput {
                    path: dir.join(f),
                    expected: "the TensorRT shim's source (every trident package carries shim/)"
                        .into(),
                });
            }
        }
        Ok(ShimSource {
            dir: dir.to_path_buf(),
        })
    }

    /// The source shipped in this repository (`edge-runtime/tensorrt/shim`), for host builds and
    /// packaging.
    pub fn in_repository() -> Self {
        ShimSource {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("shim"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SHA-256 over each file's name and bytes, in [`SHIM_SOURCES`] order.
    pub fn sha256(&self) -> Result<String> {
        let mut all = Vec::new();
        for f in SHIM_SOURCES {
            let path = self.dir.join(f);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            all.extend_from_slice(f.as_bytes());
            all.push(0);
            all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            all.extend_from_slice(&bytes);
        }
        Ok(crate::sha256_hex(&all))
    }
}

/// Where a root file system (`/` on a unit, a JetPack sysroot on a build machine) keeps the TensorRT
/// and CUDA development files, and which TensorRT they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRtDevFiles {
    pub include: PathBuf,
    pub lib: PathBuf,
    pub cuda_include: PathBuf,
    pub cuda_lib: PathBuf,
    pub version: TrtVersion,
}

impl TensorRtDevFiles {
    /// Looks under `root` the way JetPack and NVIDIA's Debian packages lay them out:
    /// `usr/include/<multiarch>/NvInfer.h` (libnvinfer-dev), `usr/lib/<multiarch>/libnvinfer.so`,
    /// `usr/local/cuda/{include,lib64}` (or `usr/local/cuda-10.2`, JetPack 4.6's). The error lists
    /// every missing piece and the package that brings it.
    pub fn discover(root: &Path, multiarch: &str) -> Result<Self, Vec<String>> {
        let include = root.join("usr/include").join(multiarch);
        let lib = root.join("usr/lib").join(multiarch);
        let cuda = ["usr/local/cuda", "usr/local/cuda-10.2"]
            .iter()
            .map(|d| root.join(d))
            .find(|d| d.join("include/cuda_runtime_api.h").is_file())
            .unwrap_or_else(|| root.join("usr/local/cuda"));
        let mut missing = Vec::new();
        let mut need = |path: PathBuf, package: &str| {
            if !path.exists() {
                missing.push(format!("{} (package {package})", path.display()));
            }
        };
        need(include.join("NvInfer.h"), "libnvinfer-dev");
        need(include.join("NvInferVersion.h"), "libnvinfer-dev");
        need(include.join("NvOnnxParser.h"), "libnvonnxparsers-dev");
        need(lib.join("libnvinfer.so"), "libnvinfer-dev");
        need(lib.join("libnvonnxparser.so"), "libnvonnxparsers-dev");
        need(
            cuda.join("include/cuda_runtime_api.h"),
            "cuda-cudart-dev-10-2",
        );
        need(cuda.join("lib64/libcudart.so"), "cuda-cudart-dev-10-2");
        if !missing.is_empty() {
            return Err(missing);
        }
        let header = include.join("NvInferVersion.h");
        let version = header_version(&header).ok_or_else(|| {
            vec![format!(
                "{}: no NV_TENSORRT_MAJOR/MINOR/PATCH defines",
                header.display()
            )]
        })?;
        Ok(TensorRtDevFiles {
            include,
            lib,
            cuda_include: cuda.join("include"),
            cuda_lib: cuda.join("lib64"),
            version,
        })
    }
}

/// NV_TENSORRT_MAJOR/MINOR/PATCH of `NvInferVersion.h` (TensorRT 11 defines them through
/// `TRT_*_ENTERPRISE`, followed one level).
pub fn header_version(path: &Path) -> Option<TrtVersion> {
    let text = std::fs::read_to_string(path).ok()?;
    let define = |name: &str| -> Option<String> {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some(name))
                .then(|| w.next().map(str::to_string))
                .flatten()
        })
    };
    let number = |name: &str| -> Option<u32> {
        let v = define(name)?;
        v.parse().ok().or_else(|| define(&v)?.parse().ok())
    };
    Some(TrtVersion::new(
        number("NV_TENSORRT_MAJOR")?,
        number("NV_TENSORRT_MINOR")?,
        number("NV_TENSORRT_PATCH")?,
    ))
}

/// `$CXX`, else `c++`, else `g++` on `PATH` (`path` is `$PATH`'s value).
pub fn find_compiler(
    cxx: Option<&std::ffi::OsStr>,
    path: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    if let Some(c) = cxx.filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(c));
    }
    let path = path?;
    ["c++", "g++"].iter().find_map(|name| {
        std::env::split_paths(path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// What the on-unit build cache records beside each shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRecord {
    pub source_sha256: String,
    pub tensorrt: String,
    pub compiler: String,
    pub built_unix: u64,
}

/// A shim in the on-unit cache.
#[derive(Debug, Clone)]
pub struct BuiltShim {
    pub path: PathBuf,
    pub record: ShimRecord,
    /// False when it came from the cache.
    pub built_now: bool,
}

/// `<cache>/shim/<key>/`, the key being the first 16 hex digits of SHA-256 over the source digest
/// and the TensorRT version.
pub fn cached_shim_dir(cache_root: &Path, source_sha256: &str, tensorrt: TrtVersion) -> PathBuf {
    let key =
        crate::sha256_hex(format!("source={source_sha256}\ntensorrt={tensorrt}\n").as_bytes());
    cache_root.join("shim").join(&key[..16])
}

/// The cached shim for this source and TensorRT, or a new build of it (then cached). A cached one
/// is only taken when its record matches; the build happens in a scratch directory renamed into
/// place, so a power cut never leaves half a library where a later start would load it.
pub fn ensure_shim(
    source: &ShimSource,
    dev: &TensorRtDevFiles,
    compiler: &Path,
    cache_root: &Path,
) -> Result<BuiltShim> {
    let source_sha = source.sha256()?;
    let dir = cached_shim_dir(cache_root, &source_sha, dev.version);
    let record_path = dir.join("shim.json");
    if let Ok(bytes) = std::fs::read(&record_path)
        && let Ok(record) = serde_json::from_slice::<ShimRecord>(&bytes)
        && record.source_sha256 == source_sha
        && record.tensorrt == dev.version.to_string()
        && dir.join(SHIM_FILE).is_file()
    {
        return Ok(BuiltShim {
            path: dir.join(SHIM_FILE),
            record,
            built_now: false,
        });
    }
    let parent = dir.parent().expect("cached_shim_dir has a parent");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let scratch = tempfile::Builder::new()
        .prefix(".build.")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let out = scratch.path().join(SHIM_FILE);
    let mut cmd = compile_command(compiler, source.dir(), dev, &out);
    tracing::info!(compiler = %compiler.display(), tensorrt = %dev.version, "building the TensorRT shim");
    let output = cmd.output().map_err(|e| Error::ShimBuild {
        message: format!("cannot run the C++ compiler {}: {e}", compiler.display()),
        log_tail: String::new(),
    })?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() || !out.is_file() {
        return Err(Error::ShimBuild {
            message: format!("{} exited with {}", compiler.display(), output.status),
            log_tail: crate::builder::tail_lines(&log, crate::LOG_TAIL_LINES),
        });
    }
    let record = ShimRecord {
        source_sha256: source_sha,
        tensorrt: dev.version.to_string(),
        compiler: compiler.display().to_string(),
        built_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let json = serde_json::to_vec_pretty(&record).expect("a record serializes");
    let staged = scratch.path().join("shim.json");
    std::fs::write(&staged, json).map_err(|e| Error::io(&staged, e))?;
    // Replace a stale entry (another record) as a whole.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let kept = scratch.keep();
    std::fs::rename(&kept, &dir).map_err(|e| Error::io(&dir, e))?;
    Ok(BuiltShim {
        path: dir.join(SHIM_FILE),
        record,
        built_now: true,
    })
}

/// The compiler line: a shared library exporting only the C functions of `trident_trt.h`, linked
/// against TensorRT and CUDA with `--no-undefined` (a symbol the installed TensorRT lacks fails
/// here, not at the first frame).
pub fn compile_command(
    compiler: &Path,
    source: &Path,
    dev: &TensorRtDevFiles,
    out: &Path,
) -> Command {
    // TensorRT 8.x headers are C++11/14; TensorRT 10 headers need C++17.
    let std = if dev.version.major >= 10 {
        "-std=c++17"
    } else {
        "-std=c++14"
    };
    let mut cmd = Command::new(compiler);
    cmd.args([
        "-shared",
        "-fPIC",
        "-O2",
        std,
        "-fvisibility=hidden",
        "-Wall",
        "-Wextra",
    ])
    .arg("-I")
    .arg(source)
    .arg("-isystem")
    .arg(&dev.include)
    .arg("-isystem")
    .arg(&dev.cuda_include)
    .arg(source.join("trident_trt.cpp"))
    .arg(source.join("trident_trt_engine.cpp"))
    .arg("-o")
    .arg(out)
    .arg(format!("-L{}", dev.lib.display()))
    .arg(format!("-L{}", dev.cuda_lib.display()))
    .arg("-Wl,--no-undefined")
    .args(["-lnvinfer", "-lnvonnxparser", "-lcudart"]);
    cmd
}

/// Opens a shim just built, so a build that links but cannot load (a missing runtime library) is
/// reported where it happened.
pub fn open_built(built: &BuiltShim) -> Result<std::sync::Arc<Shim>> {
    Shim::open(&built.path)
}

/// Why a release build has no prebuilt shim (its sysroot lacks TensorRT's development files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPrebuilt {
    pub missing: Vec<String>,
}

/// The release's prebuilt shim: built with `compiler` (a cross compiler set up for the sysroot)
/// against the TensorRT and CUDA development files of a JetPack `sysroot`, left in `out_dir` as
/// `libtrident_trt.so` and `shim.json` — the folder `configs/release.yaml` packages from. When the
/// sysroot has no TensorRT, `out_dir` is emptied (a stale build must never be packaged with a new
/// release) and the reason returned.
pub fn build_prebuilt(
    source: &ShimSource,
    sysroot: &Path,
    multiarch: &str,
    compiler: &Path,
    out_dir: &Path,
) -> Result<std::result::Result<ShimRecord, NoPrebuilt>> {
    let stale = [out_dir.join(SHIM_FILE), out_dir.join("shim.json")];
    for f in &stale {
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(f, e)),
        }
    }
    let dev = match TensorRtDevFiles::discover(sysroot, multiarch) {
        Ok(dev) => dev,
        Err(missing) => return Ok(Err(NoPrebuilt { missing })),
    };
    let built = ensure_shim(source, &dev, compiler, &out_dir.join("cache"))?;
    // The library first, the record last: a folder with a record always has its library.
    for (from, to) in [
        (built.path.clone(), stale[0].clone()),
        (built.path.with_file_name("shim.json"), stale[1].clone()),
    ] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(&from, &tmp).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &to).map_err(|e| Error::io(&to, e))?;
    }
    Ok(Ok(built.record))
}
