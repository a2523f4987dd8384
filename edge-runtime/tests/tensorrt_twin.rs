//! The unit's TensorRT, stood in for: the stand-in shim and libnvinfer of `tests/standin/tensorrt/`
//! (built by the test, loaded through the real dlopen path) inside a fake JetPack root, driven
//! through the `trident-edge` binary — `doctor`; `prepare` compiling the shim on the unit from the
//! package's source (with the root's compiler stand-in), then building engines through it and
//! validating them against tract; and the ensemble running on "TensorRT" or falling back to tract
//! with the reason in its summary. Each `trident-edge` call is a process of its own,
//! so each loads exactly one libnvinfer, as on a unit.
#![cfg(unix)]

#[allow(dead_code)] // this file runs trident-edge with its own environment
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{NAMES, VARIANTS, s, text};
use trident_e2e::tensorrt_standin::{
    FakeJetPack, TRT_JP461, build_shim, configure, fake_jetpack_root,
};

const MULTIARCH: &str = "aarch64-linux-gnu";

/// A fake Nano on JetPack 4.6.1: the release file, TensorRT's stand-in libraries, dpkg's record of
/// TensorRT, CUDA and glibc, the INA3221 with its three rails, and nvpmodel in MAXN.
fn nano(root: &Path) {
    fake_jetpack_root(root, FakeJetPack::JP461);
    let dpkg = root.join("var/lib/dpkg");
    std::fs::create_dir_all(&dpkg).unwrap();
    std::fs::write(
        dpkg.join("status"),
        "Package: libc6\nStatus: install ok installed\nArchitecture: arm64\nVersion: 2.27-3ubuntu1.6\n\n\
         Package: libnvinfer8\nStatus: install ok installed\nArchitecture: arm64\nVersion: 8.2.1-1+cuda10.2\n\n\
         Package: cuda-cudart-10-2\nStatus: install ok installed\nArchitecture: arm64\nVersion: 10.2.300-1\n\n",
    )
    .unwrap();
    let iio = root.join("sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0");
    std::fs::create_dir_all(&iio).unwrap();
    for (i, (rail, mw)) in [
        ("POM_5V_IN", 4120),
        ("POM_5V_GPU", 1310),
        ("POM_5V_CPU", 820),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(iio.join(format!("rail_name_{i}")), format!("{rail}\n")).unwrap();
        std::fs::write(iio.join(format!("in_power{i}_input")), format!("{mw}\n")).unwrap();
    }
    let nvpmodel = root.join("var/lib/nvpmodel");
    std::fs::create_dir_all(&nvpmodel).unwrap();
    std::fs::write(nvpmodel.join("status"), "pmode:0000\n").unwrap();
}

/// A package-like folder: the three fixture variants in `models/` and, in `lib/`, a shim compiled
/// for TensorRT 8.2.1 that finds the fake root's libnvinfer (as the package's prebuilt one finds
/// the unit's through the loader's path).
fn package(dir: &Path, root: &Path, fail: &str) -> PathBuf {
    let pkg = dir.join("package");
    trident_e2e::fixture_models(&pkg, &VARIANTS, &NAMES);
    let shim = build_shim(
        &pkg.join("lib/libtrident_trt.so"),
        TRT_JP461,
        &root.join("usr/lib").join(MULTIARCH),
        true,
    );
    configure(&shim, fail);
    pkg
}

fn edge(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trident-edge"))
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .env_remove("TRIDENT_TRT_SHIM")
        .output()
        .unwrap()
}

#[test]
fn doctor_names_versions_backends_sensor_mode_and_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nano");
    nano(&root);
    let pkg = package(dir.path(), &root, "");
    let cache = dir.path().join("engines");
    let models = pkg.join("models");
    let args = [
        "doctor",
        "--models",
        s(&models),
        "--backend",
        "tensorrt,tract",
        "--root",
        s(&root),
        "--engine-cache",
        s(&cache),
    ];
    let o = edge(&args, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    for needle in [
        "L4T           32.7.1",
        "JetPack       4.6.1",
        "TensorRT      8.2.1",
        "CUDA          10.2.300",
        "glibc         2.27",
        "ok  tensorrt",
        "compiled for TensorRT 8.2.1, libnvinfer 8.2.1",
        "ok  tract",
        "INA3221",
        "POM_5V_GPU 1.31 W",
        "0 (MAXN, 10 W)",
        "empty (`trident-edge prepare` builds the engines)",
        "verdict       ok: tensorrt",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }

    // The unit loses TensorRT (an apt autoremove, a half-flashed image): exit 1, the loader's
    // reason, and what the runtime would do instead.
    std::fs::remove_file(root.join("usr/lib").join(MULTIARCH).join("libnvinfer.so.8")).unwrap();
    let o = edge(&args, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(out.contains("NO  tensorrt"), "{out}");
    assert!(out.contains("libnvinfer.so.8"), "{out}");
    assert!(
        out.contains("the runtime would fall back to tract"),
        "{out}"
    );

    // The same as JSON, for scripts (`trident deploy` reads the verdict).
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let o = edge(&json_args, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["backends"][0]["backend"], "tensorrt");
    assert_eq!(v["backends"][0]["loads"], false);
    assert_eq!(v["backends"][1]["loads"], true);
}

fn run_args<'a>(models: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--models",
        models,
        "--profile",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/profiles/host-cpu.yaml"
        ),
        "--source",
        "test://ball",
        "--width",
        "160",
        "--height",
        "120",
        "--duration",
        "2s",
        "--backend",
        "tensorrt,tract",
        "--http",
        "off",
        "--out",
        out,
    ]
}

