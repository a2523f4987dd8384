//! A TensorRT 8.2 compatibility lint for ONNX graphs (JetPack 4.6 on the Nano).
//!
//! Checks what the TensorRT 8.2 ONNX parser (onnx-tensorrt 8.2, `docs/operators.md`) accepts:
//! opset ≤ 13, the operators it implements, and its documented restrictions on the operators
//! detection graphs use. Every offending node is reported by name and op type, so an exported or
//! user-brought model fails on the host instead of on the device an hour into a field trip.

use std::collections::HashSet;

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};

/// Highest opset TensorRT 8.2's parser reads.
pub const MAX_OPSET: i64 = 13;

/// Operators the TensorRT 8.2 ONNX parser implements.
const SUPPORTED: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GRU",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "If",
    "ImageScaler",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "Loop",
    "LpNormalization",
    "LpPool",
    "LRN",
    "LSTM",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "NonMaxSuppression",
    "Not",
    "OneHot",
    "Or",
    "Pad",
    "ParametricSoftplus",
    "Pow",
    "PRelu",
    "QuantizeLinear",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "RNN",
    "ScaledTanh",
    "Scan",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

/// One problem, tied to a node (or to the model for opset/domain problems).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The node's name (`<model>` for model-level problems).
    pub node: String,
    pub op: String,
    pub problem: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.node, self.op, self.problem)
    }
}

/// Every TensorRT 8.2 incompatibility in `model`; empty when it should parse.
pub fn lint(model: &ModelProto) -> Vec<Finding> {
    let mut out = Vec::new();
    for o in &model.opset_import {
        if (o.domain.is_empty() || o.domain == "ai.onnx") && o.version > MAX_OPSET {
            out.push(Finding {
                node: "<model>".into(),
                op: "opset_import".into(),
                problem: format!(
                    "opset {} is above {MAX_OPSET}, the highest TensorRT 8.2 parses",
                    o.version
                ),
            });
        }
    }
    let Some(graph) = &model.graph else {
        out.push(Finding {
            node: "<model>".into(),
            op: "graph".into(),
            problem: "the model has no graph".into(),
        });
        return out;
    };
    // Tensors known at build time: initializers and Constant outputs.
    let mut constant: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for n in &graph.node {
        if n.op_type == "Constant" {
            constant.extend(n.output.iter().map(String::as_str));
        }
    }
    let supported: HashSet<&str> = SUPPORTED.iter().copied().collect();
    for (i, n) in graph.node.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("node #{i}")
        } else {
            n.name.clone()
        };
        let mut flag = |problem: String| {
            out.push(Finding {
                node: name.clone(),
                op: n.op_type.clone(),
                problem,
            })
        };
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            flag(format!(
                "custom domain `{}` needs a TensorRT plugin",
                n.domain
            ));
            continue;
        }
        if !supported.contains(n.op_type.as_str()) {
            flag("not implemented by the TensorRT 8.2 ONNX parser".into());
            continue;
        }
        let input_const = |k: usize| {
            n.input
                .get(k)
                .is_none_or(|s| s.is_empty() || constant.contains(s.as_str()))
        };
        match n.op_type.as_str() {
            "Resize" | "Upsample" => {
                let mode = string_attr(n, "mode").unwrap_or_else(|| "nearest".into());
                if mode != "nearest" && mode != "linear" {
                    flag(format!(
                        "mode `{mode}`: TensorRT 8.2 resizes with nearest or linear only"
                    ));
                }
                if let Some(t) = string_attr(n, "coordinate_transformation_mode")
                    && t == "tf_crop_and_resize"
                {
                    flag(
                        "coordinate_transformation_mode `tf_crop_and_resize` is not supported"
                            .into(),
                    );
                }
            }
            // Slice inputs: data, starts, ends, axes, steps (opset ≥ 10).
            "Slice" if n.input.len() > 3 && !input_const(3) => {
                flag("`axes` must be a constant (an initializer)".into());
            }
            "TopK" if !input_const(1) => {
                flag("`K` must be a constant (an initializer)".into());
            }
            "ConstantOfShape" => {
                let fp32 = n
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref())
                    .is_none_or(|t| t.data_type == DataType::Float as i32);
                if !fp32 {
                    flag("`value` must be float32 (TensorRT 8.2 supports FP32 only here)".into());
                }
            }
            _ => {}
        }
    }
    for t in &graph.initializer {
        if t.data_type == DataType::Double as i32 {
            out.push(Finding {
                node: t.name.clone(),
                op: "initializer".into(),
                problem: "float64 weights are not supported".into(),
            });
        }
    }
    out
}

fn string_attr(n: &NodeProto, name: &str) -> Option<String> {
    n.attribute
        .iter()
        .find(|a: &&AttributeProto| a.name == name && a.r#type == AttributeType::String as i32)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::builder::{Attr, Dim, GraphBuilder};
    use tract_onnx::pb::OperatorSetIdProto;

    /// A builder with an image input `x` and the two constant inputs a Resize takes.
    fn with_resize_inputs() -> (GraphBuilder, String, String) {
        let mut g = GraphBuilder::default();
        g.input(
            "x",
            &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)],
        );
        let roi = g.float("roi", &[0], &[]);
        let scales = g.float("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
        (g, roi, scales)
    }

    fn model(g: GraphBuilder, opset: i64) -> ModelProto {
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(g.graph),
            ..Default::default()
        }
    }

    #[test]
    fn crafted_graph_problems_are_each_named() {
        let (mut g, roi, scales) = with_resize_inputs();
        g.op(
            "up",
            "Resize",
            &["x", &roi, &scales],
            &[("mode", Attr::Str("cubic"))],
        );
        g.op("nz", "NonZero", &["x"], &[]);
        let starts = g.int64("starts", &[0]);
        let ends = g.int64("ends", &[4]);
        g.op("cut", "Slice", &["x", &starts, &ends, "dynamic_axes"], &[]);
        g.op("pick", "TopK", &["x", "dynamic_k"], &[]);
        let findings = lint(&model(g, 16));
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert_eq!(findings.len(), 5, "{text:#?}");
        assert!(text[0].contains("opset 16"));
        assert!(
            text.iter()
                .any(|t| t.starts_with("up/Resize_1 (Resize): mode `cubic`")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("nz/NonZero_2 (NonZero): not implemented"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("(Slice): `axes` must be a constant"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("(TopK): `K` must be a constant"))
        );
    }

    #[test]
    fn constant_inputs_and_supported_modes_pass() {
        let (mut g, roi, scales) = with_resize_inputs();
        let starts = g.int64("starts", &[0]);
        let ends = g.int64("ends", &[4]);
        let axes = g.int64("axes", &[2]);
        g.op("cut", "Slice", &["x", &starts, &ends, &axes], &[]);
        let k = g.int64("k", &[3]);
        g.op("pick", "TopK", &["x", &k], &[]);
        g.op(
            "up",
            "Resize",
            &["x", &roi, &scales],
            &[("mode", Attr::Str("nearest"))],
        );
        assert_eq!(lint(&model(g, 13)), vec![]);
    }
}
