//! The shim library through the real dlopen path, with the stand-in TensorRT of
//! `tests/standin/tensorrt/` (a C shim implementing `trident_trt.h` and a stand-in libnvinfer),
//! built by the test: loading and its refusals (libnvinfer missing, another TensorRT minor, another
//! ABI), building engines and their failures (parse, out of memory, builder error), running them
//! (outputs from ONNX Runtime, rounded to fp16) and the runtime's refusals (corrupt engine, an engine
//! of another TensorRT, wrong names and lengths, a CUDA error), and the on-unit shim build.
#![cfg(unix)]

use std::path::Path;
use std::sync::Arc;

use trident_e2e::tensorrt_standin::{
    FakeJetPack, StandIn, TRT_JP46, TRT_JP461, build_libnvinfer, build_shim, fake_jetpack_root,
    in_own_process,
};
use trident_tensorrt::shim_build::{ShimSource, TensorRtDevFiles, build_prebuilt, ensure_shim};
use trident_tensorrt::{
    BuildRequest, EngineBuilder, Error, NativeBuilder, Precision, Shim, ShimProblem, TrtEngine,
    TrtVersion,
};

fn fixture() -> std::path::PathBuf {
    trident_e2e::fixture_onnx()
}

fn problem(e: Error) -> ShimProblem {
    match e {
        Error::Shim { problem, .. } => problem,
        other => panic!("expected a shim problem, got {other:?}"),
    }
}

#[test]
fn a_shim_loads_and_reports_both_versions() {
    in_own_process(
        concat!(module_path!(), "::a_shim_loads_and_reports_both_versions"),
        || {
            let dir = tempfile::tempdir().unwrap();
            let standin = StandIn::build(dir.path(), TRT_JP461);
            let shim = Shim::open(&standin.shim).unwrap();
            assert_eq!(shim.compiled_version(), TrtVersion::new(8, 2, 1));
            assert_eq!(shim.runtime_version(), TrtVersion::new(8, 2, 1));
            assert_eq!(shim.path(), standin.shim);
        },
    );
}

#[test]
fn a_shim_refuses_what_tensorrt_would_not_survive() {
    in_own_process(
        concat!(
            module_path!(),
            "::a_shim_refuses_what_tensorrt_would_not_survive"
        ),
        || {
            let dir = tempfile::tempdir().unwrap();
            // libnvinfer not on the loader's path (a unit flashed without TensorRT).
            let lib = dir.path().join("lib");
            build_libnvinfer(&lib, TRT_JP461);
            let no_rpath = build_shim(
                &dir.path().join("a/libtrident_trt.so"),
                TRT_JP461,
                &lib,
                false,
            );
            assert_eq!(
                problem(Shim::open(&no_rpath).unwrap_err()),
                ShimProblem::LibraryMissing("libnvinfer.so.8".into())
            );

            // Headers of 8.2 (the release's sysroot), library of 8.0 (JetPack 4.6): the same soname,
            // another minor; refused before any C++ call could go wrong.
            let jp46 = dir.path().join("jp46");
            build_libnvinfer(&jp46, TRT_JP46);
            let shim82 = build_shim(
                &dir.path().join("b/libtrident_trt.so"),
                TRT_JP461,
                &jp46,
                true,
            );
            let p = problem(Shim::open(&shim82).unwrap_err());
            assert_eq!(
                p,
                ShimProblem::VersionMismatch {
                    compiled: TrtVersion::new(8, 2, 1),
                    runtime: TrtVersion::new(8, 0, 1)
                }
            );
            let text = Error::Shim {
                path: shim82.clone(),
                problem: p,
            }
            .to_string();
            assert!(text.contains("8.0.1") && text.contains("prepare"), "{text}");

            // A library that is not a shim at all (libnvinfer itself has no trident_trt_abi_version).
            let p = problem(Shim::open(&jp46.join("libnvinfer.so.8")).unwrap_err());
            assert!(
                matches!(&p, ShimProblem::LoadFailed(m) if m.contains("trident_trt_abi_version")),
                "{p:?}"
            );
        },
    );
}

fn engine_in(dir: &Path, shim: &Arc<Shim>, precision: Precision) -> std::path::PathBuf {
    let builder = NativeBuilder::new(Arc::clone(shim));
    let out = dir.join("engines/model.engine");
    let req = BuildRequest::new(fixture(), precision, [1, 3, 96, 96]);
    let report = builder.build(&req, &out).unwrap();
    assert_eq!(report.builder, "native");
    assert_eq!(report.tensorrt_version, shim.runtime_version().to_string());
    out
}

