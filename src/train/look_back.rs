//! Look-back heads: a training-only auxiliary loss that breaks the ≈ 50 % plateau of small models trained from
//! scratch on bAbI (models/README.md, "Why it plateaus at ≈ 50 %, and the way out").
//!
//! Head k (k = 1 … K) is a `d × d` linear map on `ln_f` of every context row; through the LM head it names the token
//! k positions back in the same segment. Its loss is the mean cross-entropy over those rows, weighted by
//! `weight`, and added to the answer loss. The dense targets teach attention to look a fixed distance back. Binding
//! a place to the person 4–5 tokens before it needs exactly that, and the answer loss alone never finds it. The
//! softmax runs over the LM-head rows of the sample's distinct prompt tokens, not the whole vocabulary: the
//! targets are always among them, and 50,257 columns per row would cost ≈ 30× the step. The heads are not part
//! of the model: checkpoints keep them, and `model_best` does not.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ops::linear_backward;
use crate::backend::cpu::fast;
use crate::backend::cpu::ops::{gemm_strided, matmul, MatRef, Strided};
use crate::model::weights::{Layout, Linear};
use crate::rng::Rng;

/// The `look_back` section of a training config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookBackConfig {
    /// K: heads for distances 1 … K (6 reaches the 4–5 tokens between a person and a place in bAbI's facts).
    pub heads: usize,
    /// Weight of each head's mean cross-entropy in the loss.
    #[serde(default = "weight")]
    pub weight: f32,
    /// Whether the heads' loss also trains the LM-head rows it scores against (with tied weights: those tokens'
    /// embeddings). `false` holds them fixed for the heads, so the heads' loss trains the heads and the trunk only:
    /// the bundled model was trained so (models/recipe).
    #[serde(default = "yes")]
    pub lm_head: bool,
}

fn weight() -> f32 {
    0.2
}
fn yes() -> bool {
    true
}

/// The heads' parameters (or their gradients, or AdamW's moments of them).
#[derive(Clone, Debug)]
pub struct LookBack {
    /// Head k − 1 for distance k: `d × d` (`[in, out]`) with a bias.
    pub heads: Vec<Linear>,
}

impl LookBack {
    /// `heads` fresh heads of width `d`, initialised as PyTorch's `nn.Linear` (uniform in ±1/√d), as the
    /// experiment that found them used.
    pub fn new(heads: usize, d: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x6c6f_6f6b_6261_636b);
        let bound = 1.0 / (d as f64).sqrt();
        let mut uniform = |n: usize| (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect();
        let heads = (0..heads)
            .map(|_| Linear { w: uniform(d * d), b: Some(uniform(d)), n_in: d, n_out: d, layout: Layout::InOut })
            .collect();
        LookBack { heads }
    }

    /// Every tensor (weight, bias per head), in a fixed order.
    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        self.heads.iter_mut().flat_map(|h| [&mut h.w, h.b.as_mut().expect("heads have biases")]).collect()
    }

    /// Every tensor under its checkpoint name, with its shape (the order of [`LookBack::tensors_mut`]).
    pub fn named(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut out = Vec::new();
        for (k, h) in self.heads.iter().enumerate() {
            out.push((format!("look_back.{k}.weight"), vec![h.n_in, h.n_out], &h.w[..]));
            out.push((format!("look_back.{k}.bias"), vec![h.n_out], h.b.as_deref().expect("heads have biases")));
        }
        out
    }

    /// The same shapes, all zero.
    pub fn zeros_like(&self) -> Self {
        let mut z = self.clone();
        z.tensors_mut().into_iter().for_each(|t| t.fill(0.0));
        z
    }
}

/// The LM-head rows a sample's look-back softmax runs over: one per distinct prompt token.
pub(crate) struct Candidates {
    /// Token ids, ascending.
    ids: Vec<u32>,
    /// Their LM-head rows (`ids.len() × d`).
    rows: Vec<f32>,
}

