//! The YOLOv8-style detector in tch, built layer by layer from a [`ModelSpec`].
//!
//! Weight names follow Ultralytics' state dict (`model.<layer>.cv1.conv.weight`, …) because the
//! spec enumerates layers in `yolov8.yaml` order; the exporter relies on the same names.
//! Initialisation matches PyTorch's defaults as Ultralytics uses them (uniform ±1/√fan_in conv
//! weights, BN weight 1 / bias 0, BN eps 1e-3 and momentum 0.03) plus Ultralytics' head bias prior.

use tch::nn;
use tch::{Device, Kind, Tensor};
use trident_core::model_spec::{LayerKind, ModelSpec};

/// Conv2d (no bias, same padding) → BatchNorm → SiLU.
#[derive(Debug)]
struct ConvBnSilu {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBnSilu {
    fn new(p: nn::Path, c_in: u32, c_out: u32, kernel: u32, stride: u32) -> Self {
        let (ci, co, k) = (i64::from(c_in), i64::from(c_out), i64::from(kernel));
        let conv = nn::conv2d(
            &p / "conv",
            ci,
            co,
            k,
            nn::ConvConfig {
                stride: i64::from(stride),
                padding: k / 2,
                bias: false,
                ws_init: torch_default_init(ci * k * k),
                ..Default::default()
            },
        );
        let bn = nn::batch_norm2d(
            &p / "bn",
            co,
            nn::BatchNormConfig {
                eps: 1e-3,
                momentum: 0.03,
                ws_init: nn::Init::Const(1.0),
                ..Default::default()
            },
        );
        ConvBnSilu { conv, bn }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train).silu()
    }
}

/// PyTorch's default conv init (kaiming uniform with a = √5): U(−1/√fan_in, 1/√fan_in).
fn torch_default_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

#[derive(Debug)]
struct C2f {
    cv1: ConvBnSilu,
    cv2: ConvBnSilu,
    bottlenecks: Vec<(ConvBnSilu, ConvBnSilu)>,
    shortcut: bool,
}

impl C2f {
    fn new(p: nn::Path, c_in: u32, c_out: u32, n: u32, shortcut: bool) -> Self {
        let h = c_out / 2;
        let m = &p / "m";
        C2f {
            cv1: ConvBnSilu::new(&p / "cv1", c_in, 2 * h, 1, 1),
            cv2: ConvBnSilu::new(&p / "cv2", (2 + n) * h, c_out, 1, 1),
            bottlenecks: (0..n)
                .map(|i| {
                    let b = &m / i;
                    (
                        ConvBnSilu::new(&b / "cv1", h, h, 3, 1),
                        ConvBnSilu::new(&b / "cv2", h, h, 3, 1),
                    )
                })
                .collect(),
            shortcut,
        }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.cv1.forward(xs, train).chunk(2, 1);
        for (a, b) in &self.bottlenecks {
            let last = ys.last().expect("chunk yields two halves");
            let y = b.forward(&a.forward(last, train), train);
            ys.push(if self.shortcut { last + y } else { y });
        }
        self.cv2.forward(&Tensor::cat(&ys, 1), train)
    }
}

#[derive(Debug)]
struct Sppf {
    cv1: ConvBnSilu,
    cv2: ConvBnSilu,
    pool: i64,
}

impl Sppf {
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let k = self.pool;
        let mut ys = vec![self.cv1.forward(xs, train)];
        for _ in 0..3 {
            let last = ys.last().expect("non-empty");
            ys.push(last.max_pool2d([k, k], [1, 1], [k / 2, k / 2], [1, 1], false));
        }
        self.cv2.forward(&Tensor::cat(&ys, 1), train)
    }
}

/// Decoupled head: per level a box branch (4 × reg_max DFL logits) and a class branch.
#[derive(Debug)]
struct Detect {
    box_branch: Vec<(ConvBnSilu, ConvBnSilu, nn::Conv2D)>,
    cls_branch: Vec<(ConvBnSilu, ConvBnSilu, nn::Conv2D)>,
}

