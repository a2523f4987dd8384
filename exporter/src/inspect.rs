//! Reading a detection ONNX — ours or a user's Ultralytics YOLOv8/YOLO11 export — and checking it
//! has the layout the runtime decodes: one `[batch, 3, H, W]` float input and one
//! `[batch, 4 + nc, N]` output (cx, cy, w, h in input pixels, then class scores, no objectness).

use std::path::Path;

use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{ModelProto, ValueInfoProto};

use crate::error::{Error, Result};

/// A dimension as the graph declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphDim {
    Fixed(i64),
    Symbolic(String),
}

impl std::fmt::Display for GraphDim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GraphDim::Fixed(v) => write!(f, "{v}"),
            GraphDim::Symbolic(s) => write!(f, "{s}"),
        }
    }
}

/// What the runtime needs to know about a detection graph.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionGraph {
    pub opset: i64,
    pub input: String,
    pub input_shape: Vec<GraphDim>,
    pub output: String,
    pub output_shape: Vec<GraphDim>,
    /// Square input side.
    pub imgsz: u32,
    pub names: Vec<String>,
    pub strides: Vec<u32>,
    /// Anchor points N.
    pub anchors: usize,
    pub metadata: Vec<(String, String)>,
}

/// Overrides for graphs whose metadata lacks names or sizes.
#[derive(Clone, Debug, Default)]
pub struct Hints {
    pub names: Option<Vec<String>>,
    pub imgsz: Option<u32>,
}

const LAYOUT: &str = "expected an Ultralytics YOLOv8/YOLO11 detection export: input `images` [batch, 3, H, W] \
float32 RGB 0–1, output `output0` [batch, 4 + classes, anchors] with cx, cy, w, h in input pixels then \
one score per class (no objectness row)";

/// The largest square input side accepted (a multiple of 32, the largest stride). Ultralytics
/// exports go to 1280 or so; the bound keeps every size derived from the side (anchors, the
/// verification frames of 3 × side² floats) small, whatever a file's metadata claims.
pub const MAX_IMGSZ: u32 = 4096;