#[test]
fn the_ensemble_runs_on_the_stand_in_tensorrt_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nano");
    nano(&root);
    let pkg = package(dir.path(), &root, "");
    let models = pkg.join("models");
    let cache = dir.path().join("engines");
    let out = dir.path().join("out");
    let gpu = ("TRIDENT_GPU", "NVIDIA Tegra X1;5.3");
    let cache_env = ("TRIDENT_ENGINE_CACHE", s(&cache));

    // Engines built on the miss (fp16), each model run through the shim.
    let o = edge(&run_args(s(&models), s(&out)), &[gpu, cache_env]);
    let summary = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    for v in VARIANTS {
        assert!(
            summary.contains(&format!("model {v}: tensorrt fp16")),
            "{v}: {summary}"
        );
    }
    assert!(
        !summary.contains("not on the preferred backend"),
        "{summary}"
    );
    let engines = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "engine"))
        .count();
    // The three variants are the same fixture bytes: one content-keyed engine serves them all.
    assert_eq!(engines, 1, "one engine per distinct model in the cache");

    // Out of GPU memory while building (a fresh cache): the ensemble still runs, on tract, and
    // the summary says why for each model.
    configure(&pkg.join("lib/libtrident_trt.so"), "oom");
    let fresh = dir.path().join("engines-oom");
    let o = edge(
        &run_args(s(&models), s(&dir.path().join("out-oom"))),
        &[gpu, ("TRIDENT_ENGINE_CACHE", s(&fresh))],
    );
    let summary = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    for v in VARIANTS {
        assert!(
            summary.contains(&format!("model {v}: tract")),
            "{v}: {summary}"
        );
    }
    assert_eq!(
        summary
            .matches("not on the preferred backend: tensorrt:")
            .count(),
        3,
        "{summary}"
    );
    assert!(summary.to_lowercase().contains("memory"), "{summary}");
}

#[test]
fn prepare_builds_the_shim_on_the_unit_then_engines_validated_against_tract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nano");
    nano(&root);
    // A package as the release ships it without a prebuilt shim: models and the shim's source.
    let pkg = dir.path().join("package");
    trident_e2e::fixture_models(&pkg, &VARIANTS, &NAMES);
    let source = pkg.join("shim");
    std::fs::create_dir_all(&source).unwrap();
    for f in trident_tensorrt::shim_build::SHIM_SOURCES {
        std::fs::copy(
            trident_e2e::workspace_root()
                .join("edge-runtime/tensorrt/shim")
                .join(f),
            source.join(f),
        )
        .unwrap();
    }
    let cache = dir.path().join("engines");
    let models = pkg.join("models");
    let args = [
        "prepare",
        "--models",
        s(&models),
        "--engine-cache",
        s(&cache),
        "--root",
        s(&root),
    ];
    let gpu = ("TRIDENT_GPU", "NVIDIA Tegra X1;5.3");
    let cxx = root.join("usr/bin/c++");
    let o = edge(&args, &[gpu, ("CXX", s(&cxx))]);
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    // The shim was compiled on the unit (once) and cached beside the engines …
    assert!(report.contains("built on this unit now"), "{report}");
    let calls = std::fs::read_to_string(root.join("compiler-calls.txt")).unwrap();
    assert_eq!(calls.lines().count(), 1, "{calls}");
    assert!(
        calls.contains(s(&source.join("trident_trt.cpp"))),
        "{calls}"
    );
    // … and the engines built through it agree with tract within the FP16 tolerances.
    assert!(report.contains("TensorRT 8.2.1"), "{report}");
    for v in VARIANTS {
        assert!(report.contains(v), "{v}: {report}");
    }

    // Again: the cached shim and engines, no compiler run.
    let o = edge(&args, &[gpu, ("CXX", s(&cxx))]);
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    assert!(report.contains("built on this unit earlier"), "{report}");
    assert_eq!(
        std::fs::read_to_string(root.join("compiler-calls.txt"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    // A unit without a compiler and no shim yet: prepare says what to install.
    let bare = dir.path().join("bare");
    fake_jetpack_root(
        &bare,
        FakeJetPack {
            compiler: false,
            ..FakeJetPack::JP461
        },
    );
    let bare_cache = dir.path().join("engines-bare");
    let o = edge(
        &[
            "prepare",
            "--models",
            s(&models),
            "--engine-cache",
            s(&bare_cache),
            "--root",
            s(&bare),
        ],
        &[gpu, ("CXX", "")],
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("no C++ compiler"), "{}", text(&o));
}