#[test]
fn engines_build_run_and_fail_as_tensorrt_does() {
    in_own_process(
        concat!(
            module_path!(),
            "::engines_build_run_and_fail_as_tensorrt_does"
        ),
        || {
            let dir = tempfile::tempdir().unwrap();
            let standin = StandIn::build(&dir.path().join("trt"), TRT_JP461);
            standin.configure("");
            let shim = Shim::open(&standin.shim).unwrap();
            let builder = NativeBuilder::new(Arc::clone(&shim));

            // A file that is not ONNX: a parse failure, the shim's log in the error, nothing left behind.
            let junk = dir.path().join("not-a-model.onnx");
            std::fs::write(&junk, b"definitely not protobuf").unwrap();
            std::fs::create_dir(dir.path().join("out")).unwrap();
            let req = BuildRequest::new(&junk, Precision::Fp16, [1, 3, 96, 96]);
            let e = builder
                .build(&req, &dir.path().join("out/m.engine"))
                .unwrap_err();
            assert!(e.is_input_error(), "{e:?}");
            assert!(
                e.log_tail().unwrap().contains("Failed to parse ONNX"),
                "{e:?}"
            );
            assert_eq!(
                std::fs::read_dir(dir.path().join("out")).unwrap().count(),
                0,
                "no engine, no temporary"
            );

            let fp16 = engine_in(dir.path(), &shim, Precision::Fp16);

            {
                let mut engine = TrtEngine::load_named(&shim, &fp16, "images", "output0").unwrap();
                assert_eq!(engine.input().shape, [1, 3, 96, 96]);
                assert_eq!(engine.output().shape, [1, 7, 189]);
                let input = vec![0.5f32; 3 * 96 * 96];
                let mut out = Vec::new();
                assert_eq!(engine.run(&input, &mut out).unwrap(), [1, 7, 189]);
                assert_eq!(out.len(), 7 * 189);
                assert!(out.iter().all(|v| v.is_finite()));
                // fp16: every value has at most 11 significant bits.
                assert!(
                    out.iter().all(|v| v.to_bits() & 0x1FFF == 0),
                    "rounded to half"
                );

                // Wrong length: refused by the Rust side before the shim.
                let e = engine.run(&input[1..], &mut out).unwrap_err();
                assert!(matches!(e, Error::Engine { .. }), "{e:?}");

                // Wrong tensor name: TensorRT's "Cannot find binding".
                let e = TrtEngine::load_named(&shim, &fp16, "input", "output0").unwrap_err();
                assert!(e.to_string().contains("input/output"), "{e}");
                assert!(
                    e.log_tail().unwrap().contains("Cannot find binding"),
                    "{e:?}"
                );
            }

            // A corrupt engine: TensorRT's magic-tag error, and the advice to rebuild.
            let corrupt = dir.path().join("corrupt.engine");
            std::fs::write(&corrupt, b"\x00\x01garbage").unwrap();
            let e = TrtEngine::load(&shim, &corrupt).unwrap_err();
            assert!(e.to_string().contains("trident-edge prepare"), "{e}");
            assert!(e.log_tail().unwrap().contains("Magic tag"), "{e:?}");
        },
    );
}

/// Where [`build_an_engine_with_tensorrt_8_0`] writes (set by the test that runs it).
const ENGINE_OUT_ENV: &str = "TRIDENT_TEST_ENGINE_OUT";

#[test]
#[ignore = "a helper: an_engine_of_another_tensorrt_is_refused runs it in a process of its own"]
fn build_an_engine_with_tensorrt_8_0() {
    let out = std::path::PathBuf::from(std::env::var_os(ENGINE_OUT_ENV).expect(ENGINE_OUT_ENV));
    let standin80 = StandIn::build(&out, TRT_JP46);
    let shim80 = Shim::open(&standin80.shim).unwrap();
    assert_eq!(shim80.runtime_version(), TrtVersion::new(8, 0, 1));
    engine_in(&out, &shim80, Precision::Fp16);
}

