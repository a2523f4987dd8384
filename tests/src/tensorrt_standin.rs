//! A unit's TensorRT, stood in for on a machine without one: the stand-in shim and libnvinfer of
//! `tests/standin/tensorrt/` compiled by the test with the machine's C compiler, and fake JetPack
//! root file systems for the on-unit shim build. See `standin_shim.c` for what the stand-in refuses
//! (as TensorRT does) and what it cannot show.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace_root;

/// A TensorRT version as (major, minor, patch).
pub type Version = (u32, u32, u32);

/// JetPack 4.6 (L4T R32.6.1).
pub const TRT_JP46: Version = (8, 0, 1);
/// JetPack 4.6.1 and later (L4T R32.7.x).
pub const TRT_JP461: Version = (8, 2, 1);

/// `getInferLibVersion()`'s encoding: M*1000+m*100+p before 10, M*10000+m*100+p from 10.
pub fn encoded(v: Version) -> u32 {
    if v.0 >= 10 {
        v.0 * 10_000 + v.1 * 100 + v.2
    } else {
        v.0 * 1_000 + v.1 * 100 + v.2
    }
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn source(name: &str) -> PathBuf {
    workspace_root().join("tests/standin/tensorrt").join(name)
}

/// The real shim's header directory (the stand-in includes `trident_trt.h` from there).
pub fn shim_header_dir() -> PathBuf {
    workspace_root().join("edge-runtime/tensorrt/shim")
}

/// Builds the stand-in `libnvinfer.so.<major>` for `version` in `dir` (a directory of its own).
pub fn build_libnvinfer(dir: &Path, version: Version) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let soname = format!("libnvinfer.so.{}", version.0);
    let lib = dir.join(&soname);
    run(Command::new(cc())
        .args(["-shared", "-fPIC", "-O1"])
        .arg(format!("-DSTANDIN_LIB_VERSION={}", encoded(version)))
        .arg(format!("-Wl,-soname,{soname}"))
        .arg(source("libnvinfer_standin.c"))
        .arg("-o")
        .arg(&lib));
    // The development symlink the linker looks for with -lnvinfer.
    let dev = dir.join("libnvinfer.so");
    let _ = std::fs::remove_file(&dev);
    std::os::unix::fs::symlink(&soname, &dev).unwrap();
    lib
}

/// Builds a stand-in shim compiled "against" TensorRT `headers`, linked to the stand-in libnvinfer
/// in `lib_dir`. With `rpath` the shim finds that library by itself (a unit where TensorRT is
/// installed); without it, loading fails as on a unit without TensorRT (unless the loader's path
/// has it).
pub fn build_shim(out: &Path, headers: Version, lib_dir: &Path, rpath: bool) -> PathBuf {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut cmd = Command::new(cc());
    cmd.args([
        "-shared",
        "-fPIC",
        "-O1",
        "-Wall",
        "-Werror",
        "-fvisibility=hidden",
    ])
    .arg(format!("-DSTANDIN_MAJOR={}", headers.0))
    .arg(format!("-DSTANDIN_MINOR={}", headers.1))
    .arg(format!("-DSTANDIN_PATCH={}", headers.2))
    .arg("-I")
    .arg(shim_header_dir())
    .arg(source("standin_shim.c"))
    .arg("-o")
    .arg(out)
    .arg(format!("-L{}", lib_dir.display()))
    .arg("-lnvinfer");
    if rpath {
        cmd.arg(format!("-Wl,-rpath,{}", lib_dir.display()));
    }
    run(&mut cmd);
    out.to_path_buf()
}

/// A stand-in TensorRT installation: libnvinfer of `version` and a matching shim that finds it.
pub struct StandIn {
    pub lib_dir: PathBuf,
    pub shim: PathBuf,
    pub version: Version,
}

impl StandIn {
    pub fn build(dir: &Path, version: Version) -> StandIn {
        let lib_dir = dir.join("lib");
        build_libnvinfer(&lib_dir, version);
        let shim = build_shim(&dir.join("shim/libtrident_trt.so"), version, &lib_dir, true);
        StandIn {
            lib_dir,
            shim,
            version,
        }
    }
}

/// Writes the stand-in's settings beside `shim` (`standin.env`): the reference that computes its
/// outputs, and the failures to inject (`FAIL`: build, oom, cuda, run, skew; empty for none).
pub fn configure(shim: &Path, fail: &str) {
    std::fs::write(
        shim.with_file_name("standin.env"),
        format!("REFERENCE={}\nFAIL={fail}\n", reference_command()),
    )
    .unwrap();
}

impl StandIn {
    /// [`configure`] for this stand-in's shim.
    pub fn configure(&self, fail: &str) {
        configure(&self.shim, fail);
    }
}

/// The value of the `REFERENCE` setting: the venv's Python running `reference.py` (ONNX
/// Runtime computes what the stand-in engine returns).
pub fn reference_command() -> String {
    format!(
        "'{}' '{}'",
        crate::python().display(),
        source("reference.py").display()
    )
}

