//! FP16-weights ONNX: every float32 initializer stored as float16 and cast back to float32 where
//! the graph reads it. IO and arithmetic stay float32, so any runtime runs it; the file is half
//! the size, and evaluating it on CPU measures what rounding the weights to half precision — the
//! first thing a TensorRT FP16 engine does — costs in mAP.

use half::f16;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto, attribute_proto};

use crate::error::{Error, Result};

/// What the conversion did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fp16Report {
    pub tensors: usize,
    pub values: usize,
    /// Values beyond ±65504, clamped to the largest finite half.
    pub clamped: usize,
    /// Non-zero values that became zero (below half's subnormal range).
    pub flushed: usize,
}

/// Converts `model`'s float32 initializers to float16 with a Cast back to float32 for each.
pub fn convert(model: &ModelProto) -> Result<(ModelProto, Fp16Report)> {
    let mut out = model.clone();
    let graph = out
        .graph
        .as_mut()
        .ok_or_else(|| Error::Option("model has no graph".into()))?;
    let mut report = Fp16Report::default();
    let mut casts = Vec::new();
    for init in &mut graph.initializer {
        if init.data_type != DataType::Float as i32 {
            continue;
        }
        let values = float_values(init)?;
        let mut raw = Vec::with_capacity(values.len() * 2);
        for v in values {
            let mut h = f16::from_f32(v);
            if h.is_infinite() && v.is_finite() {
                report.clamped += 1;
                h = if v > 0.0 { f16::MAX } else { f16::MIN };
            } else if h == f16::ZERO && v != 0.0 {
                report.flushed += 1;
            }
            raw.extend_from_slice(&h.to_le_bytes());
            report.values += 1;
        }
        let original = std::mem::take(&mut init.name);
        let half_name = format!("{original}_fp16");
        *init = TensorProto {
            name: half_name.clone(),
            dims: init.dims.clone(),
            data_type: DataType::Float16 as i32,
            raw_data: raw,
            ..Default::default()
        };
        casts.push(NodeProto {
            name: format!("{original}_cast"),
            op_type: "Cast".into(),
            input: vec![half_name],
            output: vec![original],
            attribute: vec![AttributeProto {
                name: "to".into(),
                r#type: attribute_proto::AttributeType::Int as i32,
                i: DataType::Float as i64,
                ..Default::default()
            }],
            ..Default::default()
        });
        report.tensors += 1;
    }
    // Casts first: nodes stay in topological order.
    casts.append(&mut graph.node);
    graph.node = casts;
    Ok((out, report))
}

fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return Err(Error::Option(format!(
                "initializer `{}`: {} raw bytes is not a whole number of float32 values",
                t.name,
                t.raw_data.len()
            )));
        }
        let (values, _) = t.raw_data.as_chunks::<4>();
        return Ok(values.iter().map(|b| f32::from_le_bytes(*b)).collect());
    }
    if !t.external_data.is_empty() {
        return Err(Error::Option(format!(
            "initializer `{}` uses external data; trident converts self-contained models only",
            t.name
        )));
    }
    Ok(t.float_data.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::builder::{Dim, GraphBuilder};

    #[test]
    fn weights_become_half_with_a_cast_before_their_first_use() {
        let mut b = GraphBuilder::default();
        b.input("x", &[Dim::Fixed(3)]);
        let w = b.float("w", &[3], &[1.0, 1e-9, 1e6]);
        b.op("add", "Add", &["x", &w], &[]);
        b.rename_last_output("y");
        b.output("y", &[Dim::Fixed(3)]);
        let model = ModelProto {
            graph: Some(b.graph),
            ..Default::default()
        };
        let (half, report) = convert(&model).unwrap();
        let g = half.graph.unwrap();
        assert_eq!(g.node[0].op_type, "Cast");
        assert_eq!(g.node[0].output, ["w"]);
        assert_eq!(g.node[1].op_type, "Add");
        assert_eq!(g.initializer[0].data_type, DataType::Float16 as i32);
        assert_eq!(g.initializer[0].raw_data.len(), 6);
        assert_eq!(
            report,
            Fp16Report {
                tensors: 1,
                values: 3,
                clamped: 1,
                flushed: 1
            }
        );
        let back = f16::from_le_bytes([g.initializer[0].raw_data[4], g.initializer[0].raw_data[5]]);
        assert_eq!(back, f16::MAX);
    }
}
