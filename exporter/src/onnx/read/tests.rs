//! Hostile ONNX files through the reading path `trident export --onnx` takes (read under the
//! cap, decode, check every tensor, inspect the layout, lint): each must end in a clear error
//! naming the file (and the field), never a panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use prost::Message;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::{
    AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    attribute_proto,
};

use super::*;
use crate::export::from_onnx;
use crate::inspect::{DetectionGraph, Hints, inspect};
use crate::onnx::builder::{Dim, GraphBuilder};

const NAME: &str = "hostile.onnx";

/// A minimal detection graph the inspector accepts: `images` [batch, 3, side, side] → `output0`
/// [batch, 4 + nc, anchors], one small initializer, names and size in the metadata.
fn model(side: i64, nc: usize) -> ModelProto {
    let anchors: i64 = [8, 16, 32].iter().map(|s| (side / s) * (side / s)).sum();
    let mut b = GraphBuilder::default();
    b.input(
        "images",
        &[
            Dim::Named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(side),
            Dim::Fixed(side),
        ],
    );
    b.float("w", &[2, 2], &[0.5; 4]);
    b.output(
        "output0",
        &[
            Dim::Named("batch"),
            Dim::Fixed(4 + i64::try_from(nc).unwrap()),
            Dim::Fixed(anchors),
        ],
    );
    let names: Vec<String> = (0..nc).map(|i| format!("class {i}")).collect();
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(b.graph),
        metadata_props: vec![
            StringStringEntryProto {
                key: "names".into(),
                value: crate::metadata::names_dict(&names),
            },
            StringStringEntryProto {
                key: "imgsz".into(),
                value: format!("[{side}, {side}]"),
            },
        ],
        ..Default::default()
    }
}

/// The path `from_onnx` takes after reading, on bytes: decode and check, inspect, lint. Panics
/// are caught so that a failure says which input caused one.
fn import(bytes: &[u8], what: &str) -> Result<DetectionGraph> {
    catch_unwind(AssertUnwindSafe(|| {
        let path = Path::new(NAME);
        let model = parse(bytes, path)?;
        let graph = inspect(&model, path, &Hints::default())?;
        let _ = crate::lint::lint(&model);
        Ok(graph)
    }))
    .unwrap_or_else(|_| panic!("{what}: the reading path panicked"))
}

/// The error text of importing `bytes`, which must fail and name the file.
fn refused(bytes: &[u8], what: &str) -> String {
    let e = match import(bytes, what) {
        Ok(g) => panic!("{what}: accepted as {g:?}"),
        Err(e) => e,
    };
    assert!(e.is_input_error(), "{what}: {e} is not an input error");
    let text = e.to_string();
    assert!(text.contains(NAME), "{what}: the file is not named: {text}");
    text
}

/// `refused` for a model built in memory.
fn refused_model(m: &ModelProto, what: &str) -> String {
    refused(&m.encode_to_vec(), what)
}

fn initializer(m: &mut ModelProto) -> &mut TensorProto {
    &mut m.graph.as_mut().unwrap().initializer[0]
}

fn set_input_dims(m: &mut ModelProto, dims: [i64; 2]) {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto;
    let input = &mut m.graph.as_mut().unwrap().input[0];
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut()
    else {
        unreachable!("the builder declares tensors")
    };
    let shape = &mut t.shape.as_mut().unwrap().dim;
    shape[2].value = Some(Value::DimValue(dims[0]));
    shape[3].value = Some(Value::DimValue(dims[1]));
}

#[test]
fn the_minimal_model_reads_back() {
    let g = import(&model(64, 2).encode_to_vec(), "valid").unwrap();
    assert_eq!((g.imgsz, g.anchors, g.names.len()), (64, 64 + 16 + 4, 2));
}

#[test]
fn an_empty_file_is_refused() {
    let e = refused(b"", "empty");
    assert!(e.contains("empty (0 bytes)"), "{e}");
}

#[test]
fn garbage_bytes_are_refused() {
    // A little LCG: the same "random" bytes on every run.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x.to_be_bytes()[0]
        })
        .collect();
    for (what, bytes) in [
        ("0xff run", vec![0xff; 64]),
        ("text", b"this is not a model\n".to_vec()),
        ("noise", noise),
        // Field 7 (graph), length-delimited, claiming 2^62 bytes.
        (
            "huge length prefix",
            vec![0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40],
        ),
        // 200 nested graphs inside attributes: deeper than prost's recursion limit.
        ("deep nesting", deep_nesting(200)),
    ] {
        refused(&bytes, what);
    }
}

