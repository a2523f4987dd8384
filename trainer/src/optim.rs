//! Optimizers, learning-rate schedule and EMA, with state we own so checkpoints can carry it.
//!
//! Parameter groups follow Ultralytics: conv weights decay, BN weights and all biases do not.
//! During warm-up the bias learning rate falls from `warmup_bias_lr` while the others rise from 0,
//! and the momentum (Adam's β1) rises from `warmup_momentum`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
    Sgd,
}

/// One learnable tensor with its decay group.
struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    bias: bool,
}

pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<Param>,
    /// First moment (AdamW) or momentum buffer (SGD), per param.
    m: Vec<Tensor>,
    /// Second moment (AdamW only).
    v: Vec<Tensor>,
    pub weight_decay: f64,
    pub beta2: f64,
    pub step: u64,
}

/// Learning rates and momentum for one step.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    pub lr: f64,
    pub lr_bias: f64,
    pub momentum: f64,
}

impl Optimizer {
    /// `trainable`: the model's learnable variables by name.
    pub fn new(
        kind: OptimizerKind,
        trainable: &HashMap<String, Tensor>,
        weight_decay: f64,
    ) -> Self {
        let mut names: Vec<&String> = trainable.keys().collect();
        names.sort();
        let params: Vec<Param> = names
            .into_iter()
            .map(|n| Param {
                name: n.clone(),
                tensor: trainable[n].shallow_clone(),
                // Conv weights (4-d) decay; BN affine weights and biases do not.
                decay: trainable[n].dim() > 1,
                bias: n.ends_with(".bias"),
            })
            .collect();
        let zeros = |p: &Param| tch::no_grad(|| p.tensor.zeros_like());
        Optimizer {
            kind,
            m: params.iter().map(zeros).collect(),
            v: match kind {
                OptimizerKind::Adamw => params.iter().map(zeros).collect(),
                OptimizerKind::Sgd => Vec::new(),
            },
            params,
            weight_decay,
            beta2: 0.999,
            step: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.tensor.grad())
                .filter(|g| g.defined())
                .map(|g| g.norm().square())
                .collect();
            if norms.is_empty() {
                return 0.0;
            }
            let total = Tensor::stack(&norms, 0)
                .sum(Kind::Float)
                .sqrt()
                .double_value(&[]);
            if total.is_finite() && total > max_norm {
                let scale = max_norm / (total + 1e-6);
                for p in &self.params {
                    let mut g = p.tensor.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(scale);
                    }
                }
            }
            total
        })
    }

    pub fn apply(&mut self, s: StepSettings) {
        self.step += 1;
        let t = self.step as i32;
        tch::no_grad(|| {
            for (i, p) in self.params.iter().enumerate() {
                let g = p.tensor.grad();
                if !g.defined() {
                    continue;
                }
                let lr = if p.bias { s.lr_bias } else { s.lr };
                let wd = if p.decay { self.weight_decay } else { 0.0 };
                let mut w = p.tensor.shallow_clone();
                match self.kind {
                    OptimizerKind::Adamw => {
                        let b1 = s.momentum;
                        if wd > 0.0 {
                            let _ = w.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let _ = self.m[i].g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                        let _ = self.v[i]
                            .g_mul_scalar_(self.beta2)
                            .g_add_(&(g.square() * (1.0 - self.beta2)));
                        let bc1 = 1.0 - b1.powi(t);
                        let bc2 = 1.0 - self.beta2.powi(t);
                        let denom = self.v[i].sqrt() / bc2.sqrt() + 1e-8;
                        let _ = w.g_sub_(&(&self.m[i] / denom * (lr / bc1)));
                    }
                    OptimizerKind::Sgd => {
                        // Nesterov momentum, weight decay folded into the gradient (PyTorch SGD).
                        let g = if wd > 0.0 { &g + &w * wd } else { g };
                        let _ = self.m[i].g_mul_scalar_(s.momentum).g_add_(&g);
                        let _ = w.g_sub_(&((&g + &self.m[i] * s.momentum) * lr));
                    }
                }
            }
        });
    }

    /// Multiplies every gradient by `factor`; false when any gradient is not finite.
    pub fn scale_grads(&mut self, factor: f64) -> bool {
        tch::no_grad(|| {
            let mut checks = Vec::new();
            for p in &self.params {
                let mut g = p.tensor.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(factor);
                    checks.push(g.isfinite().all().view([1]));
                }
            }
            // One device synchronisation for all parameters.
            checks.is_empty() || Tensor::cat(&checks, 0).all().int64_value(&[]) == 1
        })
    }

    /// Optimizer state tensors by slot and parameter name, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            out.push((format!("m.{}", p.name), self.m[i].shallow_clone()));
            if let Some(v) = self.v.get(i) {
                out.push((format!("v.{}", p.name), v.shallow_clone()));
            }
        }
        out
    }

    /// The state tensors as a map (for [`crate::checkpoint::Checkpoint::restore`]).
    pub fn state_map(&self) -> HashMap<String, Tensor> {
        self.state().into_iter().collect()
    }
}

