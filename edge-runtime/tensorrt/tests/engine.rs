//! Running engines through trtexec: one inference through a stand-in trtexec, and removing a failed
//! engine from the cache. (The in-process runtime is tested through the stand-in shim in shim.rs.)
#![cfg(unix)]

use crate::common;

use common::{install_script, listing, nano};
use trident_tensorrt::{
    BuildRequest, EngineCache, Error, Precision, Trtexec, ensure_engine, sha256_file,
};

/// A trtexec that checks the inference flags, reports the size of the input file it was given as
/// the first output value, and fails for engines named `*bad*`.
fn fake_trtexec(dir: &std::path::Path) -> std::path::PathBuf {
    let program = dir.join("trtexec");
    let script = r#"#!/bin/sh
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # $0 $*"
engine=""; input=""; export=""; once=0
for a in "$@"; do
  case "$a" in
    --loadEngine=*) engine="${a#--loadEngine=}" ;;
    --loadInputs=images:*) input="${a#--loadInputs=images:}" ;;
    --exportOutput=*) export="${a#--exportOutput=}" ;;
    --iterations=1) once=1 ;;
  esac
done
case "$engine" in *bad*) echo "[E] Error Code 1: Serialization (version tag does not match)" >&2; echo "&&&& FAILED"; exit 1 ;; esac
[ -f "$input" ] && [ -n "$export" ] && [ "$once" = 1 ] || { echo "bad arguments: $*" >&2; exit 2; }
size=$(wc -c < "$input")
printf '[\n  { "name" : "output0"\n  , "dimensions" : "1x2"\n  , "values" : [ %s, -nan ]\n  }\n]\n' "$size" > "$export"
echo "&&&& PASSED TensorRT.trtexec [TensorRT v8201] # $0 $*"
"#;
    install_script(&program, script);
    program
}

#[test]
fn trtexec_runs_an_engine_once_and_its_export_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let t = Trtexec::at(fake_trtexec(dir.path()));
    let engine = dir.path().join("model.engine");
    std::fs::write(&engine, b"engine").unwrap();

    let out = t.infer(&engine, "images", &[0.5; 12]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].name.as_str(), out[0].shape.as_slice()),
        ("output0", &[1, 2][..])
    );
    assert_eq!(out[0].values[0], 48.0, "12 float32 values are 48 bytes");
    assert!(out[0].values[1].is_nan());

    let only = t
        .infer_output(&engine, "images", &[0.5; 3], "renamed")
        .unwrap();
    assert_eq!(
        (only.name.as_str(), only.values[0]),
        ("output0", 12.0),
        "the only output, by any name"
    );

    let bad = dir.path().join("bad.engine");
    std::fs::write(&bad, b"engine").unwrap();
    let e = t.infer(&bad, "images", &[0.5; 12]).unwrap_err();
    assert!(matches!(e, Error::Engine { .. }), "{e:?}");
    assert!(e.to_string().contains("bad.engine"), "{e}");
    assert!(e.log_tail().unwrap().contains("Serialization"), "{e:?}");
}

#[test]
fn a_removed_engine_is_a_miss_and_is_rebuilt() {
    let fake = common::FakeTrtexec::new(8201);
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("m.onnx");
    std::fs::write(&onnx, b"onnx").unwrap();
    let cache = EngineCache::new(dir.path().join("cache"));
    let req = BuildRequest::new(&onnx, Precision::Fp16, [1, 3, 64, 64]);
    let sha = sha256_file(&onnx).unwrap();
    let (engine, built) = ensure_engine(&cache, &fake.trtexec(), &req, &sha, &nano()).unwrap();
    assert!(built);
    assert_eq!(
        listing(cache.root())
            .iter()
            .filter(|n| !n.starts_with('.'))
            .count(),
        2
    );

    cache.remove(&engine).unwrap();
    let left: Vec<String> = listing(cache.root())
        .into_iter()
        .filter(|n| n.ends_with(".engine") || n.ends_with(".json"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    cache.remove(&engine).unwrap(); // already gone: fine

    let outside = dir.path().join("m.engine");
    assert!(matches!(
        cache.remove(&outside),
        Err(Error::BadInput { .. })
    ));

    let (_, built) = ensure_engine(&cache, &fake.trtexec(), &req, &sha, &nano()).unwrap();
    assert!(built, "a removed engine is built again");
    assert_eq!(fake.builds(), 2);
}
