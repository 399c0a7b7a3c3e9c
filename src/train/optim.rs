//! AdamW with decoupled weight decay, a linear warmup / linear decay schedule, and global gradient-norm clipping
//! (RMT-SPEC §1.10: betas 0.9/0.999, eps 1e-8, weight decay 0.01, clip 1.0).

use rayon::prelude::*;

use super::look_back::LookBack;
use crate::model::weights::Weights;
use crate::model::Config;

/// AdamW hyper-parameters.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamW {
    /// β₁.
    #[serde(default = "beta1")]
    pub beta1: f32,
    /// β₂.
    #[serde(default = "beta2")]
    pub beta2: f32,
    /// ε.
    #[serde(default = "adam_eps")]
    pub eps: f32,
    /// Decoupled weight decay, applied to weight matrices, embeddings and the memory (not to biases and
    /// LayerNorms, as the Hugging Face trainer the authors used does).
    #[serde(default = "weight_decay")]
    pub weight_decay: f32,
}

fn beta1() -> f32 {
    0.9
}
fn beta2() -> f32 {
    0.999
}
fn adam_eps() -> f32 {
    1e-8
}
fn weight_decay() -> f32 {
    0.01
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { beta1: beta1(), beta2: beta2(), eps: adam_eps(), weight_decay: weight_decay() }
    }
}

/// What AdamW updates: a fixed list of tensors, each with or without weight decay.
pub trait Params: Clone {
    /// Every tensor, in a fixed order.
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>>;
    /// Whether each tensor (in that order) is decayed.
    fn decayed(&self, cfg: &Config) -> Vec<bool>;
    /// The same shapes, all zero.
    fn zeros_like(&self) -> Self;
}

/// Weight decay on weight matrices, embeddings and the memory; not on biases and LayerNorm scales.
impl Params for Weights {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        Weights::tensors_mut(self)
    }
    fn decayed(&self, cfg: &Config) -> Vec<bool> {
        self.named(cfg).iter().map(|(n, _, _)| decayed(n)).collect()
    }
    fn zeros_like(&self) -> Self {
        Weights::zeros_like(self)
    }
}

/// The look-back heads' matrices are decayed, their biases not.
impl Params for LookBack {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        LookBack::tensors_mut(self)
    }
    fn decayed(&self, _: &Config) -> Vec<bool> {
        self.named().iter().map(|(n, _, _)| decayed(n)).collect()
    }
    fn zeros_like(&self) -> Self {
        LookBack::zeros_like(self)
    }
}

/// The optimizer's moments, shaped like the parameters.
#[derive(Clone)]
pub struct AdamState<P = Weights> {
    /// First moments.
    pub m: P,
    /// Second moments.
    pub v: P,
    /// Steps taken.
    pub t: u64,
}

impl<P: Params> AdamState<P> {
    /// Zero moments for `w`.
    pub fn new(w: &P) -> Self {
        AdamState { m: w.zeros_like(), v: w.zeros_like(), t: 0 }
    }
}

/// Whether a tensor (by its file name) is decayed: not biases, not LayerNorm scales.
fn decayed(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("ln_"))
}

impl AdamW {
    /// One update of `w` with gradient `g` at learning rate `lr`.
    pub fn step<P: Params>(&self, cfg: &Config, w: &mut P, g: &mut P, state: &mut AdamState<P>, lr: f32) {
        state.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let (c1, c2) = (1.0 - b1.powi(state.t as i32), 1.0 - b2.powi(state.t as i32));
        let decayed = w.decayed(cfg);
        let (ms, vs) = (state.m.tensors_mut(), state.v.tensors_mut());
        for ((((p, g), m), v), &dec) in w.tensors_mut().into_iter().zip(g.tensors_mut()).zip(ms).zip(vs).zip(&decayed) {
            let decay = if dec { self.weight_decay } else { 0.0 };
            // element-wise, so splitting across threads changes nothing in the result
            p.par_iter_mut().zip(g.par_iter()).zip(m.par_iter_mut()).zip(v.par_iter_mut()).for_each(
                |(((p, &g), m), v)| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= lr * ((*m / c1) / ((*v / c2).sqrt() + self.eps) + decay * *p);
                },
            );
        }
    }
}

/// Scales `g` so its global L2 norm is at most `max_norm`; returns the norm before clipping.
/// `g` is every gradient tensor of the step, in order (the model's, then any training-only heads').
pub fn clip_grad_norm(mut g: Vec<&mut Vec<f32>>, max_norm: f32) -> f32 {
    let norm = g.iter().flat_map(|t| t.iter()).map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
    if norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        g.iter_mut().for_each(|t| t.iter_mut().for_each(|x| *x *= s));
    }
    norm
}

/// Linear warmup to `peak` over `warmup` steps, then linear decay reaching 0 at `decay_end` (the authors decay
/// towards step 2·ITERS and stop at ITERS).
pub fn learning_rate(step: u64, peak: f32, warmup: u64, decay_end: u64) -> f32 {
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let left = decay_end.saturating_sub(step) as f32 / decay_end.saturating_sub(warmup).max(1) as f32;
    peak * left.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((learning_rate(0, 1.0, 10, 110) - 0.1).abs() < 1e-7);
        assert!((learning_rate(9, 1.0, 10, 110) - 1.0).abs() < 1e-7);
        assert!((learning_rate(60, 1.0, 10, 110) - 0.5).abs() < 1e-7);
        assert_eq!(learning_rate(200, 1.0, 10, 110), 0.0);
    }
}