/// Dynamic loss scaling for float16 autocast on CUDA (PyTorch's `GradScaler` defaults): the loss
/// is multiplied by `scale` so small gradients survive float16; gradients are divided back before
/// clipping; a step whose gradients overflowed is skipped and the scale halved; after 2,000 good
/// steps the scale doubles. Disabled, it is the identity.
pub struct LossScaler {
    pub enabled: bool,
    pub scale: f64,
    good_steps: u32,
}

impl LossScaler {
    pub fn new(enabled: bool) -> Self {
        LossScaler {
            enabled,
            scale: 65_536.0,
            good_steps: 0,
        }
    }

    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        if self.enabled {
            loss * self.scale
        } else {
            loss.shallow_clone()
        }
    }

    /// Unscales the gradients; false when the step must be skipped (overflow).
    pub fn unscale(&mut self, opt: &mut Optimizer) -> bool {
        if !self.enabled {
            return true;
        }
        if opt.scale_grads(1.0 / self.scale) {
            self.good_steps += 1;
            if self.good_steps == 2000 {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
            true
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            false
        }
    }
}

/// Exponential moving average of every floating tensor of the model (weights and BN statistics),
/// with Ultralytics' ramp: `decay · (1 − exp(−updates / tau))`.
pub struct Ema {
    pub updates: u64,
    pub decay: f64,
    pub tau: f64,
    /// (source, average) pairs, sorted by name.
    pairs: Vec<(Tensor, Tensor)>,
}

impl Ema {
    pub fn new(model: &HashMap<String, Tensor>, ema: &HashMap<String, Tensor>) -> Self {
        let mut names: Vec<&String> = model.keys().collect();
        names.sort();
        let pairs: Vec<(Tensor, Tensor)> = names
            .into_iter()
            .map(|n| (model[n].shallow_clone(), ema[n].shallow_clone()))
            .collect();
        tch::no_grad(|| {
            for (src, dst) in &pairs {
                dst.shallow_clone().copy_(src);
            }
        });
        Ema {
            updates: 0,
            decay: 0.9999,
            tau: 2000.0,
            pairs,
        }
    }

    pub fn update(&mut self) {
        self.updates += 1;
        let d = self.decay * (1.0 - (-(self.updates as f64) / self.tau).exp());
        tch::no_grad(|| {
            for (src, dst) in &self.pairs {
                let mut dst = dst.shallow_clone();
                let _ = dst.g_mul_scalar_(d).g_add_(&(src.detach() * (1.0 - d)));
            }
        });
    }
}

