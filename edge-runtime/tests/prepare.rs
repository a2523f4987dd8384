//! `prepare` without a GPU: the no-op report on machines without an NVIDIA GPU or TensorRT, and
//! the full build-and-validate path through a stand-in trtexec whose "engine" answers with
//! tract's own outputs — exactly (passes), nudged within the tolerance (passes, and the nudge is
//! what gets reported), or nudged beyond it (fails, naming the model and the differences, with
//! no engine left in the cache). The shim's own path (stand-in TensorRT) is in `tensorrt_twin.rs`.
#![cfg(unix)]

use std::path::{Path, PathBuf};

use trident_core::model_card::{CardDim, CardSource, FORMAT, ModelCard, TensorInfo};
use trident_e2e::install_script;
use trident_edge::Error;
use trident_edge::prepare::{
    PrepareOptions, Toolchain, Validator, prepare_with, validation_frames,
};
use trident_infer::BackendKind;
use trident_infer::backend::{self, OnnxModel};
use trident_tensorrt::{GpuFacts, Trtexec, sha256_hex};

const SIDE: usize = 96;

/// The Ultralytics-made fixture (3 classes, 96×96), the model every edge test uses.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ultralytics-yolov8t-96.onnx")
}

/// A model folder holding the fixture as `balanced` with its card.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture()).unwrap();
    let onnx = dir.path().join("balanced.onnx");
    std::fs::write(&onnx, &bytes).unwrap();
    let dims = |d: &[i64]| d.iter().map(|&v| CardDim::Fixed(v)).collect();
    let card = ModelCard {
        format: FORMAT.into(),
        file: "balanced.onnx".into(),
        sha256: sha256_hex(&bytes),
        bytes: bytes.len() as u64,
        opset: 13,
        precision: "fp32".into(),
        input: TensorInfo {
            name: "images".into(),
            shape: dims(&[1, 3, SIDE as i64, SIDE as i64]),
            dtype: "float32".into(),
        },
        output: TensorInfo {
            name: "output0".into(),
            shape: dims(&[1, 7, 189]),
            dtype: "float32".into(),
        },
        names: vec!["lionfish".into(), "urchin".into(), "abalone".into()],
        imgsz: SIDE as u32,
        strides: vec![8, 16, 32],
        anchors: 189,
        variant: Some("balanced".into()),
        conf_floor: Some(0.25),
        source: CardSource {
            kind: "onnx".into(),
            file: "ultralytics-yolov8t-96.onnx".into(),
            sha256: sha256_hex(&bytes),
        },
        metrics: None,
        verification: None,
        lint: vec![],
        trident_version: "0.1.0".into(),
    };
    card.save(&ModelCard::path_for(&onnx)).unwrap();
    dir
}

/// tract's output for each validation frame, keyed by the SHA-256 of the frame's float32 bytes
/// (what trtexec's --loadInputs file will hold), with `nudge` applied to the copy.
fn reference_outputs(
    frames: usize,
    nudge: impl Fn(&mut [f32], usize),
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture()).unwrap();
    let model = OnnxModel {
        path: &fixture(),
        bytes: &bytes,
    };
    let mut tract = backend::load(
        BackendKind::Tract,
        &model,
        [1, 3, SIDE, SIDE],
        &Default::default(),
    )
    .unwrap();
    validation_frames(SIDE, frames)
        .iter()
        .map(|input| {
            let mut out = Vec::new();
            let shape = tract.run(input, &mut out).unwrap();
            let n = shape[2];
            nudge(&mut out, n);
            let raw: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
            (sha256_hex(&raw), shape, out)
        })
        .collect()
}

/// A stand-in trtexec (TensorRT 8.2.1): `--help` prints the banner; a build writes an "engine";
/// `--loadEngine` copies the export prepared for the input file's SHA-256 from `refs`.
struct FakeTrtexec {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl FakeTrtexec {
    fn new(refs: &[(String, Vec<usize>, Vec<f32>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ref_dir = dir.path().join("refs");
        std::fs::create_dir(&ref_dir).unwrap();
        for (sha, shape, values) in refs {
            let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
            let values: Vec<String> = values.iter().map(ToString::to_string).collect();
            let json = format!(
                "[\n  {{ \"name\" : \"output0\"\n  , \"dimensions\" : \"{}\"\n  , \"values\" : [ {} ]\n  }}\n]\n",
                dims.join("x"),
                values.join(", ")
            );
            std::fs::write(ref_dir.join(format!("{sha}.json")), json).unwrap();
        }
        let log = dir.path().display();
        let script = format!(
            r#"#!/bin/sh
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # $0 $*"
[ "$1" = "--help" ] && exit 0
onnx=""; save=""; engine=""; input=""; export=""
for a in "$@"; do
  case "$a" in
    --onnx=*) onnx="${{a#--onnx=}}" ;;
    --saveEngine=*) save="${{a#--saveEngine=}}" ;;
    --loadEngine=*) engine="${{a#--loadEngine=}}" ;;
    --loadInputs=images:*) input="${{a#--loadInputs=images:}}" ;;
    --exportOutput=*) export="${{a#--exportOutput=}}" ;;
  esac
done
if [ -n "$save" ]; then
  echo build >> "{log}/builds.log"
  {{ printf 'engine('; cat "$onnx"; printf ')'; }} > "$save"
elif [ -n "$engine" ]; then
  [ -f "$engine" ] || {{ echo "[E] cannot open $engine" >&2; exit 1; }}
  echo run >> "{log}/runs.log"
  ref="{log}/refs/$(sha256sum "$input" | cut -d' ' -f1).json"
  [ -f "$ref" ] || {{ echo "[E] no reference output for this input" >&2; exit 1; }}
  cp "$ref" "$export"
fi
echo "&&&& PASSED TensorRT.trtexec [TensorRT v8201] # $0 $*"
"#
        );
        let program = dir.path().join("trtexec");
        install_script(&program, &script);
        FakeTrtexec { dir, program }
    }

    fn toolchain(&self) -> Toolchain {
        Toolchain {
            gpu: Ok(nano()),
            builder: Ok(Box::new(Trtexec::at(&self.program))),
            validator: Some(Validator::Trtexec(self.program.clone())),
            shim: Err("no TensorRT shim".into()),
        }
    }

    fn count(&self, log: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(log)).map_or(0, |s| s.lines().count())
    }
}