pub fn inspect(model: &ModelProto, path: &Path, hints: &Hints) -> Result<DetectionGraph> {
    let bad = |m: String| Error::onnx(path, format!("{m}; {LAYOUT}"));
    let graph = model.graph.as_ref().ok_or_else(|| bad("no graph".into()))?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<(usize, &ValueInfoProto)> = graph
        .input
        .iter()
        .enumerate()
        .filter(|(_, i)| !initializers.contains(i.name.as_str()))
        .collect();
    let ([(input_index, input)], [output]) = (inputs.as_slice(), graph.output.as_slice()) else {
        return Err(bad(format!(
            "the graph has {} input(s) and {} output(s), not one of each",
            inputs.len(),
            graph.output.len()
        )));
    };
    let input_field = format!("graph.input[{input_index}] `{}`", input.name);
    let output_field = format!("graph.output[0] `{}`", output.name);
    let input_shape =
        shape(input).ok_or_else(|| bad(format!("input `{}` is not a float tensor", input.name)))?;
    let output_shape = shape(output)
        .ok_or_else(|| bad(format!("output `{}` is not a float tensor", output.name)))?;
    check_fixed_dims(&input_shape, path, &input_field)?;
    check_fixed_dims(&output_shape, path, &output_field)?;
    let shown = |s: &[GraphDim]| {
        format!(
            "[{}]",
            s.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let [_, channels, height, width] = input_shape.as_slice() else {
        return Err(bad(format!(
            "input `{}` has shape {}",
            input.name,
            shown(&input_shape)
        )));
    };
    if *channels != GraphDim::Fixed(3) {
        return Err(bad(format!(
            "input `{}` has shape {}",
            input.name,
            shown(&input_shape)
        )));
    }
    let [_, out_rows, out_cols] = output_shape.as_slice() else {
        return Err(bad(format!(
            "output `{}` has shape {}",
            output.name,
            shown(&output_shape)
        )));
    };
    let metadata: Vec<(String, String)> = model
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    let meta = |k: &str| {
        metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };

    let imgsz = match (hints.imgsz, height, width) {
        (Some(s), ..) => checked_side(s).map_err(|m| Error::Option(format!("--imgsz {s} {m}")))?,
        (None, GraphDim::Fixed(h), GraphDim::Fixed(w)) if h == w => u32::try_from(*h)
            .map_err(|_| "is not a side".to_string())
            .and_then(checked_side)
            .map_err(|m| {
                Error::onnx_field(path, format!("{input_field} dim[2]"), format!("{h} {m}"))
            })?,
        (None, GraphDim::Fixed(h), GraphDim::Fixed(w)) => {
            return Err(bad(format!(
                "input is {h}×{w}; the runtime letterboxes to a square input"
            )));
        }
        _ => match meta("imgsz").and_then(parse_imgsz) {
            Some(s) => checked_side(s).map_err(|m| {
                Error::onnx_field(path, "metadata_props `imgsz`", format!("{s} {m}"))
            })?,
            None => {
                return Err(bad(
                    "the input size is symbolic and the metadata has no `imgsz`; pass --imgsz"
                        .into(),
                ));
            }
        },
    };
    let names = match &hints.names {
        Some(n) => n.clone(),
        None => match meta("names") {
            Some(text) => parse_names(text).ok_or_else(|| {
                Error::onnx(
                    path,
                    format!("metadata `names` is not a {{id: 'name'}} map: {text}"),
                )
            })?,
            None => return Err(bad("the metadata has no `names`; pass --names a,b,c".into())),
        },
    };
    let strides = vec![8, 16, 32];
    // imgsz ≤ MAX_IMGSZ keeps this far from overflowing; checked all the same.
    let anchors = strides
        .iter()
        .try_fold(0u32, |n, s| {
            let cells = imgsz.checked_div(*s)?;
            n.checked_add(cells.checked_mul(cells)?)
        })
        .ok_or_else(|| Error::Option(format!("input side {imgsz}: too many anchors")))?;
    let rows = i64::try_from(names.len())
        .ok()
        .and_then(|n| n.checked_add(4))
        .ok_or_else(|| Error::Option(format!("{} class names are too many", names.len())))?;
    let anchors_dim = i64::from(anchors);
    match (out_rows, out_cols) {
        (GraphDim::Fixed(r), GraphDim::Fixed(n)) if *r == rows && *n == anchors_dim => {}
        (GraphDim::Fixed(n), GraphDim::Fixed(r)) if *r == rows && *n == anchors_dim => {
            return Err(bad(format!(
                "output `{}` is {} — transposed ([batch, anchors, 4 + classes]); export without transposing",
                output.name,
                shown(&output_shape)
            )));
        }
        (GraphDim::Fixed(r), _) if Some(*r) == rows.checked_add(1) => {
            return Err(bad(format!(
                "output `{}` has {r} rows for {} classes: an objectness row (YOLOv5-style) is not supported",
                output.name,
                names.len()
            )));
        }
        _ => {
            return Err(bad(format!(
                "output `{}` has shape {}, but {} classes at {imgsz}×{imgsz} need [batch, {rows}, {anchors}]",
                output.name,
                shown(&output_shape),
                names.len()
            )));
        }
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    Ok(DetectionGraph {
        opset,
        input: input.name.clone(),
        input_shape,
        output: output.name.clone(),
        output_shape,
        imgsz,
        names,
        strides,
        anchors: usize::try_from(anchors)
            .map_err(|_| Error::Option(format!("{anchors} anchors do not fit in memory")))?,
        metadata,
    })
}

/// Every fixed dimension of a graph input or output is at least 1 and fits in a u32: the card,
/// the package manifest and the runtime turn them into sizes.
fn check_fixed_dims(shape: &[GraphDim], path: &Path, field: &str) -> Result<()> {
    for (k, d) in shape.iter().enumerate() {
        if let GraphDim::Fixed(v) = d
            && !(1..=i64::from(u32::MAX)).contains(v)
        {
            let why = if *v < 1 {
                format!(
                    "{v}: a fixed dimension must be at least 1 (one of unknown size is a dim_param)"
                )
            } else {
                format!("{v} is larger than any detection model's input or output")
            };
            return Err(Error::onnx_field(path, format!("{field} dim[{k}]"), why));
        }
    }
    Ok(())
}

/// `side` is a usable square input side, or why not.
fn checked_side(side: u32) -> std::result::Result<u32, String> {
    if (32..=MAX_IMGSZ).contains(&side) && side.is_multiple_of(32) {
        Ok(side)
    } else {
        Err(format!(
            "is not a multiple of 32 (the largest stride) from 32 to {MAX_IMGSZ}"
        ))
    }
}

fn shape(v: &ValueInfoProto) -> Option<Vec<GraphDim>> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    // 1 = FLOAT.
    if t.elem_type != 1 {
        return None;
    }
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(v)) => GraphDim::Fixed(*v),
                Some(dimension::Value::DimParam(p)) => GraphDim::Symbolic(p.clone()),
                None => GraphDim::Symbolic("?".into()),
            })
            .collect(),
    )
}

/// `[640, 640]` or `640` → 640 (square only).
fn parse_imgsz(text: &str) -> Option<u32> {
    let nums: Vec<u32> = text
        .trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')')
        .split(',')
        .map(|s| s.trim().parse().ok())
        .collect::<Option<_>>()?;
    match nums.as_slice() {
        [s] => Some(*s),
        [h, w] if h == w => Some(*h),
        _ => None,
    }
}

