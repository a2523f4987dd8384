//! Classifying a failed build from its log, shared by trtexec and the native builder, so the user is
//! told whether to fix the model, free memory, or report a TensorRT problem.

use std::path::Path;

use crate::Error;
use crate::builder::tail_lines;

/// How many log lines an error carries.
pub const LOG_TAIL_LINES: usize = 20;

/// Log fragments (lower-cased) that mean the build ran out of GPU memory. Note that a bare
/// "Error Code 2" is TensorRT's `kINTERNAL_ERROR`, also used for assertion failures, so only
/// "Error Code 2: OutOfMemory" (caught by "outofmemory") counts.
const OOM_PATTERNS: &[&str] = &[
    "out of memory",
    "outofmemory",
    "requested amount of gpu memory",
    "cuda_error_out_of_memory",
    "std::bad_alloc",
];

/// Log fragments (lower-cased) of an ONNX parse failure in the ONNX parser or in trtexec
/// ("Failed to parse onnx file", "Failed to parse ONNX model from file", "Parsing model failed").
/// A bare "failed to parse" is not enough: trtexec also says it about its own options.
const PARSE_PATTERNS: &[&str] = &[
    "failed to parse onnx",
    "parsing model failed",
    "unsupported_node",
];

fn is_parse_failure(lower: &str) -> bool {
    PARSE_PATTERNS.iter().any(|p| lower.contains(p))
        || lower
            .lines()
            .any(|l| l.contains("[onnxparser]") && l.contains("failed to parse"))
}

/// Kinds of failure a builder may already know from its own status (the native shim does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureHint {
    /// Nothing known beyond "it failed"; the log decides.
    Unknown,
    OutOfMemory,
    ParseFailed,
}

/// Turns a failed build's log into the most specific [`Error`]: unsupported operator / parse
/// failure first (the strongest signal; parsing happens before any memory is requested), then out
/// of memory, else [`Error::BuildFailed`] with `message`. Every variant carries the last
/// [`LOG_TAIL_LINES`] lines.
pub fn classify_failure(
    builder: &str,
    onnx: &Path,
    workspace_mib: u64,
    log: &str,
    hint: FailureHint,
    message: String,
) -> Error {
    let log_tail = tail_lines(log, LOG_TAIL_LINES);
    let lower = log.to_ascii_lowercase();
    let op = unsupported_op(log);
    if op.is_some() || hint == FailureHint::ParseFailed || is_parse_failure(&lower) {
        return Error::UnsupportedOp {
            builder: builder.to_string(),
            onnx: onnx.to_path_buf(),
            op,
            log_tail,
        };
    }
    if hint == FailureHint::OutOfMemory || OOM_PATTERNS.iter().any(|p| lower.contains(p)) {
        return Error::OutOfMemory {
            builder: builder.to_string(),
            workspace_mib,
            log_tail,
        };
    }
    Error::BuildFailed {
        builder: builder.to_string(),
        message,
        log_tail,
    }
}

/// The operator TensorRT's ONNX parser could not import, from
/// `No importer registered for op: NAME. Attempting to import as plugin.` (onnx-tensorrt
/// ModelImporter.cpp, 8.x–10.x) or, failing that, from the node context of a parse error,
/// `While parsing node number 7 [NAME -> "out"]:`. Only returned when the log also shows the
/// import failed, since the first message alone is followed by a successful plugin import when a
/// plugin exists.
pub fn unsupported_op(log: &str) -> Option<String> {
    let failed = log.contains("Plugin not found") || is_parse_failure(&log.to_ascii_lowercase());
    if !failed {
        return None;
    }
    if let Some(op) = after(log, "No importer registered for op: ", |c| {
        c.is_alphanumeric() || c == '_'
    }) {
        return Some(op);
    }
    let i = log.find("While parsing node number ")?;
    after(&log[i..], "[", |c| c.is_alphanumeric() || c == '_')
}

