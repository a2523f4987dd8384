//! Compiles the C++ shim (engine builder and engine runtime) and links TensorRT, but only with the `tensorrt` feature; a default build
//! needs no C++ compiler, headers or libraries (CI and most hosts have none).
//!
//! Environment (all optional, defaults fit JetPack 4.6 and Ubuntu packages):
//! TENSORRT_INCLUDE_DIR, TENSORRT_LIB_DIR, CUDA_INCLUDE_DIR, CUDA_LIB_DIR.

use std::env;
use std::path::{Path, PathBuf};

const ENV_VARS: &[&str] = &[
    "TENSORRT_INCLUDE_DIR",
    "TENSORRT_LIB_DIR",
    "CUDA_INCLUDE_DIR",
    "CUDA_LIB_DIR",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_TENSORRT").is_none() {
        return;
    }
    for var in ENV_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=shim/trident_trt.cpp");
    println!("cargo:rerun-if-changed=shim/trident_trt_engine.cpp");
    println!("cargo:rerun-if-changed=shim/trident_trt.h");

    // Debian/JetPack put TensorRT under the multiarch directories, not under /usr/local/cuda.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let trt_include = dir("TENSORRT_INCLUDE_DIR", format!("/usr/include/{multiarch}"));
    let trt_lib = dir("TENSORRT_LIB_DIR", format!("/usr/lib/{multiarch}"));
    let cuda_include = dir("CUDA_INCLUDE_DIR", "/usr/local/cuda/include".to_string());
    let cuda_lib = dir("CUDA_LIB_DIR", "/usr/local/cuda/lib64".to_string());

    require(
        &trt_include,
        "NvInfer.h",
        "TENSORRT_INCLUDE_DIR",
        "libnvinfer-dev",
    );
    require(
        &trt_include,
        "NvOnnxParser.h",
        "TENSORRT_INCLUDE_DIR",
        "libnvonnxparsers-dev",
    );
    require(
        &cuda_include,
        "cuda_runtime_api.h",
        "CUDA_INCLUDE_DIR",
        "cuda-cudart-dev",
    );

    let major = tensorrt_major(&trt_include);
    // TensorRT 8.x headers are C++11/14; TensorRT 10 headers need C++17.
    let std = if major >= 10 { "c++17" } else { "c++14" };
    println!(
        "cargo:warning=trident-tensorrt: compiling the TensorRT {major}.x shim ({std}) against {}",
        trt_include.display()
    );

    // TensorRT and CUDA headers are system includes: their own deprecation warnings would otherwise
    // flood every build, while warnings in the shim itself stay visible.
    cc::Build::new()
        .cpp(true)
        .std(std)
        .file("shim/trident_trt.cpp")
        .file("shim/trident_trt_engine.cpp")
        .include("shim")
        .flag("-isystem")
        .flag(
            trt_include
                .to_str()
                .expect("TENSORRT_INCLUDE_DIR is not UTF-8"),
        )
        .flag("-isystem")
        .flag(
            cuda_include
                .to_str()
                .expect("CUDA_INCLUDE_DIR is not UTF-8"),
        )
        .warnings(true)
        .extra_warnings(true)
        .compile("trident_trt_shim");

    for lib_dir in [&trt_lib, &cuda_lib] {
        if !lib_dir.is_dir() {
            println!(
                "cargo:warning=trident-tensorrt: library directory {} does not exist; linking may fail (set TENSORRT_LIB_DIR / CUDA_LIB_DIR)",
                lib_dir.display()
            );
        }
        println!("cargo:rustc-link-search=native={}", lib_dir.display());
    }
    for lib in ["nvinfer", "nvonnxparser", "cudart"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}

fn dir(var: &str, default: String) -> PathBuf {
    env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn require(dir: &Path, header: &str, var: &str, package: &str) {
    if !dir.join(header).is_file() {
        panic!(
            "trident-tensorrt: feature `tensorrt` needs {header}, not found in {} — install {package} \
             (JetPack 4.6: sudo apt install libnvinfer-dev libnvonnxparsers-dev cuda-cudart-dev-10-2) or set \
             {var} to the directory that has it; build without the feature to use trtexec instead",
            dir.display()
        );
    }
}

/// NV_TENSORRT_MAJOR from NvInferVersion.h (TensorRT 11 defines it through TRT_MAJOR_ENTERPRISE).
fn tensorrt_major(include: &Path) -> u32 {
    let path = include.join("NvInferVersion.h");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("trident-tensorrt: cannot read {}: {e}", path.display()));
    let define = |name: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some(name))
                .then(|| w.next().map(str::to_string))
                .flatten()
        })
    };
    let mut value = define("NV_TENSORRT_MAJOR");
    // Follow one level of indirection (`#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE`).
    if let Some(v) = value.clone().filter(|v| v.parse::<u32>().is_err()) {
        value = define(&v);
    }
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        panic!(
            "trident-tensorrt: no NV_TENSORRT_MAJOR in {}",
            path.display()
        )
    })
}
