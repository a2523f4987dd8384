//! Where the edge runtime finds the TensorRT shim (`libtrident_trt.so`), and how `prepare` builds
//! one on the unit when none fits.
//!
//! In order: `$TRIDENT_TRT_SHIM`; the package's prebuilt `lib/libtrident_trt.so` (release CI builds
//! it against a JetPack sysroot with TensorRT); a shim built earlier on this unit from the package's
//! `shim/` source, in the engine cache. The runtime only looks; `prepare` builds the last kind when
//! the others do not fit this unit's TensorRT (JetPack 4.6's 8.0 where the release was built
//! against 4.6.1's 8.2, say), with the unit's C++ compiler and TensorRT development files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use trident_tensorrt::shim_build::ShimSource;
use trident_tensorrt::shim_build::{BuiltShim, ShimRecord, TensorRtDevFiles, ensure_shim};
use trident_tensorrt::{Shim, ShimSearch, describe_tried};

pub use trident_tensorrt::SHIM_FILE;
pub use trident_tensorrt::shim_build::{SHIM_SOURCES, ShimRecord as BuiltShimRecord};

/// A package's prebuilt shim, package-relative.
pub const PACKAGE_SHIM: &str = "lib/libtrident_trt.so";
/// A package's shim source directory, package-relative.
pub const PACKAGE_SHIM_SOURCE: &str = "shim";

/// Where to look for a shim and what to build one from.
#[derive(Clone, Debug)]
pub struct ShimPlan {
    /// Prebuilt shims, in order (`$TRIDENT_TRT_SHIM` is tried before these).
    pub prebuilt: Vec<PathBuf>,
    /// The shim source shipped with the package, if it has one.
    pub source: Option<PathBuf>,
    /// The engine cache: on-unit builds live in its `shim/` folder.
    pub cache_dir: PathBuf,
    /// The root file system holding the TensorRT development files and the compiler (`/` on a unit).
    pub root: PathBuf,
}

/// How the shim in use was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShimOrigin {
    /// `$TRIDENT_TRT_SHIM` or the package's prebuilt one.
    Prebuilt,
    /// Built on this unit earlier (engine cache).
    Cached,
    /// Built on this unit by this call.
    BuiltNow,
}

impl ShimPlan {
    /// The plan for a models folder: the package around it (`<package>/models`) and the package the
    /// running binary belongs to (`<release>/bin/trident-edge`), without duplicates.
    pub fn for_models_dir(models_dir: &Path, cache_dir: &Path) -> Self {
        let mut packages: Vec<PathBuf> = Vec::new();
        if let Some(p) = models_dir.parent() {
            packages.push(p.to_path_buf());
        }
        if let Some(p) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        {
            packages.push(p);
        }
        packages.dedup();
        let prebuilt = packages
            .iter()
            .map(|p| p.join(PACKAGE_SHIM))
            .filter(|p| p.exists())
            .collect();
        let source = packages
            .iter()
            .map(|p| p.join(PACKAGE_SHIM_SOURCE))
            .find(|s| ShimSource::at(s).is_ok());
        ShimPlan {
            prebuilt,
            source,
            cache_dir: cache_dir.to_path_buf(),
            root: PathBuf::from("/"),
        }
    }

    /// Shims earlier built on this unit from this plan's source (any TensorRT version: the
    /// shim itself refuses a version it was not built for).
    pub fn cached(&self) -> Vec<PathBuf> {
        let Some(sha) = self
            .source
            .as_ref()
            .and_then(|s| ShimSource::at(s).ok()?.sha256().ok())
        else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(self.cache_dir.join("shim")) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|dir| {
                std::fs::read(dir.join("shim.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ShimRecord>(&b).ok())
                    .is_some_and(|r| r.source_sha256 == sha)
            })
            .map(|dir| dir.join(SHIM_FILE))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found
    }

    /// The first shim that loads on this unit, or why none does.
    pub fn open(&self) -> Result<(Arc<Shim>, ShimOrigin), String> {
        let prebuilt = ShimSearch::with_env(self.prebuilt.clone());
        let mut tried = match prebuilt.open_first() {
            Ok(shim) => return Ok((shim, ShimOrigin::Prebuilt)),
            Err(tried) => tried,
        };
        let cached = ShimSearch {
            candidates: self.cached(),
        };
        match cached.open_first() {
            Ok(shim) => return Ok((shim, ShimOrigin::Cached)),
            Err(more) => tried.extend(more),
        }
        if tried.is_empty() {
            return Err(
                "no TensorRT shim: the package has none prebuilt and none was built on \
                        this unit (`trident-edge prepare` builds one)"
                    .into(),
            );
        }
        Err(describe_tried(&tried))
    }

    /// [`Self::open`], else a shim built from the package's source with the unit's compiler and
    /// TensorRT development files, then opened. The error says what is missing.
    pub fn open_or_build(&self) -> Result<(Arc<Shim>, ShimOrigin), String> {
        let not_found = match self.open() {
            Ok(found) => return Ok(found),
            Err(why) => why,
        };
        let Some(source) = &self.source else {
            return Err(format!("{not_found}; no shim source to build one from"));
        };
        let built = self
            .build(source)
            .map_err(|e| format!("{not_found}; building one on this unit: {e}"))?;
        let shim = Shim::open(&built.path)
            .map_err(|e| format!("{not_found}; the shim built on this unit does not load: {e}"))?;
        Ok((
            shim,
            if built.built_now {
                ShimOrigin::BuiltNow
            } else {
                ShimOrigin::Cached
            },
        ))
    }

    fn build(&self, source: &Path) -> Result<BuiltShim, String> {
        let source = ShimSource::at(source).map_err(|e| e.to_string())?;
        let dev = dev_files(&self.root)?;
        let compiler = compiler(&self.root).ok_or_else(|| {
            format!(
                "no C++ compiler ($CXX, {root}usr/bin/c++, {root}usr/bin/g++); install it with \
                 `sudo apt install g++`",
                root = root_prefix(&self.root)
            )
        })?;
        ensure_shim(&source, &dev, &compiler, &self.cache_dir).map_err(|e| format!("{e:#}"))
    }
}

/// The TensorRT development files under `root`, for this machine's architecture first.
pub fn dev_files(root: &Path) -> Result<TensorRtDevFiles, String> {
    let native = if cfg!(target_arch = "aarch64") {
        ["aarch64-linux-gnu", "x86_64-linux-gnu"]
    } else {
        ["x86_64-linux-gnu", "aarch64-linux-gnu"]
    };
    let mut first_err = None;
    for multiarch in native {
        match TensorRtDevFiles::discover(root, multiarch) {
            Ok(dev) => return Ok(dev),
            Err(missing) => {
                first_err.get_or_insert(missing);
            }
        }
    }
    Err(format!(
        "TensorRT development files missing: {} (JetPack: sudo apt install nvidia-tensorrt-dev, \
         or libnvinfer-dev libnvonnxparsers-dev cuda-cudart-dev-10-2)",
        first_err.unwrap_or_default().join(", ")
    ))
}

/// `$CXX`, else the root's `usr/bin/c++` or `usr/bin/g++`.
pub fn compiler(root: &Path) -> Option<PathBuf> {
    if let Some(c) =
        std::env::var_os(trident_tensorrt::shim_build::CXX_ENV).filter(|v| !v.is_empty())
    {
        return Some(PathBuf::from(c));
    }
    ["usr/bin/c++", "usr/bin/g++"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
}

fn root_prefix(root: &Path) -> String {
    let s = root.display().to_string();
    if s.ends_with('/') { s } else { format!("{s}/") }
}
