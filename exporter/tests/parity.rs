//! The exported ONNX computes what the checkpoint computes: tract on the exported graph against
//! the tch forward pass of the same weights, with BatchNorm statistics that make folding matter.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};
use trident_core::checkpoint::{CheckpointFile, CheckpointMeta};
use trident_core::model_spec::ModelSpec;
use trident_exporter::onnx::detector::{GraphOptions, build};
use trident_trainer::checkpoint::{named, save};
use trident_trainer::model::Detector;

/// libtorch's random generator is global and tests run on parallel threads: draw under a lock so
/// every run sees the same weights and inputs.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A model with random weights and non-trivial BatchNorm statistics, saved as a checkpoint.
fn checkpoint(
    dir: &Path,
    preset: &str,
    nc: usize,
    side: u32,
) -> (nn::VarStore, Detector, std::path::PathBuf) {
    let _rng = TORCH_RNG.lock().unwrap();
    tch::manual_seed(7);
    let names = (0..nc).map(|i| format!("c{i}")).collect();
    let spec = ModelSpec::preset(preset, names, side).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Detector::new(&vs.root(), &spec);
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            let n = t.size();
            if name.ends_with("running_mean") {
                t.shallow_clone()
                    .copy_(&(Tensor::randn(&n, (Kind::Float, Device::Cpu)) * 0.2));
            } else if name.ends_with("running_var") {
                t.shallow_clone()
                    .copy_(&(Tensor::rand(&n, (Kind::Float, Device::Cpu)) * 1.5 + 0.25));
            } else if name.ends_with("bn.weight") {
                t.shallow_clone()
                    .copy_(&(Tensor::rand(&n, (Kind::Float, Device::Cpu)) + 0.5));
            } else if name.ends_with("bn.bias") {
                t.shallow_clone()
                    .copy_(&(Tensor::randn(&n, (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    let meta = CheckpointMeta {
        spec,
        variant: Some("balanced".into()),
        conf_floor: 0.25,
        epoch: 1,
        metrics: None,
        training: None,
    };
    let path = dir.join("best.safetensors");
    save(&path, &named("", &vs.variables()), &meta).unwrap();
    (vs, model, path)
}

/// tract through the edge runtime's backend trait: `(output shape, values)`.
fn run_tract(bytes: &[u8], shape: [usize; 4], input: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let model = trident_infer::backend::OnnxModel {
        path: Path::new("test.onnx"),
        bytes,
    };
    let mut backend = trident_infer::backend::load(
        trident_infer::BackendKind::Tract,
        &model,
        shape,
        &Default::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    let shape = backend.run(input, &mut out).unwrap();
    (shape, out)
}

/// Random input in 0–1, drawn under the lock.
fn input(shape: [i64; 4]) -> Tensor {
    let _rng = TORCH_RNG.lock().unwrap();
    tch::manual_seed(11);
    Tensor::rand(shape, (Kind::Float, Device::Cpu))
}

/// Parity bound on `[batch, rows, N]` outputs: 1e-4 absolute, except that box coordinates (in
/// pixels) may also differ by 5e-7 of their value: a float32 ulp is already 3e-5 at 256 px and
/// 6e-5 at 512 px, and folding BatchNorm reorders the arithmetic.
fn assert_parity(reference: &[f32], got: &[f32], rows: usize, n: usize, what: &str) {
    assert_eq!(reference.len(), got.len(), "{what}: output sizes differ");
    let (mut worst_box, mut worst_score) = (0f32, 0f32);
    for (i, (r, g)) in reference.iter().zip(got).enumerate() {
        let d = (r - g).abs();
        if (i / n) % rows < 4 {
            assert!(
                d <= 1e-4f32.max(5e-7 * r.abs()),
                "{what}: box value {r} vs {g}"
            );
            worst_box = worst_box.max(d);
        } else {
            assert!(d <= 1e-4, "{what}: score {r} vs {g}");
            worst_score = worst_score.max(d);
        }
    }
    eprintln!("{what}: max abs diff {worst_box:.2e} px on boxes, {worst_score:.2e} on scores");
}

#[test]
fn tract_on_the_exported_graph_matches_tch_for_every_opset() {
    let dir = tempfile::tempdir().unwrap();
    let side = 128u32;
    let (_vs, model, path) = checkpoint(dir.path(), "tiny", 3, side);
    let ck = CheckpointFile::open(&path).unwrap();
    let x = input([1, 3, i64::from(side), i64::from(side)]);
    let expected: Vec<f32> = Vec::try_from(tch::no_grad(|| model.predict(&x)).view(-1)).unwrap();
    let input: Vec<f32> = Vec::try_from(x.view(-1)).unwrap();
    for opset in [11, 12, 13] {
        let opts = GraphOptions {
            opset,
            imgsz: side,
            dynamic_batch: false,
        };
        let graph = build(&ck.meta.spec, &ck, &opts, &[]).unwrap();
        let findings = trident_exporter::lint::lint(&graph);
        assert!(findings.is_empty(), "opset {opset}: {findings:?}");
        let bytes =
            trident_exporter::onnx::write(&graph, &dir.path().join(format!("m{opset}.onnx")))
                .unwrap();
        let s = side as usize;
        let (shape, got) = run_tract(&bytes, [1, 3, s, s], &input);
        assert_eq!(shape, [1, 7, 256 + 64 + 16]);
        assert_parity(
            &expected,
            &got,
            7,
            336,
            &format!("opset {opset}, tract vs tch"),
        );

        // The independent reference: onnx's full checker and ONNX Runtime on the same input.
        let input_file = dir.path().join("x.f32");
        let output_file = dir.path().join(format!("y{opset}.f32"));
        std::fs::write(
            &input_file,
            input
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let onnx_file = dir.path().join(format!("m{opset}.onnx"));
        let s = side.to_string();
        let args: Vec<&std::ffi::OsStr> = vec![
            onnx_file.as_os_str(),
            input_file.as_os_str(),
            "1".as_ref(),
            "3".as_ref(),
            s.as_ref(),
            s.as_ref(),
            output_file.as_os_str(),
        ];
        let report = trident_e2e::run_reference("onnx_reference.py", &args);
        assert_eq!(report["input"], "images");
        assert_eq!(report["output"], "output0");
        assert_eq!(report["opset"], opset);
        let ort: Vec<f32> = std::fs::read(&output_file)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_parity(
            &expected,
            &ort,
            7,
            336,
            &format!("opset {opset}, ONNX Runtime vs tch"),
        );
    }
}

#[test]
fn dynamic_batch_runs_two_images_like_two_single_runs() {
    let dir = tempfile::tempdir().unwrap();
    let side = 96u32;
    let (_vs, model, path) = checkpoint(dir.path(), "tiny", 2, side);
    let ck = CheckpointFile::open(&path).unwrap();
    let opts = GraphOptions {
        opset: 13,
        imgsz: side,
        dynamic_batch: true,
    };
    let graph = build(&ck.meta.spec, &ck, &opts, &[]).unwrap();
    let bytes = trident_exporter::onnx::write(&graph, &dir.path().join("dyn.onnx")).unwrap();
    let x = input([2, 3, i64::from(side), i64::from(side)]);
    let expected: Vec<f32> = Vec::try_from(tch::no_grad(|| model.predict(&x)).view(-1)).unwrap();
    let s = side as usize;
    let (shape, got) = run_tract(
        &bytes,
        [2, 3, s, s],
        &Vec::<f32>::try_from(x.view(-1)).unwrap(),
    );
    assert_eq!(shape, [2, 6, 144 + 36 + 9]);
    assert_parity(&expected, &got, 6, 189, "dynamic batch of 2, tract vs tch");
}

#[test]
fn a_checkpoint_that_does_not_fit_its_spec_names_the_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (_vs, _model, path) = checkpoint(dir.path(), "tiny", 3, 64);
    let ck = CheckpointFile::open(&path).unwrap();
    let mut wrong = ck.meta.spec.clone();
    wrong.names.push("extra".into());
    let opts = GraphOptions {
        opset: 13,
        imgsz: 64,
        dynamic_batch: false,
    };
    let err = build(&wrong, &ck, &opts, &[]).err().unwrap().to_string();
    assert!(
        err.contains("model.22.cv3.0.2.weight") && err.contains("[3, ") && err.contains("[4, "),
        "{err}"
    );
    let err = build(&ck.meta.spec, &ck, &GraphOptions { opset: 14, ..opts }, &[])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--opset 14"), "{err}");
}

#[test]
fn verification_fails_when_the_graph_does_not_compute_the_checkpoint() {
    use trident_exporter::export::{ExportOptions, from_checkpoint};
    use trident_exporter::verify::{Reference, VerifySet, VerifySettings, verify};
    let dir = tempfile::tempdir().unwrap();
    let side = 64u32;
    let (_vs, model, path) = checkpoint(dir.path(), "tiny", 2, side);
    let exported = from_checkpoint(&path, &ExportOptions::default()).unwrap();
    let set = VerifySet::synthetic(side, 2, 3);
    let s = i64::from(side);
    let reference = Reference {
        name: "tch".into(),
        outputs: set
            .inputs
            .iter()
            .map(|x| {
                let t = Tensor::from_slice(x).view([1, 3, s, s]);
                Vec::try_from(tch::no_grad(|| model.predict(&t)).view(-1)).unwrap()
            })
            .collect(),
    };
    let settings = VerifySettings::default();
    let bar = indicatif::ProgressBar::hidden();
    let v = verify(&exported, &set, Some(&reference), &settings, &bar).unwrap();
    assert!(v.parity.iter().all(|p| p.passed && p.reference == "tch"));
    assert_eq!(v.parity.len(), 2, "tract and ONNX Runtime both ran: {v:?}");

    // One box-branch bias (a DFL bin logit at stride 8) off by 0.05: distances move by a few
    // hundredths of a cell, far beyond 1e-4. (Class biases start near -8, where the sigmoid is
    // too flat to show a small change.)
    let mut tampered = exported.clone();
    let graph = tampered.model.graph.as_mut().unwrap();
    let bias = graph
        .initializer
        .iter_mut()
        .find(|t| t.name.contains("cv2.0.2") && t.dims.len() == 1)
        .expect("a box-branch bias");
    let v0 = f32::from_le_bytes(bias.raw_data[..4].try_into().unwrap());
    bias.raw_data[..4].copy_from_slice(&(v0 + 0.05).to_le_bytes());
    tampered.bytes = prost::Message::encode_to_vec(&tampered.model);
    let err = verify(&tampered, &set, Some(&reference), &settings, &bar)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tract differs from tch"), "{err}");
}
