//! A small, typed layer over the ONNX protobuf messages: nodes with unique names, float and int64
//! initializers, graph inputs and outputs.

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// One attribute value.
pub enum Attr<'a> {
    Int(i64),
    Ints(&'a [i64]),
    Float(f32),
    Str(&'a str),
}

/// Collects a graph's nodes and initializers.
#[derive(Default)]
pub struct GraphBuilder {
    pub graph: GraphProto,
    counter: usize,
}

impl GraphBuilder {
    /// Adds a node `op` with `inputs`; returns the names of its `outputs` fresh tensors, each named
    /// `<prefix>/<op>_<n>` so a lint report points at a recognisable place in the model.
    pub fn node(
        &mut self,
        prefix: &str,
        op: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: &[(&str, Attr<'_>)],
    ) -> Vec<String> {
        self.counter += 1;
        let name = format!("{prefix}/{op}_{}", self.counter);
        let outs: Vec<String> = (0..outputs)
            .map(|i| {
                if outputs == 1 {
                    format!("{name}:out")
                } else {
                    format!("{name}:out{i}")
                }
            })
            .collect();
        self.graph.node.push(NodeProto {
            name,
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            attribute: attrs.iter().map(|(k, v)| attribute(k, v)).collect(),
            ..Default::default()
        });
        outs
    }

    /// A single-output node.
    pub fn op(
        &mut self,
        prefix: &str,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr<'_>)],
    ) -> String {
        self.node(prefix, op, inputs, 1, attrs).remove(0)
    }

    /// Renames the output of the last node (to give graph outputs their public names).
    pub fn rename_last_output(&mut self, name: &str) {
        if let Some(n) = self.graph.node.last_mut() {
            n.output[0] = name.to_string();
        }
    }

    pub fn float(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        debug_assert_eq!(
            dims.iter().product::<i64>() as usize,
            values.len(),
            "{name}"
        );
        self.graph.initializer.push(TensorProto {
            name: name.to_string(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    pub fn int64(&mut self, name: &str, values: &[i64]) -> String {
        self.graph.initializer.push(TensorProto {
            name: name.to_string(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    pub fn input(&mut self, name: &str, dims: &[Dim]) {
        self.graph.input.push(value_info(name, dims));
    }

    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.graph.output.push(value_info(name, dims));
    }
}

/// A dimension of a graph input or output.
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Named(p) => dimension::Value::DimParam(p.to_string()),
            }),
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: DataType::Float as i32,
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(tensor)),
        }),
        doc_string: String::new(),
    }
}

fn attribute(name: &str, value: &Attr<'_>) -> AttributeProto {
    let base = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(v) => AttributeProto {
            i: *v,
            r#type: AttributeType::Int as i32,
            ..base
        },
        Attr::Ints(v) => AttributeProto {
            ints: v.to_vec(),
            r#type: AttributeType::Ints as i32,
            ..base
        },
        Attr::Float(v) => AttributeProto {
            f: *v,
            r#type: AttributeType::Float as i32,
            ..base
        },
        Attr::Str(v) => AttributeProto {
            s: v.as_bytes().to_vec(),
            r#type: AttributeType::String as i32,
            ..base
        },
    }
}
