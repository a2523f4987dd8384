//! The model spec: the single source of truth for a detector's architecture.
//!
//! The trainer builds its tch graph from [`ModelSpec::layers`], the exporter builds the ONNX graph
//! from the same list, and both name every weight the way Ultralytics does (`model.<layer>.…`), so
//! a checkpoint written by one is read by the other without a mapping table. The graph is the
//! YOLOv8 detection graph (`yolov8.yaml`): Conv-BN-SiLU stem, C2f stages, SPPF, an FPN/PAN neck and
//! an anchor-free decoupled head with distribution focal loss (DFL) box regression over strides
//! 8/16/32. Width and depth multipliers scale it; presets name the usual sizes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Named sizes. `tiny` is for tests, the demo and CPU training; `nano` and `small` match YOLOv8n/s.
pub const PRESETS: &[(&str, f64, f64)] = &[
    ("tiny", 0.125, 0.33),
    ("nano", 0.25, 0.33),
    ("small", 0.50, 0.33),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// The YOLOv8 detection graph.
    Yolov8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub architecture: Architecture,
    /// The preset the multipliers came from, if any (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    pub width_multiple: f64,
    pub depth_multiple: f64,
    pub max_channels: u32,
    /// Square model input side in pixels; a multiple of the largest stride.
    pub input_size: u32,
    pub strides: Vec<u32>,
    /// DFL bins per box side.
    pub reg_max: u32,
    /// Class names, index = class id.
    pub names: Vec<String>,
}

/// One layer of the graph. `from` holds absolute indices of the layers whose outputs it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub index: usize,
    pub from: Vec<usize>,
    pub kind: LayerKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// Conv2d (no bias, "same" padding) → BatchNorm → SiLU.
    Conv {
        c_in: u32,
        c_out: u32,
        kernel: u32,
        stride: u32,
    },
    /// Ultralytics C2f: cv1 1×1 to 2c, split, `n` bottlenecks on the second half, concat all, cv2.
    C2f {
        c_in: u32,
        c_out: u32,
        n: u32,
        shortcut: bool,
    },
    /// Spatial pyramid pooling (fast): cv1, three chained 5×5 max-pools, concat, cv2.
    Sppf { c_in: u32, c_out: u32, pool: u32 },
    /// Nearest-neighbour ×2.
    Upsample,
    /// Channel concatenation of `from`.
    Concat { c_out: u32 },
    /// Decoupled head over the `from` feature maps.
    Detect { c_in: Vec<u32> },
}

impl ModelSpec {
    /// A spec for a named preset.
    pub fn preset(name: &str, names: Vec<String>, input_size: u32) -> Result<Self> {
        let Some(&(_, width, depth)) = PRESETS.iter().find(|(n, ..)| *n == name) else {
            let known: Vec<_> = PRESETS.iter().map(|(n, ..)| *n).collect();
            return Err(Error::invalid(
                "model",
                format!(
                    "unknown preset '{name}' (expected one of {})",
                    known.join(", ")
                ),
            ));
        };
        let spec = ModelSpec {
            architecture: Architecture::Yolov8,
            preset: Some(name.to_string()),
            width_multiple: width,
            depth_multiple: depth,
            max_channels: 1024,
            input_size,
            strides: vec![8, 16, 32],
            reg_max: 16,
            names,
        };
        spec.validate("model")?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let spec: ModelSpec = crate::yaml::load_yaml(path)?;
        spec.validate(&path.display().to_string())?;
        Ok(spec)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_saphyr::to_string(self)
            .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
        crate::fsutil::write_atomic(path, text.as_bytes())
    }

