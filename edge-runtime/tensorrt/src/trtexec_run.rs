//! Running a built engine once through trtexec, for checking its outputs on a machine whose trident
//! was built without the `tensorrt` feature (the stock binary). Slower than the in-process runtime
//! (trtexec deserializes the engine on every call) but needs nothing at compile time.
//!
//! The flags are the same from TensorRT 8.2 to 10.x (`samples/common/sampleOptions.cpp`):
//! `--loadEngine=E --loadInputs=NAME:FILE --exportOutput=JSON`, plus `--iterations=1 --warmUp=0
//! --duration=0 --avgRuns=1` so trtexec runs the engine once instead of benchmarking it for 3 s.
//! `--loadInputs` reads the file's raw bytes into the input buffer (float32, little-endian on
//! every Jetson and x86). `--exportOutput` writes (`sampleReporting.cpp`, `exportJSONOutput`):
//!
//! ```text
//! [
//!   { "name" : "output0"
//!   , "dimensions" : "1x7x189"
//!   , "values" : [ 0.5, 12.25, nan, … ]
//!   }
//! ]
//! ```
//!
//! Values are printed by a default `std::ostream`: 6 significant digits (relative error ≤ 5e-6,
//! far below fp16's 1e-3), and `nan`/`-nan`/`inf`, which are not JSON, so the file is read by the
//! small parser below rather than serde_json.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::builder::tail_lines;
use crate::outcome::LOG_TAIL_LINES;
use crate::trtexec::{flag_path, read_log};
use crate::{Error, Result, Trtexec};

/// One output tensor from trtexec's `--exportOutput` file.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Trtexec {
    /// The arguments (after the program) for running `engine` once on the raw float32 file
    /// `input_file` fed to `input_name`, writing every output to `export`.
    pub fn infer_command_line(
        &self,
        engine: &Path,
        input_name: &str,
        input_file: &Path,
        export: &Path,
    ) -> Vec<OsString> {
        let mut inputs = OsString::from(format!("--loadInputs={input_name}:"));
        inputs.push(input_file.as_os_str());
        vec![
            flag_path("--loadEngine=", engine),
            inputs,
            flag_path("--exportOutput=", export),
            "--iterations=1".into(),
            "--warmUp=0".into(),
            "--duration=0".into(),
            "--avgRuns=1".into(),
        ]
    }

    /// Runs `engine` once on `input` (NCHW float32 for the input named `input_name`) and returns
    /// every output. Scratch files live in a temporary directory removed on return. trtexec must
    /// exit 0 and print `&&&& PASSED`, and its export must parse, or the error carries its log.
    pub fn infer(
        &self,
        engine: &Path,
        input_name: &str,
        input: &[f32],
    ) -> Result<Vec<ExportedTensor>> {
        let scratch = tempfile::Builder::new()
            .prefix("trident-trtexec-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        // trtexec splits --loadInputs at ',' and at the last ':', so neither may be in the path.
        let text = scratch.path().to_string_lossy();
        if text.contains([',', ':']) || input_name.contains(',') {
            return Err(Error::BadInput {
                path: scratch.path().to_path_buf(),
                expected: format!(
                    "a scratch directory and input name ({input_name}) without ',' or ':' \
                     (trtexec's --loadInputs cannot quote them); set TMPDIR to another directory"
                ),
            });
        }
        let input_file = scratch.path().join("input.bin");
        let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&input_file, &bytes).map_err(|e| Error::io(&input_file, e))?;
        let export = scratch.path().join("output.json");
        let args = self.infer_command_line(engine, input_name, &input_file, &export);
        tracing::debug!(program = %self.program().display(), ?args, "running an engine through trtexec");

        let mut log_file =
            tempfile::tempfile_in(scratch.path()).map_err(|e| Error::io(scratch.path(), e))?;
        let clone = || {
            log_file
                .try_clone()
                .map_err(|e| Error::io(scratch.path(), e))
        };
        let status = Command::new(self.program())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(clone()?)
            .stderr(clone()?)
            .status()
            .map_err(|e| Error::io(self.program(), e))?;
        let log = read_log(&mut log_file)?;
        let fail = |message: String| Error::Engine {
            engine: engine.to_path_buf(),
            message,
            log_tail: tail_lines(&log, LOG_TAIL_LINES),
        };
        if !status.success() || !log.contains("&&&& PASSED") {
            return Err(fail(format!(
                "{} --loadEngine exited with {status}{}",
                self.program().display(),
                if status.success() {
                    " without printing `&&&& PASSED`"
                } else {
                    ""
                }
            )));
        }
        let text = std::fs::read_to_string(&export)
            .map_err(|e| fail(format!("no --exportOutput file {}: {e}", export.display())))?;
        parse_exported_output(&text)
            .map_err(|e| fail(format!("unreadable --exportOutput file: {e}")))
    }
}

impl Trtexec {
    /// [`Self::infer`], keeping only the output named `output_name` — or the only output,
    /// whatever its name, as tract takes a model's first output.
    pub fn infer_output(
        &self,
        engine: &Path,
        input_name: &str,
        input: &[f32],
        output_name: &str,
    ) -> Result<ExportedTensor> {
        let tensors = self.infer(engine, input_name, input)?;
        let names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
        let only = tensors.len() == 1;
        tensors
            .into_iter()
            .find(|t| only || t.name == output_name)
            .ok_or_else(|| Error::Engine {
                engine: engine.to_path_buf(),
                message: format!("trtexec exported no output {output_name} (only {names:?})"),
                log_tail: String::new(),
            })
    }
}

