//! Building through NVIDIA's `trtexec` program, which ships with every TensorRT install (JetPack puts
//! it at /usr/src/tensorrt/bin/trtexec, not on PATH). Needs nothing at compile time, so it is the
//! builder a stock trident binary uses.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::builder::{check_onnx, tail_lines};
use crate::outcome::{FailureHint, LOG_TAIL_LINES, classify_failure};
use crate::{BuildReport, BuildRequest, EngineBuilder, Error, Precision, Result, TrtVersion};

/// Environment variable naming the trtexec program; checked before PATH.
pub const TRTEXEC_ENV: &str = "TRTEXEC";
/// Where JetPack installs trtexec.
pub const JETPACK_TRTEXEC: &str = "/usr/src/tensorrt/bin/trtexec";

/// The external `trtexec` builder.
#[derive(Debug)]
pub struct Trtexec {
    program: PathBuf,
    /// Read from the banner once; `trtexec --help` loads libnvinfer, which takes a while on a Nano.
    version: OnceLock<TrtVersion>,
}

impl Trtexec {
    /// `$TRTEXEC`, then `trtexec` on `$PATH`, then [`JETPACK_TRTEXEC`].
    pub fn discover() -> Option<Self> {
        let env = std::env::var_os(TRTEXEC_ENV);
        let path = std::env::var_os("PATH");
        Self::discover_in(env.as_deref(), path.as_deref(), Path::new(JETPACK_TRTEXEC)).ok()
    }

