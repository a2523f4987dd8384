//! The export pipeline: a checkpoint (or a user's ONNX) → a linted detection graph with its
//! model card, verified before anything reaches the output folder.

use std::path::{Path, PathBuf};

use tract_onnx::pb::ModelProto;
use trident_core::checkpoint::CheckpointFile;
use trident_core::model_card::{self, CardDim, CardSource, ModelCard, TensorInfo};

use crate::error::{Error, Result};
use crate::fp16::{self, Fp16Report};
use crate::inspect::{DetectionGraph, GraphDim, Hints, inspect};
use crate::lint::{Finding, lint};
use crate::metadata;
use crate::onnx::detector::{GraphOptions, build};

/// How to export a checkpoint.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// 11–13 (TensorRT 8.2 parses up to 13).
    pub opset: i64,
    /// Input side (default: the size the checkpoint was trained at).
    pub imgsz: Option<u32>,
    /// A symbolic batch dimension instead of batch 1.
    pub dynamic_batch: bool,
    /// Write graphs the TensorRT 8.2 lint objects to (findings go into the card).
    pub allow_unsupported: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: 13,
            imgsz: None,
            dynamic_batch: false,
            allow_unsupported: false,
        }
    }
}

/// A detection graph in memory with its card; nothing is written until [`Exported::write`].
#[derive(Clone, Debug)]
pub struct Exported {
    /// File stem in the output folder: the variant, or the source's stem.
    pub name: String,
    pub model: ModelProto,
    pub bytes: Vec<u8>,
    pub graph: DetectionGraph,
    pub card: ModelCard,
}

pub use trident_core::digest::sha256_hex;

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Builds the ONNX graph of a trainer checkpoint (no libtorch: the spec and the safetensors).
pub fn from_checkpoint(path: &Path, opts: &ExportOptions) -> Result<Exported> {
    let ck = CheckpointFile::open(path)?;
    let imgsz = opts.imgsz.unwrap_or(ck.meta.spec.input_size);
    let batch = if opts.dynamic_batch { "batch" } else { "1" };
    let checkpoint_sha = ck.sha256();
    let props = metadata::for_checkpoint(&ck.meta, imgsz, batch, &checkpoint_sha);
    let graph_opts = GraphOptions {
        opset: opts.opset,
        imgsz,
        dynamic_batch: opts.dynamic_batch,
    };
    let model = build(&ck.meta.spec, &ck, &graph_opts, &props)?;
    let name = ck.meta.variant.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let source = CardSource {
        kind: "checkpoint".into(),
        file: file_name(path),
        sha256: checkpoint_sha,
    };
    let mut exported = finish(
        model,
        path,
        &name,
        &Hints::default(),
        source,
        opts.allow_unsupported,
    )?;
    exported.card.strides = ck.meta.spec.strides.clone();
    exported.card.variant = ck.meta.variant.clone();
    exported.card.conf_floor = Some(ck.meta.conf_floor);
    exported.card.metrics = ck.meta.metrics.clone();
    Ok(exported)
}

