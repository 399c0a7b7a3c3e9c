//! AdamW with decoupled weight decay, a linear warmup / linear decay schedule, and global gradient-norm clipping
//! (RMT-SPEC §1.10: betas 0.9/0.999, eps 1e-8, weight decay 0.01, clip 1.0).

use rayon::prelude::*;

use crate::model::weights::Weights;
use crate::model::Config;

/// AdamW hyper-parameters.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

/// The optimizer's moments, shaped like the weights.
#[derive(Clone)]
pub struct AdamState {
    /// First moments.
    pub m: Weights,
    /// Second moments.
    pub v: Weights,
    /// Steps taken.
    pub t: u64,
}

impl AdamState {
    /// Zero moments for `w`.
    pub fn new(w: &Weights) -> Self {
        AdamState { m: w.zeros_like(), v: w.zeros_like(), t: 0 }
    }
}

/// Whether a tensor (by its file name) is decayed: not biases, not LayerNorm scales.
fn decayed(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("ln_"))
}

impl AdamW {
    /// One update of `w` with gradient `g` at learning rate `lr`.
    pub fn step(&self, cfg: &Config, w: &mut Weights, g: &mut Weights, state: &mut AdamState, lr: f32) {
        state.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let (c1, c2) = (1.0 - b1.powi(state.t as i32), 1.0 - b2.powi(state.t as i32));
        let names: Vec<String> = w.named(cfg).into_iter().map(|(n, _, _)| n).collect();
        let (ms, vs) = (state.m.tensors_mut(), state.v.tensors_mut());
        for ((((p, g), m), v), name) in w.tensors_mut().into_iter().zip(g.tensors_mut()).zip(ms).zip(vs).zip(&names) {
            let decay = if decayed(name) { self.weight_decay } else { 0.0 };
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
pub fn clip_grad_norm(g: &mut Weights, max_norm: f32) -> f32 {
    let norm = g.tensors_mut().iter().flat_map(|t| t.iter()).map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
    if norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        g.tensors_mut().into_iter().for_each(|t| t.iter_mut().for_each(|x| *x *= s));
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