/// What a fake JetPack root holds.
#[derive(Debug, Clone, Copy)]
pub struct FakeJetPack {
    /// `/etc/nv_tegra_release`'s release and revision, e.g. (32, "6.1").
    pub l4t: (u32, &'static str),
    /// TensorRT's headers and libraries (None: a unit flashed without the TensorRT packages).
    pub tensorrt: Option<Version>,
    /// A C++ compiler at `usr/bin/c++` (a stand-in script recording its arguments).
    pub compiler: bool,
}

impl FakeJetPack {
    pub const JP46: FakeJetPack = FakeJetPack {
        l4t: (32, "6.1"),
        tensorrt: Some(TRT_JP46),
        compiler: true,
    };
    pub const JP461: FakeJetPack = FakeJetPack {
        l4t: (32, "7.1"),
        tensorrt: Some(TRT_JP461),
        compiler: true,
    };
}

/// Lays out a JetPack root file system under `root`: `etc/nv_tegra_release`, TensorRT's headers
/// (`NvInferVersion.h` with the version; the others empty) and libraries (the stand-in libnvinfer
/// and empty `.so` files for the parser and CUDA), CUDA 10.2 under `usr/local/cuda-10.2`, and with
/// `compiler` a stand-in `usr/bin/c++` that records its arguments in `compiler-calls.txt` and writes,
/// as the library named by `-o`, a stand-in shim compiled for the root's TensorRT (configured with
/// [`configure`] and no failure; rewrite `opt/standin/standin.env` before the build to change that).
pub fn fake_jetpack_root(root: &Path, jp: FakeJetPack) {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let (release, revision) = jp.l4t;
    std::fs::write(
        etc.join("nv_tegra_release"),
        format!(
            "# R{release} (release), REVISION: {revision}, GCID: 27863751, BOARD: t210ref, EABI: aarch64, DATE: Mon Jul 26 19:20:30 UTC 2021\n"
        ),
    )
    .unwrap();
    let multiarch = "aarch64-linux-gnu";
    let include = root.join("usr/include").join(multiarch);
    let lib = root.join("usr/lib").join(multiarch);
    let cuda = root.join("usr/local/cuda-10.2");
    std::fs::create_dir_all(cuda.join("include")).unwrap();
    std::fs::create_dir_all(cuda.join("lib64")).unwrap();
    std::fs::write(cuda.join("include/cuda_runtime_api.h"), "").unwrap();
    std::fs::write(cuda.join("lib64/libcudart.so"), "").unwrap();
    if let Some(v) = jp.tensorrt {
        std::fs::create_dir_all(&include).unwrap();
        std::fs::write(
            include.join("NvInferVersion.h"),
            format!(
                "#define NV_TENSORRT_MAJOR {}\n#define NV_TENSORRT_MINOR {}\n#define NV_TENSORRT_PATCH {}\n#define NV_TENSORRT_BUILD 0\n",
                v.0, v.1, v.2
            ),
        )
        .unwrap();
        std::fs::write(include.join("NvInfer.h"), "").unwrap();
        std::fs::write(include.join("NvOnnxParser.h"), "").unwrap();
        build_libnvinfer(&lib, v);
        std::fs::write(lib.join("libnvonnxparser.so"), "").unwrap();
        if jp.compiler {
            let prebuilt = root.join("opt/standin/libtrident_trt.so");
            build_shim(&prebuilt, v, &lib, true);
            configure(&prebuilt, "");
            let bin = root.join("usr/bin");
            std::fs::create_dir_all(&bin).unwrap();
            let calls = root.join("compiler-calls.txt");
            crate::install_script(
                &bin.join("c++"),
                &format!(
                    "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nout=''\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=\"$2\"; shift; done\n[ -n \"$out\" ] || {{ echo 'c++: no -o' >&2; exit 1; }}\ncp '{}' \"$out\" && cp '{}' \"$(dirname \"$out\")/\"\n",
                    calls.display(),
                    prebuilt.display(),
                    prebuilt.with_file_name("standin.env").display()
                ),
            );
        }
    }
}

/// The variable naming the test a child process runs (see [`in_own_process`]).
const OWN_PROCESS_ENV: &str = "TRIDENT_OWN_PROCESS_TEST";

/// A test's path as libtest names and filters it, from `concat!(module_path!(), "::name")`: the
/// crate's own name dropped (`integration::shim::name` → `shim::name`, `shim::name` → `name`).
pub fn libtest_path(full: &str) -> String {
    full.split_once("::")
        .map_or(full, |(_, rest)| rest)
        .to_string()
}

/// Runs `body` in a process of its own: the test binary re-executes itself for the one test named
/// `test` (`concat!(module_path!(), "::name")`, see [`libtest_path`]), and the parent asserts the
/// child passed.
///
/// Why: the dynamic loader keeps one `libnvinfer.so.8` per process — a second shim whose rpath names
/// another stand-in libnvinfer of the same soname gets the one already loaded, exactly as on a unit.
/// Tests that need a particular TensorRT version must not share a process with one that loaded
/// another.
pub fn in_own_process(test: &str, body: impl FnOnce()) {
    let test = libtest_path(test);
    let test = test.as_str();
    if std::env::var(OWN_PROCESS_ENV).as_deref() == Ok(test) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(OWN_PROCESS_ENV, test)
        .output()
        .unwrap_or_else(|e| panic!("cannot re-run the test binary for {test}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in its own process failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