    /// Checks the invariants the graph builders rely on; `location` prefixes the error.
    pub fn validate(&self, location: &str) -> Result<()> {
        let bad =
            |field: &str, msg: String| Err(Error::invalid(format!("{location}: {field}"), msg));
        if self.names.is_empty() {
            return bad("names", "at least one class name is required".into());
        }
        if !(self.width_multiple > 0.0 && self.width_multiple <= 4.0) {
            return bad(
                "width_multiple",
                format!("{} is not in (0, 4]", self.width_multiple),
            );
        }
        if !(self.depth_multiple > 0.0 && self.depth_multiple <= 4.0) {
            return bad(
                "depth_multiple",
                format!("{} is not in (0, 4]", self.depth_multiple),
            );
        }
        if self.strides != [8, 16, 32] {
            return bad(
                "strides",
                format!(
                    "{:?}: the yolov8 graph has strides [8, 16, 32]",
                    self.strides
                ),
            );
        }
        if self.reg_max < 2 {
            return bad("reg_max", format!("{} is below 2", self.reg_max));
        }
        if self.input_size < 32 || !self.input_size.is_multiple_of(32) {
            return bad(
                "input_size",
                format!(
                    "{} is not a positive multiple of 32 (the largest stride)",
                    self.input_size
                ),
            );
        }
        if self.max_channels < 16 {
            return bad("max_channels", format!("{} is below 16", self.max_channels));
        }
        Ok(())
    }

    pub fn num_classes(&self) -> usize {
        self.names.len()
    }

    /// Channels of one head output row: 4 box sides × `reg_max` bins + class logits.
    pub fn head_outputs(&self) -> usize {
        4 * self.reg_max as usize + self.num_classes()
    }

    /// Anchor points (grid cells over all strides) for a square input of `size`.
    pub fn num_anchors(&self, size: u32) -> usize {
        self.strides
            .iter()
            .map(|s| ((size / s) * (size / s)) as usize)
            .sum()
    }

    /// Channel count for a base (YOLOv8-l) width, as Ultralytics computes it.
    pub fn channels(&self, base: u32) -> u32 {
        let c = f64::from(base.min(self.max_channels)) * self.width_multiple;
        ((c / 8.0).ceil() as u32 * 8).max(8)
    }

    /// Repeat count for a base depth, as Ultralytics computes it.
    pub fn repeats(&self, base: u32) -> u32 {
        if base > 1 {
            ((f64::from(base) * self.depth_multiple).round() as u32).max(1)
        } else {
            base
        }
    }

    /// The detection head's hidden widths (box branch, class branch).
    pub fn head_hidden(&self) -> (u32, u32) {
        let c0 = self.channels(256);
        let box_c = 16.max(c0 / 4).max(4 * self.reg_max);
        let cls_c = c0.max((self.num_classes() as u32).min(100));
        (box_c, cls_c)
    }

    /// The graph, layer by layer, in `yolov8.yaml` order (so weight names match Ultralytics').
    pub fn layers(&self) -> Vec<Layer> {
        let c = |b| self.channels(b);
        let n = |b| self.repeats(b);
        let (c64, c128, c256, c512, c1024) = (c(64), c(128), c(256), c(512), c(1024));
        let conv = |c_in, c_out, kernel, stride| LayerKind::Conv {
            c_in,
            c_out,
            kernel,
            stride,
        };
        let c2f = |c_in, c_out, n, shortcut| LayerKind::C2f {
            c_in,
            c_out,
            n,
            shortcut,
        };
        let kinds: Vec<(Vec<usize>, LayerKind)> = vec![
            // Backbone.
            (vec![], conv(3, c64, 3, 2)),             // 0  P1/2
            (vec![0], conv(c64, c128, 3, 2)),         // 1  P2/4
            (vec![1], c2f(c128, c128, n(3), true)),   // 2
            (vec![2], conv(c128, c256, 3, 2)),        // 3  P3/8
            (vec![3], c2f(c256, c256, n(6), true)),   // 4
            (vec![4], conv(c256, c512, 3, 2)),        // 5  P4/16
            (vec![5], c2f(c512, c512, n(6), true)),   // 6
            (vec![6], conv(c512, c1024, 3, 2)),       // 7  P5/32
            (vec![7], c2f(c1024, c1024, n(3), true)), // 8
            (
                vec![8],
                LayerKind::Sppf {
                    c_in: c1024,
                    c_out: c1024,
                    pool: 5,
                },
            ), // 9
            // Top-down (FPN).
            (vec![9], LayerKind::Upsample), // 10
            (
                vec![10, 6],
                LayerKind::Concat {
                    c_out: c1024 + c512,
                },
            ), // 11
            (vec![11], c2f(c1024 + c512, c512, n(3), false)), // 12
            (vec![12], LayerKind::Upsample), // 13
            (vec![13, 4], LayerKind::Concat { c_out: c512 + c256 }), // 14
            (vec![14], c2f(c512 + c256, c256, n(3), false)), // 15 out P3
            // Bottom-up (PAN).
            (vec![15], conv(c256, c256, 3, 2)), // 16
            (vec![16, 12], LayerKind::Concat { c_out: c256 + c512 }), // 17
            (vec![17], c2f(c256 + c512, c512, n(3), false)), // 18 out P4
            (vec![18], conv(c512, c512, 3, 2)), // 19
            (
                vec![19, 9],
                LayerKind::Concat {
                    c_out: c512 + c1024,
                },
            ), // 20
            (vec![20], c2f(c512 + c1024, c1024, n(3), false)), // 21 out P5
            (
                vec![15, 18, 21],
                LayerKind::Detect {
                    c_in: vec![c256, c512, c1024],
                },
            ), // 22
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(index, (from, kind))| Layer {
                index,
                from: if from.is_empty() && index > 0 {
                    vec![index - 1]
                } else {
                    from
                },
                kind,
            })
            .collect()
    }