/// Parses trtexec's `--exportOutput` file (format in the module documentation).
pub fn parse_exported_output(text: &str) -> std::result::Result<Vec<ExportedTensor>, String> {
    let mut rest = text;
    let mut tensors = Vec::new();
    while let Some(i) = rest.find("\"name\"") {
        rest = &rest[i + "\"name\"".len()..];
        let name = quoted_value(&mut rest, "name")?;
        let k = rest
            .find("\"dimensions\"")
            .ok_or_else(|| format!("tensor {name}: no \"dimensions\""))?;
        rest = &rest[k + "\"dimensions\"".len()..];
        let dims = quoted_value(&mut rest, "dimensions")?;
        let k = rest
            .find("\"values\"")
            .ok_or_else(|| format!("tensor {name}: no \"values\""))?;
        rest = &rest[k + "\"values\"".len()..];
        let open = rest
            .find('[')
            .ok_or_else(|| format!("tensor {name}: \"values\" is not a list"))?;
        let close = rest[open..]
            .find(']')
            .ok_or_else(|| format!("tensor {name}: unterminated \"values\" list"))?
            + open;
        let values = rest[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<f32>()
                    .map_err(|_| format!("tensor {name}: {t:?} is not a number"))
            })
            .collect::<std::result::Result<Vec<f32>, String>>()?;
        rest = &rest[close + 1..];
        let shape = if dims.is_empty() {
            Vec::new()
        } else {
            dims.split('x')
                .map(|d| d.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<usize>, _>>()
                .map_err(|_| format!("tensor {name}: dimensions {dims:?} are not AxBxC"))?
        };
        let want: usize = shape.iter().product();
        if values.len() != want {
            return Err(format!(
                "tensor {name}: {} values for dimensions {dims} ({want})",
                values.len()
            ));
        }
        tensors.push(ExportedTensor {
            name,
            shape,
            values,
        });
    }
    if tensors.is_empty() {
        return Err(
            "no tensors (expected [ { \"name\" : …, \"dimensions\" : …, \"values\" : [ … ] } ])"
                .into(),
        );
    }
    Ok(tensors)
}

/// After a key: skips `:` and returns the following `"…"` string (trtexec does not escape).
fn quoted_value(rest: &mut &str, key: &str) -> std::result::Result<String, String> {
    let s = rest.trim_start();
    let s = s
        .strip_prefix(':')
        .ok_or_else(|| format!("no ':' after \"{key}\""))?
        .trim_start();
    let s = s
        .strip_prefix('"')
        .ok_or_else(|| format!("\"{key}\" is not a string"))?;
    let end = s
        .find('"')
        .ok_or_else(|| format!("unterminated \"{key}\""))?;
    *rest = &s[end + 1..];
    Ok(s[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte for byte what TensorRT 8.2's exportJSONOutput writes for two outputs.
    const EXPORT_82: &str = "[\n  { \"name\" : \"output0\"\n  , \"dimensions\" : \"1x2x3\"\n  , \"values\" : [ 0.5, -1.25e-05, 3, nan, -inf, 640 ]\n  }\n, { \"name\" : \"extra\"\n  , \"dimensions\" : \"2\"\n  , \"values\" : [ 1, 2 ]\n  }\n]\n";

    #[test]
    fn parses_trtexec_exports_including_non_json_numbers() {
        let t = parse_exported_output(EXPORT_82).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].name.as_str(), t[0].shape.as_slice()),
            ("output0", &[1, 2, 3][..])
        );
        assert_eq!(t[0].values[..3], [0.5, -1.25e-5, 3.0]);
        assert!(t[0].values[3].is_nan());
        assert_eq!(t[0].values[4], f32::NEG_INFINITY);
        assert_eq!(
            (t[1].name.as_str(), t[1].values.as_slice()),
            ("extra", &[1.0, 2.0][..])
        );
    }

    #[test]
    fn refuses_exports_that_do_not_add_up() {
        let short = EXPORT_82.replace("640 ]", "]");
        assert!(
            parse_exported_output(&short)
                .unwrap_err()
                .contains("5 values for dimensions 1x2x3")
        );
        assert!(
            parse_exported_output("[\n]\n")
                .unwrap_err()
                .contains("no tensors")
        );
        let bad = EXPORT_82.replace("nan", "oops");
        assert!(
            parse_exported_output(&bad)
                .unwrap_err()
                .contains("\"oops\" is not a number")
        );
        let dims = EXPORT_82.replace("1x2x3", "1,2,3");
        assert!(
            parse_exported_output(&dims)
                .unwrap_err()
                .contains("not AxBxC")
        );
    }

    #[test]
    fn command_line_runs_the_engine_once() {
        let t = Trtexec::at("/usr/src/tensorrt/bin/trtexec");
        let args = t.infer_command_line(
            Path::new("/c/e.engine"),
            "images",
            Path::new("/s/in.bin"),
            Path::new("/s/out.json"),
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--loadEngine=/c/e.engine",
                "--loadInputs=images:/s/in.bin",
                "--exportOutput=/s/out.json",
                "--iterations=1",
                "--warmUp=0",
                "--duration=0",
                "--avgRuns=1"
            ]
        );
    }
}