/// `depth` graphs nested through node attributes (`If`'s branches), encoded by hand.
fn deep_nesting(depth: usize) -> Vec<u8> {
    let mut g = tract_onnx::pb::GraphProto::default();
    for _ in 0..depth {
        g = tract_onnx::pb::GraphProto {
            node: vec![NodeProto {
                op_type: "If".into(),
                attribute: vec![AttributeProto {
                    name: "then_branch".into(),
                    r#type: attribute_proto::AttributeType::Graph as i32,
                    g: Some(g),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
    }
    ModelProto {
        graph: Some(g),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn every_truncation_is_an_error_or_a_model_never_a_panic() {
    let bytes = model(64, 2).encode_to_vec();
    for len in 0..bytes.len() {
        // A cut on a field boundary can leave a decodable model; what matters is no panic and,
        // when refused, a message naming the file.
        if let Err(e) = import(&bytes[..len], &format!("truncated to {len}")) {
            assert!(e.to_string().contains(NAME), "{e}");
        }
    }
    refused(&bytes[..bytes.len() - 1], "one byte short");
    let e = refused(&bytes[..bytes.len() / 2], "half");
    assert!(e.contains("not an ONNX model"), "{e}");
}

#[test]
fn a_dimension_of_2_pow_40_is_refused_where_it_is_declared() {
    let big = 1_i64 << 40;

    // An initializer claiming 2^40 float32s (4 TiB) with 16 bytes present.
    let mut m = model(64, 2);
    initializer(&mut m).dims = vec![big];
    let e = refused_model(&m, "initializer dims [2^40]");
    assert!(
        e.contains("graph.initializer[0] `w` data") && e.contains("4398046511104 bytes"),
        "{e}"
    );

    // 2^40 × 2^40 elements overflow 64 bits.
    initializer(&mut m).dims = vec![big, big];
    let e = refused_model(&m, "initializer dims [2^40, 2^40]");
    assert!(
        e.contains("graph.initializer[0] `w` dims") && e.contains("64 bits"),
        "{e}"
    );

    // An input side of 2^40 (it used to be cast to u32 and wrap).
    let mut m = model(64, 2);
    set_input_dims(&mut m, [big, big]);
    let e = refused_model(&m, "input side 2^40");
    assert!(
        e.contains("graph.input[0] `images` dim[2]") && e.contains("1099511627776"),
        "{e}"
    );

    // The same side in the metadata of a symbolic-size input: within u32, over MAX_IMGSZ (the
    // anchor count used to overflow).
    let mut m = model(64, 2);
    {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value;
        use tract_onnx::pb::type_proto;
        let input = &mut m.graph.as_mut().unwrap().input[0];
        if let Some(type_proto::Value::TensorType(t)) =
            input.r#type.as_mut().unwrap().value.as_mut()
        {
            let dims = &mut t.shape.as_mut().unwrap().dim;
            dims[2].value = Some(Value::DimParam("h".into()));
            dims[3].value = Some(Value::DimParam("w".into()));
        }
    }
    m.metadata_props[1].value = "[4000000000, 4000000000]".into();
    let e = refused_model(&m, "metadata imgsz 4e9");
    assert!(
        e.contains("metadata_props `imgsz`") && e.contains("4000000000"),
        "{e}"
    );
}

#[test]
fn negative_and_zero_dimensions_are_refused() {
    let mut m = model(64, 2);
    initializer(&mut m).dims = vec![-1, -4];
    let e = refused_model(&m, "initializer dims [-1, -4]");
    assert!(
        e.contains("graph.initializer[0] `w` dims[0]") && e.contains("-1 is negative"),
        "{e}"
    );

    let mut m = model(64, 2);
    set_input_dims(&mut m, [-64, -64]);
    let e = refused_model(&m, "input side -64");
    assert!(
        e.contains("graph.input[0] `images` dim[2]") && e.contains("negative"),
        "{e}"
    );
    // The inspector on its own (a model that did not come through `parse`) refuses it too.
    let e = inspect(&m, Path::new(NAME), &Hints::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("dim[2]") && e.contains("at least 1"), "{e}");

    let mut m = model(64, 2);
    set_input_dims(&mut m, [0, 0]);
    let e = refused_model(&m, "input side 0");
    assert!(e.contains("dim[2]") && e.contains("at least 1"), "{e}");

    // A side that is no multiple of 32.
    let mut m = model(64, 2);
    set_input_dims(&mut m, [100, 100]);
    let e = refused_model(&m, "input side 100");
    assert!(e.contains("multiple of 32"), "{e}");
}

#[test]
fn tensors_claiming_more_data_than_present_are_refused() {
    // dims [2, 2] float32 = 16 bytes; 4 present.
    let mut m = model(64, 2);
    initializer(&mut m).raw_data.truncate(4);
    let e = refused_model(&m, "short raw_data");
    assert!(
        e.contains("`w` data") && e.contains("16 bytes") && e.contains("holds 4"),
        "{e}"
    );

    // Typed storage: 4 elements, 1 float_data value.
    let mut m = model(64, 2);
    let t = initializer(&mut m);
    t.raw_data.clear();
    t.float_data = vec![1.0];
    let e = refused_model(&m, "short float_data");
    assert!(e.contains("4 value(s)") && e.contains("holds 1"), "{e}");

    // No data at all.
    let mut m = model(64, 2);
    initializer(&mut m).raw_data.clear();
    refused_model(&m, "no data");

    // Data in another file, an undefined type, a type this ONNX version does not have.
    let mut m = model(64, 2);
    initializer(&mut m).data_location = Some(DataLocation::External as i32);
    let e = refused_model(&m, "external data");
    assert!(e.contains("external_data"), "{e}");
    for ty in [DataType::Undefined as i32, 99, -1] {
        let mut m = model(64, 2);
        initializer(&mut m).data_type = ty;
        let e = refused_model(&m, &format!("data_type {ty}"));
        assert!(e.contains("data_type"), "{e}");
    }

    // A Constant node's tensor attribute, checked like an initializer.
    let mut m = model(64, 2);
    m.graph.as_mut().unwrap().node.push(NodeProto {
        name: "k".into(),
        op_type: "Constant".into(),
        output: vec!["k_out".into()],
        attribute: vec![AttributeProto {
            name: "value".into(),
            r#type: attribute_proto::AttributeType::Tensor as i32,
            t: Some(TensorProto {
                name: "k_value".into(),
                dims: vec![1 << 40],
                data_type: DataType::Int64 as i32,
                int64_data: vec![7],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let e = refused_model(&m, "Constant with short data");
    assert!(
        e.contains("graph.node[0] `k`.attribute[0] `value`.t `k_value` data"),
        "{e}"
    );
}

#[test]
fn a_file_over_the_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    // Sparse: no bytes are written or read.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_ONNX_BYTES + 1).unwrap();
    drop(file);
    let e = from_onnx(&path, &Hints::default(), false).unwrap_err();
    assert!(e.is_input_error());
    assert!(
        matches!(e, Error::OnnxTooLarge { bytes: Some(_), .. }),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(NAME)
            && text.contains(&format!("{} bytes", MAX_ONNX_BYTES + 1))
            && text.contains(&format!("{MAX_ONNX_BYTES}-byte cap")),
        "{text}"
    );

    // A device reports size 0 and never ends: reading stops at the cap.
    let e = read_capped(Path::new("/dev/zero"), 1024).unwrap_err();
    assert!(
        matches!(e, Error::OnnxTooLarge { bytes: None, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("/dev/zero"), "{e}");
}

#[test]
fn from_onnx_reads_a_valid_file_and_refuses_hostile_ones_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    std::fs::write(&path, model(64, 2).encode_to_vec()).unwrap();
    let ok = from_onnx(&path, &Hints::default(), false).unwrap();
    assert_eq!(ok.card.imgsz, 64);

    for (what, bytes) in [
        ("empty", Vec::new()),
        ("garbage", b"\xff\xff\xff garbage".to_vec()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let e = from_onnx(&path, &Hints::default(), false).unwrap_err();
        assert!(e.is_input_error(), "{what}: {e}");
        assert!(e.to_string().contains(NAME), "{what}: {e}");
    }

    // A hint out of range is the option's fault, not the file's.
    std::fs::write(&path, model(64, 2).encode_to_vec()).unwrap();
    let hints = Hints {
        names: None,
        imgsz: Some(100),
    };
    let e = from_onnx(&path, &hints, false).unwrap_err().to_string();
    assert!(
        e.contains("--imgsz 100") && e.contains("multiple of 32"),
        "{e}"
    );
}

/// The fuzz target's seeds in `exporter/fuzz/seeds/onnx_inspect` are these models, byte for
/// byte; with `TRIDENT_WRITE_FUZZ_SEEDS=1` the test rewrites them after a change here.
#[test]
fn fuzz_seeds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/onnx_inspect");
    let write = std::env::var_os("TRIDENT_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
    let mut seeds = vec![("valid.onnx", model(64, 2))];
    let mut m = model(64, 2);
    initializer(&mut m).dims = vec![1 << 40];
    seeds.push(("initializer-2pow40.onnx", m));
    let mut m = model(64, 2);
    set_input_dims(&mut m, [-64, -64]);
    seeds.push(("negative-side.onnx", m));
    let mut m = model(64, 2);
    initializer(&mut m).raw_data.truncate(4);
    seeds.push(("short-initializer.onnx", m));
    for (name, m) in seeds {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, m.encode_to_vec()).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == m.encode_to_vec(),
            "{} is stale: run with TRIDENT_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}
