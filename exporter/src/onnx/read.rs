//! Reading an ONNX file someone handed us (`trident export --onnx`): its bytes are untrusted.
//!
//! Every way out is an [`Error`] naming the file (and the field, where one is at fault), never a
//! panic, an allocation sized by what the file merely claims, or a number wrapped into a wrong
//! one: the file is capped before it is read, each protobuf integer that becomes a size goes
//! through a checked conversion, and each tensor's data must be exactly what its dims and type
//! say before anything downstream (the inspector, the FP16 twin, tract, ONNX Runtime) walks it.

use std::io::Read;
use std::path::Path;

use prost::Message;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, SparseTensorProto, TensorProto, ValueInfoProto,
    type_proto,
};

use crate::error::{Error, Result};

/// The largest ONNX file `trident export --onnx` reads: 512 MiB. The largest Ultralytics
/// detection export (YOLOv8x, 68 M parameters, FP32) is about 270 MB, and a Jetson Nano (4 GB
/// shared with the GPU) could not run anything near this; decoding holds the file and the decoded
/// model in memory at once, so the cap also bounds the host's memory.
pub const MAX_ONNX_BYTES: u64 = 512 << 20;

/// Reads `path` whole, refusing files over [`MAX_ONNX_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    read_capped(path, MAX_ONNX_BYTES)
}

/// Reads `path` whole, refusing more than `cap` bytes: by its size before reading (a sparse
/// 100 GB file costs nothing), and by the bytes actually read (a device such as `/dev/zero` or
/// a pipe reports size 0, a file may grow while we read).
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let io = |e| trident_core::Error::io("reading", path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > cap {
        return Err(Error::OnnxTooLarge {
            path: path.to_path_buf(),
            bytes: Some(size),
            cap,
        });
    }
    // Only a hint: a size that does not fit memory's address space starts from empty.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > cap) {
        return Err(Error::OnnxTooLarge {
            path: path.to_path_buf(),
            bytes: None,
            cap,
        });
    }
    Ok(bytes)
}

/// Decodes ONNX bytes (read from `path`, named in errors) and checks every tensor and declared
/// dimension in them (see [`check_model`]).
pub fn parse(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    // An empty message is a valid protobuf (every field absent): say what it really is.
    if bytes.is_empty() {
        return Err(Error::onnx(
            path,
            "the file is empty (0 bytes), not an ONNX model",
        ));
    }
    // prost bounds nesting (100 levels) and checks every length against the bytes left, so a
    // hostile length prefix is an error here, not an allocation.
    let model = ModelProto::decode(bytes).map_err(|e| {
        Error::onnx(
            path,
            format!("not an ONNX model ({e}); truncated or corrupt?"),
        )
    })?;
    check_model(&model, path)?;
    Ok(model)
}

/// Checks what later stages turn into sizes: every tensor (initializers, sparse initializers,
/// tensor attributes, in subgraphs too) holds exactly the data its dims and type call for, and
/// no declared dimension (graph inputs, outputs, value_info) is negative.
pub fn check_model(model: &ModelProto, path: &Path) -> Result<()> {
    match &model.graph {
        Some(g) => check_graph(g, path, "graph"),
        None => Ok(()),
    }
}

fn check_graph(g: &GraphProto, path: &Path, at: &str) -> Result<()> {
    for (i, t) in g.initializer.iter().enumerate() {
        check_tensor(t, path, &format!("{at}.initializer[{i}]"))?;
    }
    for (i, s) in g.sparse_initializer.iter().enumerate() {
        check_sparse(s, path, &format!("{at}.sparse_initializer[{i}]"))?;
    }
    for (list, infos) in [
        ("input", &g.input),
        ("output", &g.output),
        ("value_info", &g.value_info),
    ] {
        for (i, v) in infos.iter().enumerate() {
            check_value_info(v, path, &format!("{at}.{list}[{i}]"))?;
        }
    }
    for (i, n) in g.node.iter().enumerate() {
        for (k, a) in n.attribute.iter().enumerate() {
            check_attribute(
                a,
                path,
                &format!("{at}.node[{i}] `{}`.attribute[{k}]", n.name),
            )?;
        }
    }
    Ok(())
}

fn check_attribute(a: &AttributeProto, path: &Path, at: &str) -> Result<()> {
    let at = format!("{at} `{}`", a.name);
    if let Some(t) = &a.t {
        check_tensor(t, path, &format!("{at}.t"))?;
    }
    for (i, t) in a.tensors.iter().enumerate() {
        check_tensor(t, path, &format!("{at}.tensors[{i}]"))?;
    }
    if let Some(s) = &a.sparse_tensor {
        check_sparse(s, path, &format!("{at}.sparse_tensor"))?;
    }
    // Subgraphs (If, Loop, Scan): prost's nesting limit bounds this recursion.
    if let Some(g) = &a.g {
        check_graph(g, path, &format!("{at}.g"))?;
    }
    for (i, g) in a.graphs.iter().enumerate() {
        check_graph(g, path, &format!("{at}.graphs[{i}]"))?;
    }
    Ok(())
}

fn check_sparse(s: &SparseTensorProto, path: &Path, at: &str) -> Result<()> {
    element_count(&s.dims, path, &format!("{at}.dims"))?;
    if let Some(t) = &s.values {
        check_tensor(t, path, &format!("{at}.values"))?;
    }
    if let Some(t) = &s.indices {
        check_tensor(t, path, &format!("{at}.indices"))?;
    }
    Ok(())
}

