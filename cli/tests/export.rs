//! `trident export` end to end: a trained checkpoint → verified ONNX, card and FP16 twin; a
//! user's ONNX brought in; TensorRT engines through a stand-in trtexec; and every bad input a
//! user can give (message, exit status, nothing half-written).

use std::path::Path;

use prost::Message;
use tract_onnx::pb::{ModelProto, NodeProto};

use crate::common;
use common::{json, s, stderr, stdout, synth, train_one_epoch, trident};

#[test]
fn export_verifies_and_writes_cards_then_imports_engines_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "ds", 24, 9);
    let best = train_one_epoch(&data, &dir.path().join("runs"));
    let models = dir.path().join("models");

    // Checkpoint → ONNX with verification against tch (dataset found from the run's metadata).
    let o = trident(&[
        "export",
        "--checkpoint",
        s(&best),
        "--out",
        s(&models),
        "--half",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("parity tract vs tch") && out.contains("parity onnxruntime vs tch"),
        "{out}"
    );
    assert!(out.contains("fp16 weights"), "{out}");
    // A recall gate on a critical class: one a one-epoch model passes (0) is recorded in the
    // card; one it cannot pass (1) fails the export with the figure, writing nothing; an
    // unknown class exits 2.
    let names = json(&models.join("high_precision.card.json"))["names"].clone();
    // A class the validation split (the verification images) holds.
    let in_val = std::fs::read_dir(data.join("labels/val"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .find_map(|t| {
            t.split_whitespace()
                .next()
                .map(|c| c.parse::<usize>().unwrap())
        })
        .expect("the validation split has boxes");
    let class = names[in_val].as_str().unwrap().to_string();
    let gated = dir.path().join("gated");
    let export_gated = |gate: &str, out: &Path| {
        trident(&[
            "export",
            "--checkpoint",
            s(&best),
            "--out",
            s(out),
            "--min-recall",
            gate,
        ])
    };
    let o = export_gated(&format!("{class}=0"), &gated);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("recall of {class}")),
        "{}",
        stdout(&o)
    );
    let recall = &json(&gated.join("high_precision.card.json"))["verification"]["recall"];
    assert_eq!(recall[0]["class"], class.as_str());
    assert_eq!(recall[0]["required"], 0.0);
    let refused = dir.path().join("refused");
    let o = export_gated(&format!("{class}=1"), &refused);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("below --min-recall 1") && stderr(&o).contains(&class),
        "{}",
        stderr(&o)
    );
    assert!(!refused.join("high_precision.onnx").exists());
    let o = export_gated("kraken=0.5", &refused);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("kraken"), "{}", stderr(&o));

    let onnx = models.join("high_precision.onnx");
    let card = json(&models.join("high_precision.card.json"));
    let bytes = std::fs::read(&onnx).unwrap();
    assert_eq!(card["format"], "trident-model-card/1");
    assert_eq!(card["sha256"], trident_exporter::export::sha256_hex(&bytes));
    assert_eq!(card["bytes"], bytes.len());
    assert_eq!(card["opset"], 13);
    assert_eq!(card["variant"], "high_precision");
    assert_eq!(card["input"]["shape"], serde_json::json!([1, 3, 96, 96]));
    assert_eq!(card["output"]["shape"], serde_json::json!([1, 7, 189]));
    assert_eq!(card["names"].as_array().unwrap().len(), 3);
    let v = &card["verification"];
    let parity = v["parity"].as_array().unwrap();
    assert_eq!(parity.len(), 2, "{v}");
    for p in parity {
        assert_eq!(p["reference"], "tch");
        assert_eq!(p["passed"], true);
        assert!(p["max_abs_score"].as_f64().unwrap() <= 1e-4, "{p}");
    }
    let task = v["task"].as_array().unwrap();
    let map = |runner: &str| {
        task.iter().find(|t| t["runner"] == runner).unwrap()["map50"]
            .as_f64()
            .unwrap()
    };
    assert!((map("tch") - map("tract")).abs() <= 0.001);
    assert!((map("tch") - map("onnxruntime")).abs() <= 0.001);
    let half = json(&models.join("high_precision.fp16.card.json"));
    assert_eq!(half["precision"], "fp16-weights");
    let half_bytes = std::fs::metadata(models.join("high_precision.fp16.onnx"))
        .unwrap()
        .len();
    assert!(
        half_bytes < bytes.len() as u64 * 6 / 10,
        "{half_bytes} vs {}",
        bytes.len()
    );

    // Bring your own ONNX: names and size come from its metadata; backends cross-checked.
    let byo = dir.path().join("byo");
    let o = trident(&[
        "export",
        "--onnx",
        s(&onnx),
        "--out",
        s(&byo),
        "--data",
        s(&data.join("dataset.yaml")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let imported = json(&byo.join("high_precision.card.json"));
    assert_eq!(imported["source"]["kind"], "onnx");
    assert_eq!(imported["names"], card["names"]);
    assert_eq!(
        imported["sha256"], card["sha256"],
        "bytes are kept as they are"
    );
    assert_eq!(imported["verification"]["parity"][0]["reference"], "tract");

    // An ONNX exported by Ultralytics itself (tests/fixtures/make_ultralytics_onnx.py).
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ultralytics-yolov8t-96.onnx");
    let o = trident(&["export", "--onnx", s(&fixture), "--out", s(&byo)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ultra = json(&byo.join("ultralytics-yolov8t-96.card.json"));
    assert_eq!(
        ultra["names"],
        serde_json::json!(["lionfish", "urchin", "abalone"])
    );
    assert_eq!(ultra["output"]["shape"], serde_json::json!([1, 7, 189]));
    assert_eq!(ultra["lint"], serde_json::json!([]));
    assert_eq!(ultra["verification"]["parity"][0]["passed"], true);

    // Engines: a clear error without TensorRT (ONNX still written), then a stand-in trtexec.
    let no_trt = dir.path().join("no_trt");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trident"))
        .args([
            "export",
            "--onnx",
            s(&onnx),
            "--out",
            s(&no_trt),
            "--no-validate",
            "--engine",
        ])
        .env("PATH", "/usr/bin:/bin")
        .env_remove("TRTEXEC")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no TensorRT engine builder"),
        "{}",
        stderr(&o)
    );
    assert!(no_trt.join("high_precision.onnx").exists());
    let fake = dir.path().join("trtexec");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho '&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec'\n\
         for a in \"$@\"; do case \"$a\" in --saveEngine=*) printf engine > \"${a#--saveEngine=}\";; esac; done\n\
         echo \"$@\" >> \"$0.calls\"\necho '&&&& PASSED TensorRT.trtexec'\n",
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&fake).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let engine_run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_trident"))
            .args([
                "export",
                "--onnx",
                s(&onnx),
                "--out",
                s(&no_trt),
                "--no-validate",
                "--engine",
            ])
            .env("TRTEXEC", &fake)
            .env("TRIDENT_GPU", "NVIDIA Tegra X1;5.3")
            .output()
            .unwrap()
    };
    let o = engine_run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("built"), "{}", stdout(&o));
    let calls = std::fs::read_to_string(dir.path().join("trtexec.calls")).unwrap();
    assert!(
        calls.contains("--fp16") && calls.contains("--workspace=1024"),
        "{calls}"
    );
    let o = engine_run();
    assert!(stdout(&o).contains("from the cache"), "{}", stdout(&o));

    bad_inputs(dir.path(), &best, &onnx);
}