/// Takes a detection ONNX the user already has (an Ultralytics YOLOv8/YOLO11 export or ours):
/// checks its layout, reads names and size from its metadata or `hints`, lints it. The bytes
/// are kept as they are. The file is untrusted: it is read under
/// [`MAX_ONNX_BYTES`](crate::onnx::read::MAX_ONNX_BYTES) and every tensor in it checked (see
/// [`crate::onnx::read`]) before anything else looks at it.
pub fn from_onnx(path: &Path, hints: &Hints, allow_unsupported: bool) -> Result<Exported> {
    let bytes = crate::onnx::read::read_file(path)?;
    let model = crate::onnx::read::parse(&bytes, path)?;
    let source = CardSource {
        kind: "onnx".into(),
        file: file_name(path),
        sha256: sha256_hex(&bytes),
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut exported = finish(model, path, &name, hints, source, allow_unsupported)?;
    exported.bytes = bytes;
    exported.card.sha256 = sha256_hex(&exported.bytes);
    exported.card.bytes = exported.bytes.len() as u64;
    let meta = |k: &str| {
        exported
            .graph
            .metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    exported.card.variant = meta("variant");
    // A floor the manifest would refuse later (NaN, infinite, outside [0, 1]) is dropped here,
    // as an unparsable one is.
    exported.card.conf_floor = meta("conf_floor")
        .and_then(|v| v.parse::<f32>().ok())
        .filter(|f| (0.0..=1.0).contains(f));
    Ok(exported)
}

/// Inspects and lints `model`; builds the card.
fn finish(
    model: ModelProto,
    path: &Path,
    name: &str,
    hints: &Hints,
    source: CardSource,
    allow_unsupported: bool,
) -> Result<Exported> {
    let graph = inspect(&model, path, hints)?;
    let findings = lint(&model);
    if !findings.is_empty() {
        if !allow_unsupported {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                findings,
            });
        }
        for f in &findings {
            tracing::warn!("{}: TensorRT 8.2 lint (allowed): {f}", path.display());
        }
    }
    let bytes = prost::Message::encode_to_vec(&model);
    let card = card(name, &bytes, &graph, source, &findings);
    Ok(Exported {
        name: name.to_string(),
        model,
        bytes,
        graph,
        card,
    })
}

fn dims(shape: &[GraphDim]) -> Vec<CardDim> {
    shape
        .iter()
        .map(|d| match d {
            GraphDim::Fixed(v) => CardDim::Fixed(*v),
            GraphDim::Symbolic(s) => CardDim::Symbolic(s.clone()),
        })
        .collect()
}

fn card(
    name: &str,
    bytes: &[u8],
    graph: &DetectionGraph,
    source: CardSource,
    findings: &[Finding],
) -> ModelCard {
    ModelCard {
        format: model_card::FORMAT.into(),
        file: format!("{name}.onnx"),
        sha256: sha256_hex(bytes),
        bytes: bytes.len() as u64,
        opset: graph.opset,
        precision: "fp32".into(),
        input: TensorInfo {
            name: graph.input.clone(),
            shape: dims(&graph.input_shape),
            dtype: "float32".into(),
        },
        output: TensorInfo {
            name: graph.output.clone(),
            shape: dims(&graph.output_shape),
            dtype: "float32".into(),
        },
        names: graph.names.clone(),
        imgsz: graph.imgsz,
        strides: graph.strides.clone(),
        anchors: graph.anchors,
        variant: None,
        conf_floor: None,
        source,
        metrics: None,
        verification: None,
        lint: findings.iter().map(ToString::to_string).collect(),
        trident_version: env!("CARGO_PKG_VERSION").into(),
    }
}

impl Exported {
    /// The FP16-weights twin (`<name>.fp16.onnx`): float16 initializers, float32 IO.
    pub fn half(&self) -> Result<(Exported, Fp16Report)> {
        let (model, report) = fp16::convert(&self.model)?;
        let bytes = prost::Message::encode_to_vec(&model);
        let mut card = self.card.clone();
        card.file = format!("{}.fp16.onnx", self.name);
        card.sha256 = sha256_hex(&bytes);
        card.bytes = bytes.len() as u64;
        card.precision = "fp16-weights".into();
        card.verification = None;
        Ok((
            Exported {
                name: format!("{}.fp16", self.name),
                model,
                bytes,
                graph: self.graph.clone(),
                card,
            },
            report,
        ))
    }

    /// Writes `<out>/<name>.onnx` and its card, each through a temporary file and a rename.
    pub fn write(&self, out: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(out)
            .map_err(|e| trident_core::Error::io("creating the output folder", out, e))?;
        let onnx = out.join(&self.card.file);
        let card = ModelCard::path_for(&onnx);
        trident_core::fsutil::write_atomic(&onnx, &self.bytes)?;
        self.card.save(&card)?;
        Ok((onnx, card))
    }
}