impl Detect {
    fn new(p: nn::Path, spec: &ModelSpec, c_in: &[u32]) -> Self {
        let (box_c, cls_c) = spec.head_hidden();
        let nc = spec.num_classes() as i64;
        let reg = i64::from(spec.reg_max);
        let branch = |root: nn::Path, ci: u32, hidden: u32, out: i64, bias: f64| {
            let conv = |i: i64| &root / i;
            (
                ConvBnSilu::new(conv(0), ci, hidden, 3, 1),
                ConvBnSilu::new(conv(1), hidden, hidden, 3, 1),
                nn::conv2d(
                    conv(2),
                    i64::from(hidden),
                    out,
                    1,
                    nn::ConvConfig {
                        ws_init: torch_default_init(i64::from(hidden)),
                        bs_init: nn::Init::Const(bias),
                        ..Default::default()
                    },
                ),
            )
        };
        let (mut box_branch, mut cls_branch) = (Vec::new(), Vec::new());
        for (level, (&ci, &stride)) in c_in.iter().zip(&spec.strides).enumerate() {
            box_branch.push(branch(&p / "cv2" / level, ci, box_c, 4 * reg, 1.0));
            // Ultralytics' prior: about 5 objects per 640² image spread over the classes.
            let prior = (5.0 / nc as f64 / (640.0 / f64::from(stride)).powi(2)).ln();
            cls_branch.push(branch(&p / "cv3" / level, ci, cls_c, nc, prior));
        }
        Detect {
            box_branch,
            cls_branch,
        }
    }

    fn forward(&self, feats: &[Tensor], train: bool) -> Vec<Tensor> {
        feats
            .iter()
            .zip(self.box_branch.iter().zip(&self.cls_branch))
            .map(|(x, ((b0, b1, b2), (c0, c1, c2)))| {
                let b = b1.forward(&b0.forward(x, train), train).apply(b2);
                let c = c1.forward(&c0.forward(x, train), train).apply(c2);
                Tensor::cat(&[b, c], 1)
            })
            .collect()
    }
}

#[derive(Debug)]
enum Block {
    Conv(ConvBnSilu),
    C2f(C2f),
    Sppf(Sppf),
    Upsample,
    Concat,
    Detect(Detect),
}

/// The detector. [`Detector::forward_t`] returns the raw per-level head maps the loss consumes;
/// [`Detector::predict`] returns the `[batch, 4 + nc, N]` inference contract.
#[derive(Debug)]
pub struct Detector {
    pub spec: ModelSpec,
    blocks: Vec<(Vec<usize>, Block)>,
}

impl Detector {
    /// Creates the variables under `root` (normally `vs.root()`); weight names start with `model.`.
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> Self {
        let base = root / "model";
        let blocks = spec
            .layers()
            .into_iter()
            .map(|layer| {
                let p = &base / layer.index;
                let block = match layer.kind {
                    LayerKind::Conv {
                        c_in,
                        c_out,
                        kernel,
                        stride,
                    } => Block::Conv(ConvBnSilu::new(p, c_in, c_out, kernel, stride)),
                    LayerKind::C2f {
                        c_in,
                        c_out,
                        n,
                        shortcut,
                    } => Block::C2f(C2f::new(p, c_in, c_out, n, shortcut)),
                    LayerKind::Sppf { c_in, c_out, pool } => Block::Sppf(Sppf {
                        cv1: ConvBnSilu::new(&p / "cv1", c_in, c_in / 2, 1, 1),
                        cv2: ConvBnSilu::new(&p / "cv2", c_in * 2, c_out, 1, 1),
                        pool: i64::from(pool),
                    }),
                    LayerKind::Upsample => Block::Upsample,
                    LayerKind::Concat { .. } => Block::Concat,
                    LayerKind::Detect { ref c_in } => Block::Detect(Detect::new(p, spec, c_in)),
                };
                (layer.from, block)
            })
            .collect();
        Detector {
            spec: spec.clone(),
            blocks,
        }
    }