/// Hostile `.onnx` files (no training needed): each is refused with exit status 2 and a message
/// naming the file (and the field at fault), and nothing appears in the output folder.
#[test]
fn export_refuses_hostile_onnx_with_status_2_and_writes_nothing() {
    use trident_exporter::onnx::builder::{Dim, GraphBuilder};
    use trident_exporter::onnx::read::MAX_ONNX_BYTES;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let refused = |name: &str, bytes: Option<&[u8]>, needles: &[&str]| {
        let file = dir.path().join(name);
        match bytes {
            Some(b) => std::fs::write(&file, b).unwrap(),
            // Over the cap, sparse: nothing is written or read.
            None => std::fs::File::create(&file)
                .unwrap()
                .set_len(MAX_ONNX_BYTES + 1)
                .unwrap(),
        }
        let o = trident(&["export", "--onnx", s(&file), "--out", s(&out)]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name), "{name}: the file is not named: {err}");
        for n in needles {
            assert!(err.contains(n), "{name}: no `{n}` in: {err}");
        }
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(!out.exists(), "{name} left {}", out.display());
    };

    refused(
        "garbage.onnx",
        Some(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage"),
        &["not an ONNX model"],
    );
    refused("empty.onnx", Some(b""), &["empty (0 bytes)"]);
    refused(
        "huge.onnx",
        None,
        &[&format!("{} bytes", MAX_ONNX_BYTES + 1), "cap"],
    );

    // A detection layout whose input side is 2^40 and whose weight claims 2^40 values.
    let model = |side: i64, weight_dims: &[i64]| {
        let mut b = GraphBuilder::default();
        let d = [
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(side),
            Dim::Fixed(side),
        ];
        b.input("images", &d);
        b.float("w", &[4], &[0.5; 4]);
        b.graph.initializer[0].dims = weight_dims.to_vec();
        b.output("output0", &[Dim::Fixed(1), Dim::Fixed(6), Dim::Fixed(84)]);
        ModelProto {
            graph: Some(b.graph),
            ..Default::default()
        }
        .encode_to_vec()
    };
    refused(
        "side.onnx",
        Some(&model(1 << 40, &[4])),
        &["graph.input[0] `images` dim[2]", "1099511627776"],
    );
    refused(
        "weights.onnx",
        Some(&model(64, &[1 << 40])),
        &["graph.initializer[0] `w` data", "4398046511104 bytes"],
    );
    refused(
        "negative.onnx",
        Some(&model(64, &[-4])),
        &["graph.initializer[0] `w` dims[0]", "negative"],
    );
}

