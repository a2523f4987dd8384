//! The trtexec builder against a stand-in trtexec script: exact arguments per TensorRT version,
//! version parsing, outcome classification and atomic engine output.
#![cfg(unix)]

use crate::common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::{FakeTrtexec, listing};
use trident_tensorrt::{BuildRequest, EngineBuilder, Error, Precision, TrtVersion, Trtexec};

/// A workspace with a model named `name` (its bytes are the name) and an `out/` directory.
fn model(name: &str) -> (tempfile::TempDir, BuildRequest, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join(name);
    std::fs::write(&onnx, name.as_bytes()).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let out = dir.path().join("out").join("model.engine");
    (
        dir,
        BuildRequest::new(onnx, Precision::Fp16, [1, 3, 640, 640]),
        out,
    )
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Checks the recorded `--saveEngine` is a temporary file next to `out` and returns the rest.
fn split_save_engine(argv: &[String], out: &Path) -> Vec<String> {
    let save = argv[1]
        .strip_prefix("--saveEngine=")
        .expect("second argument is --saveEngine");
    let save = Path::new(save);
    assert_eq!(
        save.parent(),
        out.parent(),
        "temporary engine must be next to the destination"
    );
    let name = save.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(".model.engine.") && name.ends_with(".partial"),
        "{name}"
    );
    let mut rest = argv.to_vec();
    rest.remove(1);
    rest
}

#[test]
fn trt_8_2_arguments_version_and_engine() {
    let fake = FakeTrtexec::new(8201);
    let t = fake.trtexec();
    let (dir, mut req, out) = model("model.onnx");
    req.timing_cache = Some(dir.path().join("timing.cache"));
    assert_eq!(t.tensorrt_version().unwrap(), "8.2.1");

    let report = t.build(&req, &out).unwrap();
    assert_eq!(report.builder, "trtexec");
    assert_eq!(report.tensorrt_version, "8.2.1");
    assert!(
        report
            .log_tail
            .lines()
            .last()
            .unwrap()
            .starts_with("&&&& PASSED"),
        "{}",
        report.log_tail
    );
    assert!(report.seconds >= 0.0);
    assert_eq!(
        split_save_engine(&fake.argv(), &out),
        vec![
            format!("--onnx={}", s(&req.onnx)),
            "--workspace=1024".to_string(),
            "--buildOnly".to_string(),
            "--fp16".to_string(),
            format!("--timingCacheFile={}", s(&dir.path().join("timing.cache"))),
        ]
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"engine(model.onnx)");
    assert_eq!(
        listing(out.parent().unwrap()),
        vec!["model.engine"],
        "no temporary file left"
    );
    assert_eq!(
        fake.help_calls(),
        1,
        "the version is probed once and remembered"
    );
}

#[test]
fn trt_10_arguments() {
    let fake = FakeTrtexec::new(100300);
    let t = fake.trtexec();
    let (_dir, mut req, out) = model("model.onnx");
    req.precision = Precision::Fp32;
    req.workspace_mib = 512;
    assert_eq!(t.tensorrt_version().unwrap(), "10.3.0");
    t.build(&req, &out).unwrap();
    assert_eq!(
        split_save_engine(&fake.argv(), &out),
        vec![
            format!("--onnx={}", s(&req.onnx)),
            "--memPoolSize=workspace:512M".to_string(),
            "--skipInference".to_string(),
        ]
    );
}

#[test]
fn command_line_per_version() {
    let t = Trtexec::at("/opt/trtexec");
    let mut req = BuildRequest::new("/m/yolo.onnx", Precision::Fp16, [1, 3, 320, 320]);
    req.timing_cache = Some("/c/t.cache".into());
    let line = |v: &str| -> Vec<OsString> {
        t.command_line(
            &req,
            Path::new("/e/y.engine"),
            &v.parse::<TrtVersion>().unwrap(),
        )
    };
    let expect = |ws: &str, skip: &str| -> Vec<OsString> {
        [
            "--onnx=/m/yolo.onnx",
            "--saveEngine=/e/y.engine",
            ws,
            skip,
            "--fp16",
            "--timingCacheFile=/c/t.cache",
        ]
        .map(OsString::from)
        .to_vec()
    };
    assert_eq!(line("8.2.1"), expect("--workspace=1024", "--buildOnly"));
    assert_eq!(
        line("8.4.3"),
        expect("--memPoolSize=workspace:1024", "--buildOnly")
    );
    assert_eq!(
        line("8.6.1"),
        expect("--memPoolSize=workspace:1024", "--skipInference")
    );
    assert_eq!(
        line("10.0.1"),
        expect("--memPoolSize=workspace:1024", "--skipInference")
    );
    assert_eq!(
        line("10.3.0"),
        expect("--memPoolSize=workspace:1024M", "--skipInference")
    );
}