    /// Number of learnable parameters (conv weights, BN affine, head biases), for reports.
    pub fn parameter_count(&self) -> usize {
        let conv = |ci: u32, co: u32, k: u32| (ci * co * k * k + 2 * co) as usize;
        let mut total = 0;
        for layer in self.layers() {
            total += match layer.kind {
                LayerKind::Conv {
                    c_in,
                    c_out,
                    kernel,
                    ..
                } => conv(c_in, c_out, kernel),
                LayerKind::C2f { c_in, c_out, n, .. } => {
                    let h = c_out / 2;
                    conv(c_in, 2 * h, 1)
                        + conv((2 + n) * h, c_out, 1)
                        + n as usize * 2 * conv(h, h, 3)
                }
                LayerKind::Sppf { c_in, c_out, .. } => {
                    let h = c_in / 2;
                    conv(c_in, h, 1) + conv(4 * h, c_out, 1)
                }
                LayerKind::Detect { ref c_in } => {
                    let (bc, cc) = self.head_hidden();
                    let nc = self.num_classes() as u32;
                    c_in.iter()
                        .map(|&ci| {
                            conv(ci, bc, 3)
                                + conv(bc, bc, 3)
                                + (bc * 4 * self.reg_max + 4 * self.reg_max) as usize
                                + conv(ci, cc, 3)
                                + conv(cc, cc, 3)
                                + (cc * nc + nc) as usize
                        })
                        .sum()
                }
                LayerKind::Upsample | LayerKind::Concat { .. } => 0,
            };
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn nano_matches_yolov8n_parameter_count() {
        // Ultralytics reports 3,157,200 parameters for yolov8n and 11,166,560 for yolov8s (80
        // classes); both include the 16 fixed weights of the DFL projection, which we do not learn.
        let spec = ModelSpec::preset("nano", names(80), 640).unwrap();
        assert_eq!(spec.parameter_count(), 3_157_200 - 16);
        let small = ModelSpec::preset("small", names(80), 640).unwrap();
        assert_eq!(small.parameter_count(), 11_166_560 - 16);
    }

    #[test]
    fn anchors_and_outputs() {
        let spec = ModelSpec::preset("tiny", names(3), 320).unwrap();
        assert_eq!(spec.num_anchors(320), 2100);
        assert_eq!(spec.head_outputs(), 67);
        let layers = spec.layers();
        assert_eq!(layers.len(), 23);
        assert_eq!(layers[22].from, vec![15, 18, 21]);
        assert_eq!(layers[3].from, vec![2]);
    }

    #[test]
    fn validation_names_the_field() {
        let mut spec = ModelSpec::preset("tiny", names(3), 320).unwrap();
        spec.input_size = 300;
        let err = spec.validate("runs/x/model.yaml").unwrap_err().to_string();
        assert!(
            err.contains("input_size") && err.contains("multiple of 32"),
            "{err}"
        );
        assert!(ModelSpec::preset("huge", names(3), 320).is_err());
    }

    #[test]
    fn yaml_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.yaml");
        let spec = ModelSpec::preset("nano", names(4), 416).unwrap();
        spec.save(&path).unwrap();
        assert_eq!(ModelSpec::load(&path).unwrap(), spec);
    }
}