/// Each bad input: exit status 2 (1 for the environment), the file named, nothing written.
fn bad_inputs(dir: &Path, best: &Path, onnx: &Path) {
    let out = dir.join("never");
    let refused = |args: &[&str], code: i32, needle: &str| {
        let o = trident(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!out.exists(), "{args:?} left {}", out.display());
    };

    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"garbage").unwrap();
    refused(
        &["export", "--checkpoint", s(&corrupt), "--out", s(&out)],
        2,
        "corrupt.safetensors",
    );
    let bytes = std::fs::read(best).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        &["export", "--checkpoint", s(&truncated), "--out", s(&out)],
        2,
        "truncated.safetensors",
    );
    refused(
        &[
            "export",
            "--checkpoint",
            s(best),
            "--out",
            s(&out),
            "--opset",
            "14",
        ],
        2,
        "--opset 14",
    );

    let file = dir.join("a_file");
    std::fs::write(&file, "x").unwrap();
    let o = trident(&[
        "export",
        "--checkpoint",
        s(best),
        "--out",
        s(&file.join("sub")),
        "--no-validate",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("a_file/sub"), "{}", stderr(&o));

    let not_onnx = dir.join("not.onnx");
    std::fs::write(&not_onnx, b"\xff\xff\xff garbage").unwrap();
    refused(
        &["export", "--onnx", s(&not_onnx), "--out", s(&out)],
        2,
        "not an ONNX model",
    );

    // A graph TensorRT 8.2 cannot parse: the node is named; --allow-unsupported writes it.
    let mut model = ModelProto::decode(std::fs::read(onnx).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.node.push(NodeProto {
        name: "odd_unique".into(),
        op_type: "Unique".into(),
        input: vec!["images".into()],
        output: vec!["unique_out".into()],
        ..Default::default()
    });
    let unsupported = dir.join("unsupported.onnx");
    std::fs::write(&unsupported, model.encode_to_vec()).unwrap();
    refused(
        &["export", "--onnx", s(&unsupported), "--out", s(&out)],
        2,
        "odd_unique",
    );
    let allowed = dir.join("allowed");
    let o = trident(&[
        "export",
        "--onnx",
        s(&unsupported),
        "--out",
        s(&allowed),
        "--no-validate",
        "--allow-unsupported",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let card = json(&allowed.join("unsupported.card.json"));
    assert!(
        card["lint"][0].as_str().unwrap().contains("Unique"),
        "{card}"
    );

    // The wrong IO layout: the output transposed to [1, N, 4 + nc].
    let mut model = ModelProto::decode(std::fs::read(onnx).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let out_info = graph.output[0].clone();
    let last = graph
        .node
        .iter_mut()
        .find(|n| n.output.contains(&out_info.name))
        .unwrap();
    last.output = vec!["pre_transpose".into()];
    graph.node.push(NodeProto {
        name: "transpose_out".into(),
        op_type: "Transpose".into(),
        input: vec!["pre_transpose".into()],
        output: vec![out_info.name.clone()],
        attribute: vec![tract_onnx::pb::AttributeProto {
            name: "perm".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
            ints: vec![0, 2, 1],
            ..Default::default()
        }],
        ..Default::default()
    });
    let shape = &mut graph.output[0];
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
        shape.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim.swap(1, 2);
    }
    let transposed = dir.join("transposed.onnx");
    std::fs::write(&transposed, model.encode_to_vec()).unwrap();
    refused(
        &["export", "--onnx", s(&transposed), "--out", s(&out)],
        2,
        "transposed",
    );
}