fn check_value_info(v: &ValueInfoProto, path: &Path, at: &str) -> Result<()> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let Some(shape) = &t.shape else {
        return Ok(());
    };
    for (k, d) in shape.dim.iter().enumerate() {
        if let Some(dimension::Value::DimValue(n)) = d.value
            && n < 0
        {
            return Err(Error::onnx_field(
                path,
                format!("{at} `{}` dim[{k}]", v.name),
                format!("{n} is negative (a dimension of unknown size is a dim_param)"),
            ));
        }
    }
    Ok(())
}

/// The number of elements `dims` describe, each dimension non-negative and the product within
/// u64 (a dimension of 0 makes the tensor empty, whatever the others say).
pub fn element_count(dims: &[i64], path: &Path, field: &str) -> Result<u64> {
    let mut unsigned = Vec::with_capacity(dims.len());
    for (k, &d) in dims.iter().enumerate() {
        let d = u64::try_from(d).map_err(|_| {
            Error::onnx_field(path, format!("{field}[{k}]"), format!("{d} is negative"))
        })?;
        unsigned.push(d);
    }
    if unsigned.contains(&0) {
        return Ok(0);
    }
    unsigned.iter().try_fold(1u64, |n, &d| {
        n.checked_mul(d).ok_or_else(|| {
            Error::onnx_field(
                path,
                field,
                format!("{dims:?} is more elements than fit in 64 bits"),
            )
        })
    })
}

/// How a tensor of one `data_type` stores its elements: the bytes per element in `raw_data`, or
/// where its values go when `raw_data` is empty.
enum Layout {
    /// `raw_data` bytes per element, the typed field's length, values per element.
    Fixed {
        raw_bytes: u64,
        typed: usize,
        per_element: u64,
    },
    /// Strings: `string_data` only, one entry per element.
    Strings(usize),
}

fn layout(t: &TensorProto) -> Option<Layout> {
    let fixed = |raw_bytes, typed, per_element| Layout::Fixed {
        raw_bytes,
        typed,
        per_element,
    };
    Some(match DataType::from_i32(t.data_type)? {
        DataType::Undefined => return None,
        DataType::Float => fixed(4, t.float_data.len(), 1),
        DataType::Complex64 => fixed(8, t.float_data.len(), 2),
        // ONNX keeps these small types one per int32 entry.
        DataType::Uint8 | DataType::Int8 | DataType::Bool => fixed(1, t.int32_data.len(), 1),
        DataType::Uint16 | DataType::Int16 | DataType::Float16 | DataType::Bfloat16 => {
            fixed(2, t.int32_data.len(), 1)
        }
        DataType::Int32 => fixed(4, t.int32_data.len(), 1),
        DataType::Int64 => fixed(8, t.int64_data.len(), 1),
        DataType::Double => fixed(8, t.double_data.len(), 1),
        DataType::Complex128 => fixed(16, t.double_data.len(), 2),
        DataType::Uint32 => fixed(4, t.uint64_data.len(), 1),
        DataType::Uint64 => fixed(8, t.uint64_data.len(), 1),
        DataType::String => Layout::Strings(t.string_data.len()),
    })
}

/// A tensor stored in the file holds exactly what its dims and type call for.
pub fn check_tensor(t: &TensorProto, path: &Path, at: &str) -> Result<()> {
    let at = format!("{at} `{}`", t.name);
    let field = |f: &str| format!("{at} {f}");
    let elements = element_count(&t.dims, path, &field("dims"))?;
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(Error::onnx_field(
            path,
            field("external_data"),
            "the data lives in another file; trident imports self-contained models only \
             (save the model without external data)",
        ));
    }
    if t.segment.is_some() {
        return Err(Error::onnx_field(
            path,
            field("segment"),
            "segmented tensors are not supported",
        ));
    }
    let Some(layout) = layout(t) else {
        return Err(Error::onnx_field(
            path,
            field("data_type"),
            format!("{} is not a tensor element type", t.data_type),
        ));
    };
    let short = |what: String| {
        Error::onnx_field(
            path,
            field("data"),
            format!("dims {:?} call for {what}", t.dims),
        )
    };
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    match layout {
        Layout::Strings(n) => {
            if !t.raw_data.is_empty() {
                return Err(Error::onnx_field(
                    path,
                    field("raw_data"),
                    "a string tensor cannot use raw_data",
                ));
            }
            if count(n) != elements {
                return Err(short(format!("{elements} string(s); the tensor holds {n}")));
            }
        }
        Layout::Fixed { raw_bytes, .. } if !t.raw_data.is_empty() => {
            let want = elements.checked_mul(raw_bytes).ok_or_else(|| {
                short(format!(
                    "{elements} elements, more bytes than fit in 64 bits"
                ))
            })?;
            let have = t.raw_data.len();
            if count(have) != want {
                return Err(short(format!(
                    "{want} bytes of raw_data ({elements} × {raw_bytes}); the tensor holds {have}"
                )));
            }
        }
        Layout::Fixed {
            typed, per_element, ..
        } => {
            let want = elements.checked_mul(per_element).ok_or_else(|| {
                short(format!(
                    "{elements} elements, more values than fit in 64 bits"
                ))
            })?;
            if count(typed) != want {
                return Err(short(format!("{want} value(s); the tensor holds {typed}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