fn nano() -> GpuFacts {
    GpuFacts {
        name: "NVIDIA Tegra X1".into(),
        compute_capability: (5, 3),
    }
}

/// Engines and sidecars in the cache (temporaries and the timing cache aside).
fn cached(cache: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".engine") || (n.ends_with(".json") && !n.starts_with('.')))
        .collect();
    names.sort();
    names
}

fn options(models: &Path, cache: &Path) -> PrepareOptions {
    PrepareOptions {
        cache_dir: cache.to_path_buf(),
        frames: 3,
        ..PrepareOptions::new(models)
    }
}

#[test]
fn without_gpu_or_tensorrt_prepare_is_a_noop_that_says_why() {
    let models = model_dir();
    let cache = tempfile::tempdir().unwrap();
    let opts = options(models.path(), &cache.path().join("engines"));
    let tools = Toolchain {
        gpu: Err("no NVIDIA GPU found; tried nvidia-smi (not found)".into()),
        builder: Err("no TensorRT engine builder is available (tried: trtexec on PATH)".into()),
        validator: None,
        shim: Err("no TensorRT shim".into()),
    };
    let report = prepare_with(&opts, tools).unwrap();
    assert!(report.is_noop());
    assert!(report.models.is_empty());
    assert_eq!(report.model_names, ["balanced"]);
    let text = report.to_string();
    assert!(
        text.contains("no NVIDIA GPU found and TensorRT not available: nothing to prepare")
            && text.contains("the runtime will use onnxruntime/tract")
            && text.contains("tried nvidia-smi")
            && text.contains("models: balanced"),
        "{text}"
    );
    assert!(
        !cache.path().join("engines").exists(),
        "a no-op writes nothing"
    );

    // A GPU but no TensorRT: still nothing to do, and the report says which half is missing.
    let tools = Toolchain {
        gpu: Ok(nano()),
        builder: Err("no TensorRT engine builder is available".into()),
        validator: None,
        shim: Err("/opt/trident/lib/libtrident_trt.so: libnvinfer.so.8 is missing".into()),
    };
    let report = prepare_with(&opts, tools).unwrap();
    let text = report.to_string();
    assert!(
        text.starts_with("trident-edge prepare: TensorRT not available: nothing to prepare"),
        "{text}"
    );
}

#[test]
fn an_engine_that_matches_tract_is_built_validated_then_reused() {
    let models = model_dir();
    let cache = tempfile::tempdir().unwrap();
    let opts = options(models.path(), cache.path());
    let fake = FakeTrtexec::new(&reference_outputs(opts.frames, |_, _| {}));

    let report = prepare_with(&opts, fake.toolchain()).unwrap();
    assert!(!report.is_noop());
    assert_eq!(report.tensorrt_version.as_deref(), Some("8.2.1"));
    assert_eq!(report.models.len(), 1);
    let m = &report.models[0];
    assert!(m.built, "first run builds");
    assert_eq!(m.agreement.frames, 3);
    assert_eq!(
        (m.agreement.max_abs_box_px, m.agreement.max_abs_score),
        (0.0, 0.0)
    );
    assert_eq!(
        m.agreement.boxes_compared,
        3 * 100,
        "each frame's 100 best anchors"
    );
    assert!(m.engine.is_file() && m.engine.starts_with(cache.path()));
    assert_eq!(cached(cache.path()).len(), 2, "engine and sidecar");
    assert_eq!(
        (fake.count("builds.log"), fake.count("runs.log")),
        (1, 3),
        "one trtexec run per frame"
    );
    let text = report.to_string();
    assert!(
        text.contains("1 TensorRT engine(s) ready")
            && text.contains("balanced")
            && text.contains("built"),
        "{text}"
    );

    let again = prepare_with(&opts, fake.toolchain()).unwrap();
    assert!(
        !again.models[0].built,
        "second run reuses the cached engine"
    );
    assert_eq!(again.models[0].engine, m.engine);
    assert_eq!(
        (fake.count("builds.log"), fake.count("runs.log")),
        (1, 6),
        "reused, and validated again"
    );
    assert!(again.to_string().contains("cached"), "{again}");
}