    /// Raw head outputs, one `[batch, 4·reg_max + nc, H, W]` map per stride.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let mut outputs: Vec<Tensor> = Vec::with_capacity(self.blocks.len());
        for (index, (from, block)) in self.blocks.iter().enumerate() {
            let input = |i: usize| if index == 0 { xs } else { &outputs[from[i]] };
            let y = match block {
                Block::Conv(m) => m.forward(input(0), train),
                Block::C2f(m) => m.forward(input(0), train),
                Block::Sppf(m) => m.forward(input(0), train),
                Block::Upsample => {
                    let x = input(0);
                    let (h, w) = (x.size()[2], x.size()[3]);
                    x.upsample_nearest2d([h * 2, w * 2], None, None)
                }
                Block::Concat => {
                    Tensor::cat(&from.iter().map(|&i| &outputs[i]).collect::<Vec<_>>(), 1)
                }
                Block::Detect(m) => {
                    let feats: Vec<Tensor> =
                        from.iter().map(|&i| outputs[i].shallow_clone()).collect();
                    return m.forward(&feats, train);
                }
            };
            outputs.push(y);
        }
        unreachable!("the spec ends with a Detect layer")
    }

    /// Inference output `[batch, 4 + nc, N]`: cx, cy, w, h in input pixels, then class scores.
    pub fn predict(&self, xs: &Tensor) -> Tensor {
        let feats = self.forward_t(xs, false);
        let (distri, scores) = flatten_head(&feats, &self.spec);
        let grid = AnchorGrid::new(&feats, &self.spec.strides, xs.device());
        let ltrb = dfl_decode(&distri, self.spec.reg_max); // [B, N, 4] in grid units
        let boxes = ltrb_to_xyxy(&grid.points, &ltrb);
        let (x1y1, x2y2) = (boxes.narrow(2, 0, 2), boxes.narrow(2, 2, 2));
        let xywh = Tensor::cat(&[(&x1y1 + &x2y2) / 2.0, &x2y2 - &x1y1], 2) * &grid.strides;
        Tensor::cat(&[xywh, scores.sigmoid()], 2)
            .permute([0, 2, 1])
            .contiguous()
    }
}

/// Flattens per-level head maps into `([B, N, 4·reg_max], [B, N, nc])` (DFL logits, class logits).
pub fn flatten_head(feats: &[Tensor], spec: &ModelSpec) -> (Tensor, Tensor) {
    let b = feats[0].size()[0];
    let no = spec.head_outputs() as i64;
    let flat: Vec<Tensor> = feats.iter().map(|f| f.view([b, no, -1])).collect();
    let x = Tensor::cat(&flat, 2).permute([0, 2, 1]);
    let reg = 4 * i64::from(spec.reg_max);
    (x.narrow(2, 0, reg), x.narrow(2, reg, no - reg))
}

/// Anchor points (cell centres, in grid units of their level) and their strides.
pub struct AnchorGrid {
    /// `[N, 2]` x, y.
    pub points: Tensor,
    /// `[N, 1]`.
    pub strides: Tensor,
}

impl AnchorGrid {
    pub fn new(feats: &[Tensor], strides: &[u32], device: Device) -> Self {
        let (mut points, mut stride_t) = (Vec::new(), Vec::new());
        for (f, &s) in feats.iter().zip(strides) {
            let (h, w) = (f.size()[2], f.size()[3]);
            let opts = (Kind::Float, device);
            let sx = Tensor::arange(w, opts) + 0.5;
            let sy = Tensor::arange(h, opts) + 0.5;
            let grid = Tensor::meshgrid_indexing(&[sy, sx], "ij");
            points.push(Tensor::stack(
                &[grid[1].flatten(0, 1), grid[0].flatten(0, 1)],
                1,
            ));
            stride_t.push(Tensor::full([h * w, 1], f64::from(s), opts));
        }
        AnchorGrid {
            points: Tensor::cat(&points, 0),
            strides: Tensor::cat(&stride_t, 0),
        }
    }
}