/// Learning-rate factor for an epoch: linear from 1 to `lrf` over `epochs` (Ultralytics'
/// default), or a cosine of the same range.
pub fn lr_factor(epoch: usize, epochs: usize, lrf: f64, cosine: bool) -> f64 {
    let x = epoch as f64 / epochs.max(1) as f64;
    if cosine {
        ((1.0 - (x * std::f64::consts::PI).cos()) / 2.0) * (lrf - 1.0) + 1.0
    } else {
        (1.0 - x).max(0.0) * (1.0 - lrf) + lrf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_minimises_a_quadratic_and_bias_groups_skip_decay() {
        let w = Tensor::from_slice(&[3.0f32, -2.0])
            .view([1, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[5.0f32]).set_requires_grad(true);
        let vars: HashMap<String, Tensor> = [
            ("l.weight".to_string(), w.shallow_clone()),
            ("l.bias".to_string(), b.shallow_clone()),
        ]
        .into();
        let mut opt = Optimizer::new(OptimizerKind::Adamw, &vars, 0.01);
        for _ in 0..400 {
            opt.zero_grad();
            let loss = w.square().sum(Kind::Float) + b.square().sum(Kind::Float);
            loss.backward();
            opt.apply(StepSettings {
                lr: 0.05,
                lr_bias: 0.05,
                momentum: 0.9,
            });
        }
        assert!(w.abs().max().double_value(&[]) < 0.05, "{w}");
        assert!(b.abs().double_value(&[0]) < 0.05);
        assert_eq!(opt.state().len(), 4);
    }

    #[test]
    fn sgd_step_matches_the_formula() {
        let w = Tensor::from_slice(&[1.0f32])
            .view([1, 1])
            .set_requires_grad(true);
        let vars: HashMap<String, Tensor> = [("x.weight".to_string(), w.shallow_clone())].into();
        let mut opt = Optimizer::new(OptimizerKind::Sgd, &vars, 0.0);
        (w.square().sum(Kind::Float)).backward(); // g = 2
        opt.apply(StepSettings {
            lr: 0.1,
            lr_bias: 0.1,
            momentum: 0.5,
        });
        // buf = 2; update = lr · (g + μ · buf) = 0.1 · 3 = 0.3.
        assert!((w.double_value(&[0, 0]) - 0.7).abs() < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_gradient_norm() {
        let w = Tensor::from_slice(&[30.0f32, 40.0])
            .view([1, 2])
            .set_requires_grad(true);
        let vars: HashMap<String, Tensor> = [("w.weight".to_string(), w.shallow_clone())].into();
        let mut opt = Optimizer::new(OptimizerKind::Sgd, &vars, 0.0);
        (w.square().sum(Kind::Float) / 2.0).backward(); // g = w, norm 50
        assert!((opt.clip_grad_norm(10.0) - 50.0).abs() < 1e-3);
        assert!((w.grad().norm().double_value(&[]) - 10.0).abs() < 1e-3);
    }

    #[test]
    fn loss_scaler_unscales_and_skips_overflowing_steps() {
        let w = Tensor::from_slice(&[2.0f32])
            .view([1, 1])
            .set_requires_grad(true);
        let vars: HashMap<String, Tensor> = [("w.weight".to_string(), w.shallow_clone())].into();
        let mut opt = Optimizer::new(OptimizerKind::Sgd, &vars, 0.0);
        let mut scaler = LossScaler::new(true);
        scaler.scale_loss(&w.square().sum(Kind::Float)).backward();
        assert!(scaler.unscale(&mut opt));
        assert!(
            (w.grad().double_value(&[0, 0]) - 4.0).abs() < 1e-3,
            "unscaled gradient is 2w"
        );

        opt.zero_grad();
        (w.sum(Kind::Float) * f64::INFINITY).backward();
        let before = scaler.scale;
        assert!(!scaler.unscale(&mut opt), "an overflowing step is skipped");
        assert_eq!(scaler.scale, before / 2.0);
        assert!(
            LossScaler::new(false).unscale(&mut opt),
            "disabled: identity"
        );
    }

    #[test]
    fn schedule_ends_at_lrf() {
        assert_eq!(lr_factor(0, 10, 0.01, false), 1.0);
        assert!((lr_factor(10, 10, 0.01, false) - 0.01).abs() < 1e-12);
        assert!((lr_factor(10, 10, 0.01, true) - 0.01).abs() < 1e-12);
        assert!((lr_factor(5, 10, 0.0, true) - 0.5).abs() < 1e-12);
    }
}