#[test]
fn differences_within_the_tolerance_pass_and_are_reported() {
    let models = model_dir();
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(models.path(), cache.path());
    // The fixture's random weights give most anchors the same lowest score, so only a top 10
    // (all above it) leaves the worst anchor out for sure.
    opts.tolerance.box_anchors = 10;
    // The score of anchor 0, class 0 off by 0.01 (the limit is 0.02), and the box of tract's
    // worst-scoring anchor off by 50 px: no detection comes from there, so it is not compared.
    let fake = FakeTrtexec::new(&reference_outputs(opts.frames, |out, n| {
        let worst = (0..n)
            .min_by(|&i, &j| score(out, n, i).total_cmp(&score(out, n, j)))
            .unwrap();
        out[worst] += 50.0;
        out[4 * n] += 0.01;
    }));
    let report = prepare_with(&opts, fake.toolchain()).unwrap();
    let a = report.models[0].agreement;
    assert!((a.max_abs_score - 0.01).abs() < 1e-4, "{a:?}");
    assert_eq!((a.max_abs_box_px, a.boxes_compared), (0.0, 3 * 10));
}

#[test]
fn an_engine_that_cannot_run_fails_and_is_removed() {
    let models = model_dir();
    let cache = tempfile::tempdir().unwrap();
    let opts = options(models.path(), cache.path());
    // Answers for the first frame only: trtexec fails on the second.
    let fake = FakeTrtexec::new(&reference_outputs(1, |_, _| {}));
    let err = prepare_with(&opts, fake.toolchain()).unwrap_err();
    let Error::EngineValidation(failures) = &err else {
        panic!("expected a validation failure, got {err:?}");
    };
    assert_eq!(failures[0].agreement, None);
    assert!(
        failures[0].reason.contains("could not be validated")
            && failures[0]
                .reason
                .contains("no reference output for this input"),
        "{err}"
    );
    assert!(
        cached(cache.path()).is_empty(),
        "{:?}",
        cached(cache.path())
    );
}

#[test]
fn options_that_would_check_nothing_are_refused() {
    let models = model_dir();
    let cache = tempfile::tempdir().unwrap();
    let fake = FakeTrtexec::new(&[]);
    let mut opts = options(models.path(), cache.path());
    opts.frames = 0;
    let err = prepare_with(&opts, fake.toolchain()).unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("frames"),
        "{err}"
    );
    opts.frames = 1;
    opts.tolerance.score_abs = f32::NAN;
    let err = prepare_with(&opts, fake.toolchain()).unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("score tolerance"),
        "{err}"
    );
    assert_eq!(
        fake.count("builds.log"),
        0,
        "refused before anything is built"
    );
}

#[test]
fn an_engine_beyond_the_tolerance_fails_and_leaves_nothing_in_the_cache() {
    let models = model_dir();
    let cache = tempfile::tempdir().unwrap();
    let opts = options(models.path(), cache.path());
    // A score off by 0.05 and, at tract's best-scoring anchor, a box centre off by 3 px (the limit
    // is 1 % of 96 = 0.96 px).
    let fake = FakeTrtexec::new(&reference_outputs(opts.frames, |out, n| {
        let best = (0..n)
            .max_by(|&i, &j| score(out, n, i).total_cmp(&score(out, n, j)))
            .unwrap();
        out[best] += 3.0;
        out[4 * n + 1] += 0.05;
    }));
    let err = prepare_with(&opts, fake.toolchain()).unwrap_err();
    let Error::EngineValidation(failures) = &err else {
        panic!("expected a validation failure, got {err:?}");
    };
    assert_eq!(failures.len(), 1);
    let f = &failures[0];
    assert_eq!(f.model, "balanced");
    let a = f.agreement.expect("the engine ran on every frame");
    assert!(
        (a.max_abs_score - 0.05).abs() < 1e-4 && (a.max_abs_box_px - 3.0).abs() < 1e-3,
        "{a:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("model balanced")
            && text.contains("max |Δ| box 3.000 px (limit 0.960 px")
            && text.contains("max |Δ| score 0.0500 (limit 0.02)"),
        "{text}"
    );
    assert!(!err.is_input_error());
    assert!(
        cached(cache.path()).is_empty(),
        "the failed engine is gone: {:?}",
        cached(cache.path())
    );
}

/// The best class score of anchor `i` in a `[1, 4 + nc, n]` output.
fn score(out: &[f32], n: usize, i: usize) -> f32 {
    (4..out.len() / n)
        .map(|r| out[r * n + i])
        .fold(f32::MIN, f32::max)
}
