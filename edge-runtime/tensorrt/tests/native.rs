//! The native builder through the C++ shim (feature `tensorrt` only). Runs on a machine with
//! TensorRT, or against stub libraries (README.md, "Compile check") that exercise the FFI without a
//! GPU: either way a file that is not an ONNX model must fail cleanly, with a log and no engine.
#![cfg(feature = "tensorrt")]

use trident_tensorrt::{BuildRequest, EngineBuilder, Error, NativeBuilder, Precision, TrtVersion};

#[test]
fn native_builder_fails_cleanly_on_a_non_onnx_file() {
    let b = NativeBuilder::new().expect("the loaded libnvinfer matches the headers");
    let v: TrtVersion = b.tensorrt_version().unwrap().parse().unwrap();
    assert!(v.major >= 8, "{v}");

    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("not-a-model.onnx");
    std::fs::write(&onnx, b"definitely not protobuf").unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let out = dir.path().join("out/model.engine");
    let req = BuildRequest::new(&onnx, Precision::Fp32, [1, 3, 64, 64]);

    let e = b.build(&req, &out).unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedOp { .. } | Error::BuildFailed { .. }),
        "{e:?}"
    );
    assert!(
        !e.log_tail().unwrap_or_default().is_empty(),
        "the shim's log reaches Rust: {e:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        0,
        "no engine, no temporary"
    );
}
