//! The YOLOv8 detection graph in ONNX, built from the model spec and checkpoint weights.
//!
//! Walks [`ModelSpec::layers`] — the list the trainer builds its tch graph from — so the two
//! cannot drift. BatchNorm is folded into the preceding convolution; SiLU is `x · sigmoid(x)`
//! (opset 13 has no SiLU and TensorRT 8.2 fuses the pair). The head ends in the Ultralytics YOLOv8
//! export layout: `output0` `[batch, 4 + nc, N]`, cx, cy, w, h in input pixels, then per-class
//! sigmoid scores. Only operators TensorRT 8.2 parses are used, in forms valid from opset 11 to
//! 13 (the DFL softmax runs over the last axis, where opset 11's 2-D coercion is exact).

use tract_onnx::pb::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use trident_core::model_spec::{LayerKind, ModelSpec};

use super::builder::{Attr, Dim, GraphBuilder};
use crate::error::{Error, Result};

/// BatchNorm epsilon the trainer uses (Ultralytics' 1e-3).
pub const BN_EPS: f64 = 1e-3;

/// Where weights come from: a checkpoint, or anything else that yields float32 tensors by name.
pub trait WeightSource {
    /// The tensor `name`, which must have `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

impl WeightSource for trident_core::checkpoint::CheckpointFile {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.tensor_f32(name, Some(shape))?.1)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GraphOptions {
    /// ONNX opset, 11–13.
    pub opset: i64,
    /// Square input side; a multiple of 32.
    pub imgsz: u32,
    /// A symbolic batch dimension instead of batch 1.
    pub dynamic_batch: bool,
}

pub const INPUT: &str = "images";
pub const OUTPUT: &str = "output0";

/// Builds the graph. `metadata` goes to `metadata_props` as given.
pub fn build(
    spec: &ModelSpec,
    weights: &dyn WeightSource,
    opts: &GraphOptions,
    metadata: &[(String, String)],
) -> Result<ModelProto> {
    if !(11..=13).contains(&opts.opset) {
        return Err(Error::Option(format!(
            "--opset {}: TensorRT 8.2 parses opsets up to 13; trident writes 11, 12 or 13",
            opts.opset
        )));
    }
    if opts.imgsz < 64 || !opts.imgsz.is_multiple_of(32) {
        return Err(Error::Option(format!(
            "--imgsz {}: expected a multiple of 32 (the largest stride) of at least 64",
            opts.imgsz
        )));
    }
    let mut g = Emitter {
        b: GraphBuilder::default(),
        w: weights,
        opset: opts.opset,
    };
    let batch = if opts.dynamic_batch {
        Dim::Named("batch")
    } else {
        Dim::Fixed(1)
    };
    let side = i64::from(opts.imgsz);
    g.b.input(
        INPUT,
        &[
            batch.clone(),
            Dim::Fixed(3),
            Dim::Fixed(side),
            Dim::Fixed(side),
        ],
    );

    let mut outputs: Vec<String> = Vec::new();
    for layer in spec.layers() {
        let p = format!("model.{}", layer.index);
        let input = |i: usize| -> String {
            if layer.index == 0 {
                INPUT.to_string()
            } else {
                outputs[layer.from[i]].clone()
            }
        };
        let y = match &layer.kind {
            LayerKind::Conv {
                c_in,
                c_out,
                kernel,
                stride,
            } => g.conv_bn_silu(&p, &input(0), *c_in, *c_out, *kernel, *stride)?,
            LayerKind::C2f {
                c_in,
                c_out,
                n,
                shortcut,
            } => g.c2f(&p, &input(0), *c_in, *c_out, *n, *shortcut)?,
            LayerKind::Sppf { c_in, c_out, pool } => g.sppf(&p, &input(0), *c_in, *c_out, *pool)?,
            LayerKind::Upsample => g.upsample(&p, &input(0)),
            LayerKind::Concat { .. } => {
                let ins: Vec<String> = layer.from.iter().map(|&i| outputs[i].clone()).collect();
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                g.b.op(&p, "Concat", &refs, &[("axis", Attr::Int(1))])
            }
            LayerKind::Detect { c_in } => {
                let feats: Vec<String> = layer.from.iter().map(|&i| outputs[i].clone()).collect();
                g.detect(&p, spec, &feats, c_in, opts.imgsz)?
            }
        };
        outputs.push(y);
    }
    let n = spec.num_anchors(opts.imgsz) as i64;
    let rows = 4 + spec.num_classes() as i64;
    g.b.output(OUTPUT, &[batch, Dim::Fixed(rows), Dim::Fixed(n)]);

    g.b.graph.name = "trident-yolov8".into();
    Ok(ModelProto {
        // IR 7 is what opset 13 shipped with (ONNX 1.8); TensorRT 8.2 reads it.
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        producer_name: "trident".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(g.b.graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    })
}

struct Emitter<'a> {
    b: GraphBuilder,
    w: &'a dyn WeightSource,
    opset: i64,
}

impl Emitter<'_> {
    /// Conv (BatchNorm folded in) → Sigmoid → Mul.
    fn conv_bn_silu(
        &mut self,
        p: &str,
        x: &str,
        c_in: u32,
        c_out: u32,
        k: u32,
        s: u32,
    ) -> Result<String> {
        let (ci, co, kk) = (c_in as usize, c_out as usize, k as usize);
        let mut w = self.w.get(&format!("{p}.conv.weight"), &[co, ci, kk, kk])?;
        let gamma = self.w.get(&format!("{p}.bn.weight"), &[co])?;
        let beta = self.w.get(&format!("{p}.bn.bias"), &[co])?;
        let mean = self.w.get(&format!("{p}.bn.running_mean"), &[co])?;
        let var = self.w.get(&format!("{p}.bn.running_var"), &[co])?;
        let per_out = ci * kk * kk;
        let mut bias = vec![0f32; co];
        for o in 0..co {
            let scale = f64::from(gamma[o]) / (f64::from(var[o]) + BN_EPS).sqrt();
            for v in &mut w[o * per_out..(o + 1) * per_out] {
                *v = (f64::from(*v) * scale) as f32;
            }
            bias[o] = (f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32;
        }
        let (cik, cok, kki) = (c_in as i64, c_out as i64, k as i64);
        let wn = self
            .b
            .float(&format!("{p}.conv.weight"), &[cok, cik, kki, kki], &w);
        let bn = self.b.float(&format!("{p}.conv.bias"), &[cok], &bias);
        let pad = kki / 2;
        let y = self.b.op(
            p,
            "Conv",
            &[x, &wn, &bn],
            &[
                ("kernel_shape", Attr::Ints(&[kki, kki])),
                ("strides", Attr::Ints(&[i64::from(s), i64::from(s)])),
                ("pads", Attr::Ints(&[pad, pad, pad, pad])),
                ("dilations", Attr::Ints(&[1, 1])),
                ("group", Attr::Int(1)),
            ],
        );
        let sig = self.b.op(p, "Sigmoid", &[&y], &[]);
        Ok(self.b.op(p, "Mul", &[&y, &sig], &[]))
    }

    /// A plain Conv with bias (the head's last 1×1 layers).
    fn conv_bias(&mut self, p: &str, x: &str, c_in: u32, c_out: u32) -> Result<String> {
        let (ci, co) = (c_in as usize, c_out as usize);
        let w = self.w.get(&format!("{p}.weight"), &[co, ci, 1, 1])?;
        let bias = self.w.get(&format!("{p}.bias"), &[co])?;
        let wn = self
            .b
            .float(&format!("{p}.weight"), &[co as i64, ci as i64, 1, 1], &w);
        let bn = self.b.float(&format!("{p}.bias"), &[co as i64], &bias);
        Ok(self.b.op(
            p,
            "Conv",
            &[x, &wn, &bn],
            &[("kernel_shape", Attr::Ints(&[1, 1]))],
        ))
    }

    /// Split along `axis` into parts of the given sizes (attribute before opset 13, input after).
    fn split(&mut self, p: &str, x: &str, axis: i64, sizes: &[i64]) -> Vec<String> {
        if self.opset >= 13 {
            let name = format!(
                "{p}.split_{}",
                sizes
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join("_")
            );
            let s = if self.b.graph.initializer.iter().any(|t| t.name == name) {
                name
            } else {
                self.b.int64(&name, sizes)
            };
            self.b.node(
                p,
                "Split",
                &[x, &s],
                sizes.len(),
                &[("axis", Attr::Int(axis))],
            )
        } else {
            self.b.node(
                p,
                "Split",
                &[x],
                sizes.len(),
                &[("axis", Attr::Int(axis)), ("split", Attr::Ints(sizes))],
            )
        }
    }

    fn c2f(
        &mut self,
        p: &str,
        x: &str,
        c_in: u32,
        c_out: u32,
        n: u32,
        shortcut: bool,
    ) -> Result<String> {
        let h = c_out / 2;
        let y = self.conv_bn_silu(&format!("{p}.cv1"), x, c_in, 2 * h, 1, 1)?;
        let mut parts = self.split(p, &y, 1, &[i64::from(h), i64::from(h)]);
        for i in 0..n {
            let m = format!("{p}.m.{i}");
            let last = parts.last().expect("two halves").clone();
            let a = self.conv_bn_silu(&format!("{m}.cv1"), &last, h, h, 3, 1)?;
            let b = self.conv_bn_silu(&format!("{m}.cv2"), &a, h, h, 3, 1)?;
            parts.push(if shortcut {
                self.b.op(&m, "Add", &[&last, &b], &[])
            } else {
                b
            });
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let cat = self.b.op(p, "Concat", &refs, &[("axis", Attr::Int(1))]);
        self.conv_bn_silu(&format!("{p}.cv2"), &cat, (2 + n) * h, c_out, 1, 1)
    }

    fn sppf(&mut self, p: &str, x: &str, c_in: u32, c_out: u32, pool: u32) -> Result<String> {
        let h = c_in / 2;
        let k = i64::from(pool);
        let mut ys = vec![self.conv_bn_silu(&format!("{p}.cv1"), x, c_in, h, 1, 1)?];
        for _ in 0..3 {
            let last = ys.last().expect("non-empty").clone();
            ys.push(self.b.op(
                p,
                "MaxPool",
                &[&last],
                &[
                    ("kernel_shape", Attr::Ints(&[k, k])),
                    ("strides", Attr::Ints(&[1, 1])),
                    ("pads", Attr::Ints(&[k / 2, k / 2, k / 2, k / 2])),
                ],
            ));
        }
        let refs: Vec<&str> = ys.iter().map(String::as_str).collect();
        let cat = self.b.op(p, "Concat", &refs, &[("axis", Attr::Int(1))]);
        self.conv_bn_silu(&format!("{p}.cv2"), &cat, 4 * h, c_out, 1, 1)
    }

    /// Nearest ×2 as Resize with scales (asymmetric, floor: what PyTorch's nearest does and
    /// TensorRT 8.2 supports).
    fn upsample(&mut self, p: &str, x: &str) -> String {
        let roi = self.b.float(&format!("{p}.roi"), &[0], &[]);
        let scales = self
            .b
            .float(&format!("{p}.scales"), &[4], &[1.0, 1.0, 2.0, 2.0]);
        self.b.op(
            p,
            "Resize",
            &[x, &roi, &scales],
            &[
                ("mode", Attr::Str("nearest")),
                ("coordinate_transformation_mode", Attr::Str("asymmetric")),
                ("nearest_mode", Attr::Str("floor")),
            ],
        )
    }

    fn detect(
        &mut self,
        p: &str,
        spec: &ModelSpec,
        feats: &[String],
        c_in: &[u32],
        imgsz: u32,
    ) -> Result<String> {
        let (box_c, cls_c) = spec.head_hidden();
        let nc = spec.num_classes() as u32;
        let reg = spec.reg_max;
        let no = i64::from(4 * reg + nc);
        let flat_shape = self.b.int64(&format!("{p}.flat_shape"), &[0, no, -1]);
        let mut flat = Vec::new();
        for (level, (x, &ci)) in feats.iter().zip(c_in).enumerate() {
            let bp = format!("{p}.cv2.{level}");
            let b0 = self.conv_bn_silu(&format!("{bp}.0"), x, ci, box_c, 3, 1)?;
            let b1 = self.conv_bn_silu(&format!("{bp}.1"), &b0, box_c, box_c, 3, 1)?;
            let b2 = self.conv_bias(&format!("{bp}.2"), &b1, box_c, 4 * reg)?;
            let cp = format!("{p}.cv3.{level}");
            let c0 = self.conv_bn_silu(&format!("{cp}.0"), x, ci, cls_c, 3, 1)?;
            let c1 = self.conv_bn_silu(&format!("{cp}.1"), &c0, cls_c, cls_c, 3, 1)?;
            let c2 = self.conv_bias(&format!("{cp}.2"), &c1, cls_c, nc)?;
            let cat = self
                .b
                .op(p, "Concat", &[&b2, &c2], &[("axis", Attr::Int(1))]);
            flat.push(self.b.op(p, "Reshape", &[&cat, &flat_shape], &[]));
        }
        let refs: Vec<&str> = flat.iter().map(String::as_str).collect();
        let all = self.b.op(p, "Concat", &refs, &[("axis", Attr::Int(2))]); // [b, no, N]
        let parts = self.split(p, &all, 1, &[i64::from(4 * reg), i64::from(nc)]);
        let (distri, logits) = (&parts[0], &parts[1]);

        // DFL: expected bin per side = softmax over bins · (0, 1, …, reg − 1).
        let r = i64::from(reg);
        let bins_shape = self.b.int64(&format!("{p}.dfl_shape"), &[0, 4, r, -1]);
        let bins = self.b.op(p, "Reshape", &[distri, &bins_shape], &[]);
        let last = self.b.op(
            p,
            "Transpose",
            &[&bins],
            &[("perm", Attr::Ints(&[0, 1, 3, 2]))],
        );
        let prob = self.b.op(p, "Softmax", &[&last], &[("axis", Attr::Int(3))]);
        let proj: Vec<f32> = (0..reg).map(|i| i as f32).collect();
        let proj = self.b.float(&format!("{p}.dfl.proj"), &[r, 1], &proj);
        let dist = self.b.op(p, "MatMul", &[&prob, &proj], &[]); // [b, 4, N, 1]
        let dist_shape = self.b.int64(&format!("{p}.dist_shape"), &[0, 4, -1]);
        let dist = self.b.op(p, "Reshape", &[&dist, &dist_shape], &[]);
        let sides = self.split(p, &dist, 1, &[2, 2]);

        // Anchor points (cell centres, grid units) and strides, row-major per level.
        let (mut ax, mut ay, mut st) = (Vec::new(), Vec::new(), Vec::new());
        for &s in &spec.strides {
            let cells = imgsz / s;
            for y in 0..cells {
                for x in 0..cells {
                    ax.push(x as f32 + 0.5);
                    ay.push(y as f32 + 0.5);
                    st.push(s as f32);
                }
            }
        }
        let n = ax.len() as i64;
        let anchors = self
            .b
            .float(&format!("{p}.anchors"), &[1, 2, n], &[ax, ay].concat());
        let strides = self.b.float(&format!("{p}.strides"), &[1, 1, n], &st);
        let half = self.b.float(&format!("{p}.half"), &[1], &[0.5]);
        let x1y1 = self.b.op(p, "Sub", &[&anchors, &sides[0]], &[]);
        let x2y2 = self.b.op(p, "Add", &[&anchors, &sides[1]], &[]);
        let sum = self.b.op(p, "Add", &[&x1y1, &x2y2], &[]);
        let cxy = self.b.op(p, "Mul", &[&sum, &half], &[]);
        let wh = self.b.op(p, "Sub", &[&x2y2, &x1y1], &[]);
        let xywh = self
            .b
            .op(p, "Concat", &[&cxy, &wh], &[("axis", Attr::Int(1))]);
        let boxes = self.b.op(p, "Mul", &[&xywh, &strides], &[]);
        let scores = self.b.op(p, "Sigmoid", &[logits], &[]);
        self.b
            .op(p, "Concat", &[&boxes, &scores], &[("axis", Attr::Int(1))]);
        self.b.rename_last_output(OUTPUT);
        Ok(OUTPUT.to_string())
    }
}