/// Parses Ultralytics' `names` metadata, a Python dict literal `{0: 'person', 1: "o'hare"}`,
/// into names by id (ids must be 0..n).
pub fn parse_names(text: &str) -> Option<Vec<String>> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut chars = body.chars().peekable();
    let mut out: Vec<(usize, String)> = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut id = String::new();
        while let Some(c) = chars.peek().copied().filter(char::is_ascii_digit) {
            id.push(c);
            chars.next();
        }
        let id: usize = id.parse().ok()?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next()? != ':' {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let quote = chars.next().filter(|c| *c == '\'' || *c == '"')?;
        let mut name = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => name.push('\n'),
                    't' => name.push('\t'),
                    c => name.push(c),
                },
                c if c == quote => break,
                c => name.push(c),
            }
        }
        out.push((id, name));
    }
    out.sort_by_key(|(id, _)| *id);
    out.iter()
        .enumerate()
        .all(|(i, (id, _))| i == *id)
        .then(|| out.into_iter().map(|(_, n)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::names_dict;

    #[test]
    fn ultralytics_names_parse_and_round_trip() {
        assert_eq!(
            parse_names("{0: 'person', 1: 'bicycle', 2: \"o'hare\"}").unwrap(),
            vec!["person", "bicycle", "o'hare"]
        );
        let names: Vec<String> = vec!["a b".into(), "it's".into(), "back\\slash".into()];
        assert_eq!(parse_names(&names_dict(&names)).unwrap(), names);
        assert_eq!(parse_names("{1: 'gap'}"), None);
        assert_eq!(parse_names("['list']"), None);
        assert_eq!(parse_imgsz("[640, 640]"), Some(640));
        assert_eq!(parse_imgsz("320"), Some(320));
        assert_eq!(parse_imgsz("[640, 480]"), None);
    }

    use crate::onnx::detector::{GraphOptions, WeightSource, build};
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use trident_core::model_spec::ModelSpec;

    /// Weights of any requested shape (BatchNorm variances positive), no checkpoint needed.
    struct Synthetic;
    impl WeightSource for Synthetic {
        fn get(&self, name: &str, shape: &[usize]) -> crate::Result<Vec<f32>> {
            let n: usize = shape.iter().product();
            let v = if name.ends_with("running_var") {
                1.0
            } else {
                0.01
            };
            Ok(vec![v; n])
        }
    }

    fn exported(nc: usize, side: u32, metadata: bool) -> ModelProto {
        let names: Vec<String> = (0..nc).map(|i| format!("species {i}")).collect();
        let spec = ModelSpec::preset("tiny", names.clone(), side).unwrap();
        let meta = if metadata {
            vec![
                ("names".to_string(), names_dict(&names)),
                ("imgsz".to_string(), format!("[{side}, {side}]")),
            ]
        } else {
            vec![]
        };
        let opts = GraphOptions {
            opset: 13,
            imgsz: side,
            dynamic_batch: true,
        };
        build(&spec, &Synthetic, &opts, &meta).unwrap()
    }

    fn err(model: &ModelProto, hints: &Hints) -> String {
        inspect(model, Path::new("user.onnx"), hints)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn our_export_reads_back_with_names_size_and_layout() {
        let g = inspect(
            &exported(4, 160, true),
            Path::new("m.onnx"),
            &Hints::default(),
        )
        .unwrap();
        assert_eq!((g.input.as_str(), g.output.as_str()), ("images", "output0"));
        assert_eq!(g.names.len(), 4);
        assert_eq!(g.names[3], "species 3");
        assert_eq!((g.imgsz, g.anchors, g.opset), (160, 400 + 100 + 25, 13));
        assert_eq!(g.input_shape[0], GraphDim::Symbolic("batch".into()));
    }

    #[test]
    fn missing_metadata_wrong_class_count_and_wrong_layouts_are_explained() {
        let bare = exported(3, 128, false);
        let e = err(&bare, &Hints::default());
        assert!(e.contains("user.onnx") && e.contains("--names"), "{e}");
        let hints = Hints {
            names: Some(vec!["a".into(), "b".into(), "c".into()]),
            imgsz: None,
        };
        assert!(inspect(&bare, Path::new("u.onnx"), &hints).is_ok());
        let wrong = Hints {
            names: Some(vec!["a".into()]),
            imgsz: None,
        };
        let e = err(&bare, &wrong);
        assert!(
            e.contains("[batch, 5, 336]") && e.contains("output0"),
            "{e}"
        );

        // The same graph declaring a transposed output.
        let mut transposed = exported(3, 128, true);
        let out = &mut transposed.graph.as_mut().unwrap().output[0];
        if let Some(type_proto::Value::TensorType(t)) = out.r#type.as_mut().unwrap().value.as_mut()
        {
            let dims = &mut t.shape.as_mut().unwrap().dim;
            dims[1].value = Some(Value::DimValue(336));
            dims[2].value = Some(Value::DimValue(7));
        }
        assert!(err(&transposed, &Hints::default()).contains("transposed"));

        // A classifier is not a detector.
        let mut classifier = exported(3, 128, true);
        let out = &mut classifier.graph.as_mut().unwrap().output[0];
        if let Some(type_proto::Value::TensorType(t)) = out.r#type.as_mut().unwrap().value.as_mut()
        {
            t.shape.as_mut().unwrap().dim.truncate(2);
        }
        let e = err(&classifier, &Hints::default());
        assert!(
            e.contains("expected an Ultralytics YOLOv8/YOLO11 detection export"),
            "{e}"
        );
    }
}