fn after(text: &str, marker: &str, keep: impl Fn(char) -> bool) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let word: String = text[start..].chars().take_while(|c| keep(*c)).collect();
    (!word.is_empty()).then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(log: &str) -> Error {
        classify_failure(
            "trtexec",
            Path::new("m.onnx"),
            1024,
            log,
            FailureHint::Unknown,
            "exit status 1".into(),
        )
    }

    #[test]
    fn unsupported_op_from_trt_8_2_log() {
        let log = "[I] [TRT] No importer registered for op: GridSample. Attempting to import as plugin.\n\
                   [I] [TRT] Searching for plugin: GridSample, plugin_version: 1, plugin_namespace: \n\
                   [E] [TRT] ModelImporter.cpp:773: While parsing node number 171 [GridSample -> \"y\"]:\n\
                   [E] [TRT] 3: getPluginCreator could not find plugin: GridSample version: 1\n\
                   [E] [TRT] In node 171 (importFallbackPluginImporter): UNSUPPORTED_NODE: Assertion failed: creator && \"Plugin not found\"\n\
                   [E] Failed to parse onnx file\n&&&& FAILED TensorRT.trtexec [TensorRT v8201]";
        match classify(log) {
            Error::UnsupportedOp { op, onnx, .. } => {
                assert_eq!(op.as_deref(), Some("GridSample"));
                assert_eq!(onnx, Path::new("m.onnx"));
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn plugin_import_that_succeeded_is_not_a_failure_reason() {
        let log = "[I] [TRT] No importer registered for op: EfficientNMS_TRT. Attempting to import as plugin.\n\
                   [I] [TRT] Successfully created plugin: EfficientNMS_TRT\n[E] Error[1]: Cuda Runtime (unknown error)";
        assert!(matches!(classify(log), Error::BuildFailed { .. }));
    }

    #[test]
    fn op_from_node_context_in_trt_10_log() {
        let log = "[E] [TRT] ModelImporter.cpp:949: While parsing node number 3 [Foo -> \"/m/Foo_output_0\"]:\n\
                   [E] [TRT] ModelImporter.cpp:952: --- Begin node ---\n[E] Failed to parse onnx file";
        assert_eq!(unsupported_op(log).as_deref(), Some("Foo"));
    }

    #[test]
    fn onnxparser_prefix_and_option_errors() {
        let log = "[ONNXParser] ERROR: model.onnx: failed to parse node 12";
        assert!(matches!(
            classify(log),
            Error::UnsupportedOp { op: None, .. }
        ));
        let opt =
            "[E] Negative memory pool size conversion failure: failed to parse --memPoolSize.";
        assert!(matches!(classify(opt), Error::BuildFailed { .. }));
    }

    #[test]
    fn oom_patterns() {
        for log in [
            "[E] [TRT] 2: [virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory (no further information)",
            "[W] [TRT] Requested amount of GPU memory (1073741824 bytes) could not be allocated.",
            "[E] [TRT] 1: [defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)",
            "CUDA_ERROR_OUT_OF_MEMORY",
        ] {
            assert!(
                matches!(
                    classify(log),
                    Error::OutOfMemory {
                        workspace_mib: 1024,
                        ..
                    }
                ),
                "{log}"
            );
        }
        let internal = "[E] [TRT] 2: [ltWrapper.cpp::setupHeuristic::327] Error Code 2: Internal Error (Assertion cublasStatus == CUBLAS_STATUS_SUCCESS failed.)";
        assert!(matches!(classify(internal), Error::BuildFailed { .. }));
    }

    #[test]
    fn hints_win_over_a_silent_log() {
        let e = classify_failure(
            "native",
            Path::new("m.onnx"),
            256,
            "",
            FailureHint::OutOfMemory,
            String::new(),
        );
        assert!(matches!(
            e,
            Error::OutOfMemory {
                workspace_mib: 256,
                ..
            }
        ));
        let e = classify_failure(
            "native",
            Path::new("m.onnx"),
            256,
            "",
            FailureHint::ParseFailed,
            String::new(),
        );
        assert!(matches!(e, Error::UnsupportedOp { op: None, .. }));
    }
}