#[test]
fn an_engine_of_another_tensorrt_is_refused() {
    in_own_process(
        concat!(module_path!(), "::an_engine_of_another_tensorrt_is_refused"),
        || {
            let dir = tempfile::tempdir().unwrap();
            // Built by TensorRT 8.0 (JetPack 4.6) in another process: one libnvinfer per process.
            let other = dir.path().join("other");
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    trident_e2e::tensorrt_standin::libtest_path(concat!(
                        module_path!(),
                        "::build_an_engine_with_tensorrt_8_0"
                    ))
                    .as_str(),
                    "--exact",
                    "--include-ignored",
                ])
                .env(ENGINE_OUT_ENV, &other)
                .status()
                .unwrap();
            assert!(status.success());
            let e80 = other.join("engines/model.engine");
            assert!(e80.is_file());

            // Loaded by 8.2 (a unit updated from JetPack 4.6 to 4.6.1 keeps its cache): refused, not run.
            let standin = StandIn::build(&dir.path().join("trt"), TRT_JP461);
            standin.configure("");
            let shim = Shim::open(&standin.shim).unwrap();
            let e = TrtEngine::load(&shim, &e80).unwrap_err();
            assert!(
                e.log_tail()
                    .unwrap()
                    .contains("not compatible with this version"),
                "{e:?}"
            );
            assert!(e.to_string().contains("trident-edge prepare"), "{e}");
        },
    );
}

#[test]
fn a_shim_is_built_on_the_unit_from_the_package_source_once() {
    in_own_process(
        concat!(
            module_path!(),
            "::a_shim_is_built_on_the_unit_from_the_package_source_once"
        ),
        || {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("jetpack");
            fake_jetpack_root(&root, FakeJetPack::JP46);
            let dev = TensorRtDevFiles::discover(&root, "aarch64-linux-gnu").unwrap();
            assert_eq!(dev.version, TrtVersion::new(8, 0, 1));
            assert_eq!(dev.cuda_include, root.join("usr/local/cuda-10.2/include"));

            let source = ShimSource::in_repository();
            let cache = dir.path().join("engines");
            let compiler = root.join("usr/bin/c++");
            let built = ensure_shim(&source, &dev, &compiler, &cache).unwrap();
            assert!(built.built_now);
            assert_eq!(built.record.tensorrt, "8.0.1");
            let shim = Shim::open(&built.path).unwrap();
            assert_eq!(shim.runtime_version(), TrtVersion::new(8, 0, 1));

            // The compiler saw what a real build needs.
            let calls = std::fs::read_to_string(root.join("compiler-calls.txt")).unwrap();
            assert_eq!(calls.lines().count(), 1, "{calls}");
            for needle in [
                "-shared",
                "-fPIC",
                "-std=c++14",
                "-fvisibility=hidden",
                "trident_trt.cpp",
                "trident_trt_engine.cpp",
                "-lnvinfer",
                "-lnvonnxparser",
                "-lcudart",
                "-Wl,--no-undefined",
                "usr/include/aarch64-linux-gnu",
                "usr/local/cuda-10.2/include",
            ] {
                assert!(calls.contains(needle), "missing {needle} in {calls}");
            }

            // Again: from the cache, no compiler run.
            let again = ensure_shim(&source, &dev, &compiler, &cache).unwrap();
            assert!(!again.built_now);
            assert_eq!(again.path, built.path);
            assert_eq!(
                std::fs::read_to_string(root.join("compiler-calls.txt"))
                    .unwrap()
                    .lines()
                    .count(),
                1
            );
        },
    );
}

#[test]
fn the_on_unit_build_says_what_is_missing() {
    in_own_process(
        concat!(module_path!(), "::the_on_unit_build_says_what_is_missing"),
        || {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("jetpack");
            fake_jetpack_root(
                &root,
                FakeJetPack {
                    tensorrt: None,
                    ..FakeJetPack::JP461
                },
            );
            let missing = TensorRtDevFiles::discover(&root, "aarch64-linux-gnu").unwrap_err();
            let text = missing.join("\n");
            assert!(
                text.contains("NvInfer.h (package libnvinfer-dev)")
                    && text.contains("NvOnnxParser.h (package libnvonnxparsers-dev)"),
                "{text}"
            );

            // A compiler that fails: its output comes back in the error, nothing is cached.
            let root = dir.path().join("jp461");
            fake_jetpack_root(&root, FakeJetPack::JP461);
            let dev = TensorRtDevFiles::discover(&root, "aarch64-linux-gnu").unwrap();
            let bad = dir.path().join("bad-c++");
            trident_e2e::install_script(
                &bad,
                "#!/bin/sh\necho 'NvInfer.h:42: error: expected type-specifier' >&2\nexit 1\n",
            );
            let cache = dir.path().join("engines");
            let e = ensure_shim(&ShimSource::in_repository(), &dev, &bad, &cache).unwrap_err();
            assert!(matches!(e, Error::ShimBuild { .. }), "{e:?}");
            assert!(e.to_string().contains("expected type-specifier"), "{e}");
            let left: Vec<_> = std::fs::read_dir(cache.join("shim"))
                .unwrap()
                .flatten()
                .collect();
            assert!(left.is_empty(), "{left:?}");
        },
    );
}