/// Expected distance per side from the DFL bin distribution: `[B, N, 4·reg] → [B, N, 4]`.
pub fn dfl_decode(distri: &Tensor, reg_max: u32) -> Tensor {
    let s = distri.size();
    let reg = i64::from(reg_max);
    let proj = Tensor::arange(reg, (Kind::Float, distri.device()));
    distri
        .view([s[0], s[1], 4, reg])
        .softmax(3, Kind::Float)
        .matmul(&proj)
}

/// Anchor points and left/top/right/bottom distances → x1, y1, x2, y2 (same units).
pub fn ltrb_to_xyxy(points: &Tensor, ltrb: &Tensor) -> Tensor {
    let lt = ltrb.narrow(-1, 0, 2);
    let rb = ltrb.narrow(-1, 2, 2);
    Tensor::cat(&[points - lt, points + rb], -1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(preset: &str, nc: usize, size: u32) -> ModelSpec {
        let names = (0..nc).map(|i| format!("class{i}")).collect();
        ModelSpec::preset(preset, names, size).unwrap()
    }

    #[test]
    fn every_preset_honours_the_output_contract() {
        for (preset, nc, size) in [("tiny", 3, 320), ("nano", 5, 256), ("small", 1, 160)] {
            let spec = spec(preset, nc, size);
            let vs = nn::VarStore::new(Device::Cpu);
            let model = Detector::new(&vs.root(), &spec);
            let learnable: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            assert_eq!(learnable as usize, spec.parameter_count(), "{preset}");
            let x = Tensor::rand(
                [2, 3, i64::from(size), i64::from(size)],
                (Kind::Float, Device::Cpu),
            );
            let feats = tch::no_grad(|| model.forward_t(&x, false));
            let side = i64::from(size);
            for (f, s) in feats.iter().zip([8, 16, 32]) {
                assert_eq!(
                    f.size(),
                    [2, spec.head_outputs() as i64, side / s, side / s]
                );
            }
            let out = tch::no_grad(|| model.predict(&x));
            let n = spec.num_anchors(size) as i64;
            assert_eq!(out.size(), [2, 4 + nc as i64, n], "{preset}");
            // Scores are probabilities; boxes have positive size inside a generous frame.
            let scores = out.narrow(1, 4, nc as i64);
            assert!(scores.min().double_value(&[]) >= 0.0 && scores.max().double_value(&[]) <= 1.0);
            let wh = out.narrow(1, 2, 2);
            assert!(wh.min().double_value(&[]) > 0.0);
        }
    }

    #[test]
    fn weight_names_follow_ultralytics() {
        let spec = spec("tiny", 2, 64);
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Detector::new(&vs.root(), &spec);
        let vars = vs.variables();
        for name in [
            "model.0.conv.weight",
            "model.0.bn.running_var",
            "model.2.m.0.cv1.conv.weight",
            "model.9.cv2.bn.bias",
            "model.22.cv2.0.2.bias",
            "model.22.cv3.2.1.conv.weight",
        ] {
            assert!(vars.contains_key(name), "{name} missing");
        }
        // The class bias prior for stride 8 with 2 classes.
        let bias = vars["model.22.cv3.0.2.bias"].double_value(&[0]);
        assert!((bias - (5.0f64 / 2.0 / 6400.0).ln()).abs() < 1e-6);
    }

    #[test]
    fn dfl_decode_of_a_peaked_distribution_is_its_bin() {
        let mut logits = vec![-50.0f32; 4 * 16];
        for (side, bin) in [3, 0, 7, 15].iter().enumerate() {
            logits[side * 16 + bin] = 50.0;
        }
        let t = Tensor::from_slice(&logits).view([1, 1, 64]);
        let d: Vec<f32> = Vec::try_from(dfl_decode(&t, 16).flatten(0, -1)).unwrap();
        for (got, want) in d.iter().zip([3.0, 0.0, 7.0, 15.0]) {
            assert!((got - want).abs() < 1e-4, "{d:?}");
        }
    }
}