impl Candidates {
    pub(crate) fn new(prompt: &[u32], head: &[f32], d: usize) -> Self {
        let ids: Vec<u32> = prompt.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let rows = ids.iter().flat_map(|&t| &head[t as usize * d..][..d]).copied().collect();
        Candidates { ids, rows }
    }

    /// How many there are.
    pub(crate) fn count(&self) -> usize {
        self.ids.len()
    }

    fn index(&self, token: u32) -> usize {
        self.ids.binary_search(&token).expect("targets are prompt tokens")
    }

    /// Adds `rows` (one per candidate) into the LM-head gradient `g_head`.
    pub(crate) fn scatter(&self, rows: &[f32], g_head: &mut [f32], d: usize) {
        for (&t, r) in self.ids.iter().zip(rows.chunks_exact(d)) {
            g_head[t as usize * d..][..d].iter_mut().zip(r).for_each(|(g, v)| *g += v);
        }
    }
}

/// The gradients one segment's look-back loss adds to.
pub(crate) struct SegmentGrads<'a> {
    /// ∂/∂ the segment's `ln_f` rows.
    pub dlnf: &'a mut [f32],
    /// ∂/∂ the heads.
    pub heads: &'a mut LookBack,
    /// ∂/∂ the candidates' LM-head rows (`candidates × d`).
    pub candidates: &'a mut [f32],
}

/// One segment's context rows for the look-back loss: `lnf` of the whole segment (`[mem | tokens | mem]`), the
/// tokens, and how many of them belong to the prompt (the answer and EOS get no look-back targets).
pub(crate) struct SegmentRows<'a> {
    pub lnf: &'a [f32],
    pub mem_rows: usize,
    pub tokens: &'a [u32],
    pub context: usize,
}

impl LookBack {
    /// Σ over head k and rows of `scales[k − 1] · (−ln p(target))` for one segment, and with `grads` its gradient
    /// added in. `scales[k − 1]` is the weight of one row of head k (the loss weight over the sample's row count
    /// for that distance, times the sample's share of the batch).
    pub(crate) fn segment_loss(
        &self,
        rows: &SegmentRows<'_>,
        cand: &Candidates,
        scales: &[f32],
        mut grads: Option<SegmentGrads<'_>>,
    ) -> f64 {
        let d = self.heads.first().map_or(0, |h| h.n_in);
        let c = cand.ids.len();
        let e_c = MatRef { w: &cand.rows, n_in: d, n_out: c, layout: Layout::OutIn };
        let mut loss = 0.0f64;
        for (k, (head, &scale)) in (1..).zip(self.heads.iter().zip(scales)) {
            if rows.context <= k {
                continue;
            }
            // rows m + k … m + context read the tokens 0 … context − k
            let n = rows.context - k;
            let x = &rows.lnf[(rows.mem_rows + k) * d..][..n * d];
            let mut u = vec![0.0f32; n * d];
            matmul(x, n, head.mat(), head.b.as_deref(), &mut u, false);
            let mut p = vec![0.0f32; n * c];
            matmul(&u, n, e_c, None, &mut p, false);
            for (row, &target) in p.chunks_exact_mut(c).zip(rows.tokens) {
                fast::softmax(row);
                let j = cand.index(target);
                loss -= scale as f64 * (row[j] as f64).ln();
                row[j] -= 1.0;
                row.iter_mut().for_each(|v| *v *= scale);
            }
            let Some(g) = grads.as_mut() else { continue };
            // p is now dlogits: dU = dlogits · E_c, dE_c += dlogitsᵀ · U, then back through the head
            let mut du = vec![0.0f32; n * d];
            matmul(&p, n, MatRef { w: &cand.rows, n_in: c, n_out: d, layout: Layout::InOut }, None, &mut du, false);
            let e_view = Strided::rows(0, d);
            gemm_strided((c, d, n), g.candidates, e_view, true, &p, Strided { offset: 0, rs: 1, cs: c }, &u, e_view);
            let dx = &mut g.dlnf[(rows.mem_rows + k) * d..][..n * d];
            linear_backward(x, n, head, &du, dx, &mut g.heads.heads[k - 1]);
        }
        loss
    }
}
