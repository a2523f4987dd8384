//! Finding a builder: trtexec discovery order, trtexec when there is no shim, and the error when
//! nothing is available.
#![cfg(unix)]

use crate::common;

use std::ffi::OsString;
use std::path::Path;

use common::install_script;
use trident_tensorrt::{Error, Trtexec, select_builder_in};

fn exe(dir: &Path, rel: &str) -> std::path::PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    install_script(&p, "#!/bin/sh\nexit 0\n");
    p
}

#[test]
fn discovery_order_env_then_path_then_jetpack() {
    let d = tempfile::tempdir().unwrap();
    let from_env = exe(d.path(), "env/trtexec");
    let from_path = exe(d.path(), "bin/trtexec");
    let jetpack = exe(d.path(), "usr/src/tensorrt/bin/trtexec");
    let path: OsString =
        std::env::join_paths([d.path().join("empty"), d.path().join("bin")]).unwrap();

    let t = Trtexec::discover_in(Some(from_env.as_os_str()), Some(&path), &jetpack).unwrap();
    assert_eq!(t.program(), from_env);

    // An unusable TRTEXEC is reported and skipped.
    let t = Trtexec::discover_in(
        Some(d.path().join("missing").as_os_str()),
        Some(&path),
        &jetpack,
    )
    .unwrap();
    assert_eq!(t.program(), from_path);

    let t = Trtexec::discover_in(None, Some(d.path().join("empty").as_os_str()), &jetpack).unwrap();
    assert_eq!(t.program(), jetpack);
}

#[test]
fn non_executable_files_are_not_trtexec() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("bin")).unwrap();
    std::fs::write(d.path().join("bin/trtexec"), "not executable").unwrap();
    let tried = Trtexec::discover_in(
        Some(OsString::from("").as_os_str()),
        Some(d.path().join("bin").as_os_str()),
        &d.path().join("jp"),
    )
    .unwrap_err();
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(tried[0].contains("TRTEXEC (unset)"), "{tried:?}");
    assert!(tried[1].contains("PATH"), "{tried:?}");
    assert!(tried[2].contains("jp"), "{tried:?}");
}

#[test]
fn selects_trtexec_or_says_how_to_get_a_builder() {
    let d = tempfile::tempdir().unwrap();
    let t = exe(d.path(), "trtexec");
    let b = select_builder_in(Err("no shim".into()), Ok(Trtexec::at(&t))).unwrap();
    assert_eq!(b.name(), "trtexec");

    let e = select_builder_in(
        Err("/opt/trident/lib/libtrident_trt.so: libnvinfer.so.8 is missing".into()),
        Err(vec!["trtexec on PATH (not found)".into()]),
    )
    .map(|_| ())
    .unwrap_err();
    let Error::NoTensorRt { tried } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(
        tried[0].starts_with("native builder (") && tried[0].contains("libnvinfer.so.8"),
        "{tried:?}"
    );
    let msg = e.to_string();
    for needle in [
        "/usr/src/tensorrt/bin/trtexec",
        "TRTEXEC=",
        "TRIDENT_TRT_SHIM",
        "trtexec on PATH (not found)",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in {msg}");
    }
    assert!(!e.is_input_error());
}