#[test]
fn unsupported_op_is_reported_with_the_op_and_log_tail() {
    let fake = FakeTrtexec::new(8201);
    let (_dir, req, out) = model("unsupported.onnx");
    let e = fake.trtexec().build(&req, &out).unwrap_err();
    match &e {
        Error::UnsupportedOp {
            builder,
            onnx,
            op,
            log_tail,
        } => {
            assert_eq!(builder, "trtexec");
            assert_eq!(onnx, &req.onnx);
            assert_eq!(op.as_deref(), Some("GridSample"));
            assert_eq!(log_tail.lines().count(), 20);
            assert!(log_tail.contains("Failed to parse onnx file"), "{log_tail}");
            assert!(
                log_tail.lines().last().unwrap().starts_with("&&&& FAILED"),
                "{log_tail}"
            );
        }
        e => panic!("expected UnsupportedOp, got {e:?}"),
    }
    assert!(e.is_input_error());
    assert!(
        e.to_string().contains("unsupported.onnx") && e.to_string().contains("GridSample"),
        "{e}"
    );
    assert!(listing(out.parent().unwrap()).is_empty());
}

#[test]
fn out_of_memory_suggests_remedies() {
    let fake = FakeTrtexec::new(8201);
    let (_dir, mut req, out) = model("oom.onnx");
    req.workspace_mib = 512;
    let e = fake.trtexec().build(&req, &out).unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutOfMemory {
                workspace_mib: 512,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_input_error());
    let msg = e.to_string();
    assert!(
        msg.contains("sudo systemctl isolate multi-user.target") && msg.contains("512 MiB"),
        "{msg}"
    );
    assert!(
        msg.contains("Error Code 2: OutOfMemory"),
        "message carries the log tail: {msg}"
    );
    assert!(listing(out.parent().unwrap()).is_empty());
}

#[test]
fn crash_mid_write_leaves_no_partial_engine_and_keeps_the_old_one() {
    let fake = FakeTrtexec::new(8201);
    let (_dir, req, out) = model("crash.onnx");
    std::fs::write(&out, b"previous good engine").unwrap();
    let e = fake.trtexec().build(&req, &out).unwrap_err();
    match &e {
        Error::BuildFailed {
            builder,
            message,
            log_tail,
        } => {
            assert_eq!(builder, "trtexec");
            assert!(
                message.contains("exited with") && message.contains("139"),
                "{message}"
            );
            assert!(log_tail.contains("simulated crash"), "{log_tail}");
        }
        e => panic!("expected BuildFailed, got {e:?}"),
    }
    assert_eq!(listing(out.parent().unwrap()), vec!["model.engine"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous good engine");
}

#[test]
fn exit_zero_without_passed_is_a_failure() {
    let fake = FakeTrtexec::new(100300);
    let (_dir, req, out) = model("nopass.onnx");
    let e = fake.trtexec().build(&req, &out).unwrap_err();
    assert!(
        matches!(&e, Error::BuildFailed { message, .. } if message.contains("without printing `&&&& PASSED`")),
        "{e:?}"
    );
    assert!(listing(out.parent().unwrap()).is_empty());
}

#[test]
fn missing_onnx_is_an_input_error_and_runs_nothing() {
    let fake = FakeTrtexec::new(8201);
    let dir = tempfile::tempdir().unwrap();
    let req = BuildRequest::new(
        dir.path().join("nope.onnx"),
        Precision::Fp32,
        [1, 3, 64, 64],
    );
    let e = fake
        .trtexec()
        .build(&req, &dir.path().join("x.engine"))
        .unwrap_err();
    assert!(e.is_input_error(), "{e:?}");
    assert!(e.to_string().contains("nope.onnx"), "{e}");
    assert_eq!(fake.builds(), 0);
}

#[test]
fn fp16_on_tensorrt_11_is_refused_before_running() {
    let fake = FakeTrtexec::new(110100);
    let (_dir, req, out) = model("model.onnx");
    let e = fake.trtexec().build(&req, &out).unwrap_err();
    assert!(
        matches!(&e, Error::PrecisionUnavailable { tensorrt_version, .. } if tensorrt_version == "11.1.0"),
        "{e:?}"
    );
    assert_eq!(fake.builds(), 0);
}

#[test]
fn a_program_without_the_banner_is_not_trtexec() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not-trtexec");
    common::install_script(&p, "#!/bin/sh\necho 'usage: something else'\n");
    let e = Trtexec::at(&p).tensorrt_version().unwrap_err();
    assert!(matches!(e, Error::Tool { .. }), "{e:?}");
    assert!(
        e.to_string().contains("not-trtexec") && e.to_string().contains("banner"),
        "{e}"
    );
    let e = Trtexec::at(dir.path().join("absent"))
        .tensorrt_version()
        .unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("absent"),
        "{e:?}"
    );
}