#[test]
fn injected_failures_reach_the_caller_as_tensorrt_reports_them() {
    in_own_process(
        concat!(
            module_path!(),
            "::injected_failures_reach_the_caller_as_tensorrt_reports_them"
        ),
        || {
            let dir = tempfile::tempdir().unwrap();
            let standin = StandIn::build(dir.path(), TRT_JP461);
            let shim = Shim::open(&standin.shim).unwrap();
            let builder = NativeBuilder::new(Arc::clone(&shim));
            let req = BuildRequest::new(fixture(), Precision::Fp16, [1, 3, 96, 96]);
            let out = dir.path().join("e/m.engine");

            standin.configure("oom");
            let e = builder.build(&req, &out).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::OutOfMemory {
                        workspace_mib: 1024,
                        ..
                    }
                ),
                "{e:?}"
            );
            standin.configure("build");
            let e = builder.build(&req, &out).unwrap_err();
            assert!(matches!(e, Error::BuildFailed { .. }), "{e:?}");
            assert!(
                e.to_string().contains("Could not find any implementation"),
                "{e}"
            );
            assert!(!out.exists());

            standin.configure("");
            builder.build(&req, &out).unwrap();
            standin.configure("cuda");
            let e = TrtEngine::load(&shim, &out).unwrap_err();
            assert!(e.to_string().contains("CUDA runtime call failed"), "{e}");

            standin.configure("run");
            let mut engine = TrtEngine::load(&shim, &out).unwrap();
            let e = engine
                .run(&vec![0.0; 3 * 96 * 96], &mut Vec::new())
                .unwrap_err();
            assert!(
                e.log_tail().unwrap().contains("illegal memory access"),
                "{e:?}"
            );

            // Another interface version: refused at open, before any other call.
            std::fs::write(standin.shim.with_file_name("standin.env"), "ABI=99\n").unwrap();
            assert_eq!(
                problem(Shim::open(&standin.shim).unwrap_err()),
                ShimProblem::Abi { found: 99 }
            );
        },
    );
}

#[test]
fn the_release_prebuilds_a_shim_only_from_a_sysroot_with_tensorrt() {
    in_own_process(
        concat!(
            module_path!(),
            "::the_release_prebuilds_a_shim_only_from_a_sysroot_with_tensorrt"
        ),
        || {
            let dir = tempfile::tempdir().unwrap();
            let sysroot = dir.path().join("jetpack-4.6.1");
            fake_jetpack_root(&sysroot, FakeJetPack::JP461);
            let out = dir.path().join("tensorrt-shim");
            let source = ShimSource::in_repository();
            let compiler = sysroot.join("usr/bin/c++");
            let record = build_prebuilt(&source, &sysroot, "aarch64-linux-gnu", &compiler, &out)
                .unwrap()
                .unwrap();
            assert_eq!(record.tensorrt, "8.2.1");
            assert_eq!(record.source_sha256, source.sha256().unwrap());
            // What the packager reads: the library and its record, side by side.
            let shim = Shim::open(&out.join("libtrident_trt.so")).unwrap();
            assert_eq!(shim.compiled_version(), TrtVersion::new(8, 2, 1));
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join("shim.json")).unwrap()).unwrap();
            assert_eq!(json["tensorrt"], "8.2.1");

            // A sysroot without TensorRT (Debian's stand-in): no prebuilt, and the earlier build
            // is gone so a new package cannot carry a stale one.
            let plain = dir.path().join("debian");
            fake_jetpack_root(
                &plain,
                FakeJetPack {
                    tensorrt: None,
                    ..FakeJetPack::JP461
                },
            );
            let why = build_prebuilt(&source, &plain, "aarch64-linux-gnu", &compiler, &out)
                .unwrap()
                .unwrap_err();
            assert!(
                why.missing.iter().any(|m| m.contains("NvInfer.h")),
                "{why:?}"
            );
            assert!(!out.join("libtrident_trt.so").exists());
            assert!(!out.join("shim.json").exists());
        },
    );
}