    /// [`Self::discover`] with its inputs injected. On failure returns what was tried, for
    /// [`Error::NoTensorRt`].
    pub fn discover_in(
        trtexec_env: Option<&OsStr>,
        path_env: Option<&OsStr>,
        jetpack: &Path,
    ) -> Result<Self, Vec<String>> {
        let mut tried = Vec::new();
        match trtexec_env.filter(|v| !v.is_empty()) {
            Some(p) if is_executable(Path::new(p)) => return Ok(Self::at(p)),
            Some(p) => {
                tracing::warn!(program = %Path::new(p).display(), "{TRTEXEC_ENV} is not an executable file; ignoring it");
                tried.push(format!(
                    "{TRTEXEC_ENV}={} (not an executable file)",
                    Path::new(p).display()
                ));
            }
            None => tried.push(format!("{TRTEXEC_ENV} (unset)")),
        }
        if let Some(found) = path_env
            .into_iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("trtexec"))
            .find(|p| is_executable(p))
        {
            return Ok(Self::at(found));
        }
        tried.push("trtexec on PATH (not found)".to_string());
        if is_executable(jetpack) {
            return Ok(Self::at(jetpack));
        }
        tried.push(format!("{} (not found)", jetpack.display()));
        Err(tried)
    }

    /// A trtexec at a known path.
    pub fn at(program: impl Into<PathBuf>) -> Self {
        Trtexec {
            program: program.into(),
            version: OnceLock::new(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The TensorRT version, from the banner `trtexec --help` prints first
    /// (`&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --help`).
    pub fn version(&self) -> Result<TrtVersion> {
        if let Some(v) = self.version.get() {
            return Ok(*v);
        }
        let out = Command::new(&self.program)
            .arg("--help")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(&self.program, e))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = TrtVersion::from_trtexec_banner(&text).ok_or_else(|| Error::Tool {
            program: self.program.clone(),
            message: format!(
                "expected a `[TensorRT vNNNN]` banner from `--help` (is this trtexec?); it exited with {} and printed: {}",
                out.status,
                tail_lines(&text, 5)
            ),
        })?;
        Ok(*self.version.get_or_init(|| v))
    }

    /// The arguments (after the program) for building `req` into `engine_out` with trtexec of
    /// `version`, in this order:
    /// `--onnx=<onnx> --saveEngine=<out> <workspace flag> <skip-inference flag> [--fp16] [--timingCacheFile=<path>]`.
    /// The workspace flag is `--workspace=N` before 8.4, `--memPoolSize=workspace:N` from 8.4 and
    /// `--memPoolSize=workspace:NM` from 10.1 (see [`TrtVersion::workspace_flag`]). No shape flags:
    /// trident's models have static input shapes, which trtexec takes from the ONNX.
    pub fn command_line(
        &self,
        req: &BuildRequest,
        engine_out: &Path,
        version: &TrtVersion,
    ) -> Vec<OsString> {
        let mut args = vec![
            flag_path("--onnx=", &req.onnx),
            flag_path("--saveEngine=", engine_out),
            version.workspace_flag(req.workspace_mib).into(),
            version.skip_inference_flag().into(),
        ];
        if req.precision == Precision::Fp16 {
            args.push("--fp16".into());
        }
        if let Some(cache) = &req.timing_cache {
            args.push(flag_path("--timingCacheFile=", cache));
        }
        args
    }
}

impl EngineBuilder for Trtexec {
    fn name(&self) -> &'static str {
        "trtexec"
    }

    fn tensorrt_version(&self) -> Result<String> {
        self.version().map(|v| v.to_string())
    }

    /// Runs trtexec with `--saveEngine` pointing at a temporary file next to `engine_out`, renamed
    /// into place only when trtexec exits 0 *and* prints `&&&& PASSED`; otherwise the temporary
    /// file is removed and the log is classified (unsupported op, out of memory, other).
    fn build(&self, req: &BuildRequest, engine_out: &Path) -> Result<BuildReport> {
        check_onnx(req)?;
        let version = self.version()?;
        if req.precision == Precision::Fp16 && !version.has_fp16_flag() {
            return Err(Error::PrecisionUnavailable {
                builder: self.name().to_string(),
                tensorrt_version: version.to_string(),
                message: "TensorRT 11 removed --fp16 (networks are strongly typed); export an fp16 ONNX and build it as fp32".to_string(),
            });
        }
        let dir = match engine_out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let name = engine_out.file_name().unwrap_or(OsStr::new("engine"));
        let partial = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .into_temp_path();
        let args = self.command_line(req, &partial, &version);
        tracing::debug!(program = %self.program.display(), ?args, "running trtexec");

        // One file for stdout and stderr keeps trtexec's messages in the order it wrote them.
        let mut log_file = tempfile::tempfile().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let clone = || {
            log_file
                .try_clone()
                .map_err(|e| Error::io(std::env::temp_dir(), e))
        };
        let started = Instant::now();
        let status = Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(clone()?)
            .stderr(clone()?)
            .status()
            .map_err(|e| Error::io(&self.program, e))?;
        let seconds = started.elapsed().as_secs_f64();
        let log = read_log(&mut log_file)?;

        let passed = log.contains("&&&& PASSED");
        if !(status.success() && passed) {
            let message = if status.success() {
                format!(
                    "{} exited 0 without printing `&&&& PASSED`",
                    self.program.display()
                )
            } else {
                format!("{} exited with {status}", self.program.display())
            };
            // `partial` is dropped here, removing whatever trtexec wrote.
            return Err(classify_failure(
                self.name(),
                &req.onnx,
                req.workspace_mib,
                &log,
                FailureHint::Unknown,
                message,
            ));
        }
        let size = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if size == 0 {
            return Err(Error::BuildFailed {
                builder: self.name().to_string(),
                message: format!(
                    "trtexec reported PASSED but wrote no engine to {}",
                    partial.display()
                ),
                log_tail: tail_lines(&log, LOG_TAIL_LINES),
            });
        }
        partial
            .persist(engine_out)
            .map_err(|e| Error::io(engine_out, e.error))?;
        tracing::info!(engine = %engine_out.display(), seconds, bytes = size, "trtexec built the engine");
        Ok(BuildReport {
            builder: self.name().to_string(),
            tensorrt_version: version.to_string(),
            seconds,
            log_tail: tail_lines(&log, LOG_TAIL_LINES),
        })
    }
}

pub(crate) fn read_log(file: &mut File) -> Result<String> {
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) fn flag_path(flag: &str, path: &Path) -> OsString {
    let mut s = OsString::from(flag);
    s.push(path.as_os_str());
    s
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}
