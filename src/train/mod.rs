//! Training (RMT-SPEC §1.5–1.6): the loss of one sample and its exact gradient with full backpropagation through
//! time (k2 = −1). Every segment, the partial last one too, runs `[mem | segment | mem]` with write memory; the
//! next segment's memory is `ln_f` at the write rows; the loss is the mean cross-entropy of the answer tokens and
//! EOS only. Gradients flow back through every memory hand-off into the learned `memory`. Optional training-only
//! look-back heads ([`look_back`]) add a dense auxiliary loss on the context rows. RMT for now. The
//! element-wise passes use the fast CPU kernels (polynomial `tanh` and `exp`, within 2 ulp of libm), as inference
//! does.

pub mod look_back;
pub mod ops;
pub mod optim;
pub mod trainer;

use crate::backend::cpu::fast;
use crate::backend::cpu::forward::{embed, Piece};
use crate::backend::cpu::ops::{gemm_strided, matmul, MatRef, Strided};
use crate::error::{Error, Result};
use crate::model::weights::{Layout, Weights};
use crate::model::{MemoryKind, Model};
use look_back::{Candidates, LookBack, SegmentGrads, SegmentRows};

/// One training sample: `prompt` (context + question + GEN) and the answer tokens (EOS is appended).
#[derive(Clone, Debug)]
pub struct TrainSample {
    /// Context, question and the GEN marker.
    pub prompt: Vec<u32>,
    /// Answer tokens, without EOS.
    pub answer: Vec<u32>,
}

/// Dropout while training (GPT-2's four sites: embeddings, attention probabilities, both residual branches).
/// The masks are a function of `seed`, the segment, the layer and the site, so a run is reproducible.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    /// Probability of dropping an activation.
    pub p: f32,
    /// Seed of the masks.
    pub seed: u64,
}

impl Dropout {
    fn mask(&self, segment: usize, layer: usize, site: u64, n: usize) -> Vec<f32> {
        let seed = crate::rng::Rng::new(self.seed ^ ((segment as u64) << 40) ^ ((layer as u64) << 8) ^ site).next_u64();
        ops::dropout_mask(n, self.p, seed)
    }
}

/// Multiplies `x` by a dropout mask, if any.
fn apply(x: &mut [f32], mask: &Option<Vec<f32>>) {
    if let Some(m) = mask {
        x.iter_mut().zip(m).for_each(|(v, s)| *v *= s);
    }
}

/// What one block's backward needs.
struct LayerCache {
    x_in: Vec<f32>,
    ln1: Vec<f32>,
    ln1_stats: (Vec<f32>, Vec<f32>),
    qkv: Vec<f32>,
    probs: Vec<f32>,
    att: Vec<f32>,
    x_mid: Vec<f32>,
    ln2: Vec<f32>,
    ln2_stats: (Vec<f32>, Vec<f32>),
    fc: Vec<f32>,
    act: Vec<f32>,
    drop_attn: Option<Vec<f32>>,
    drop_resid_attn: Option<Vec<f32>>,
    drop_resid_mlp: Option<Vec<f32>>,
}

/// One segment's forward, kept for the backward.
struct SegmentCache {
    tokens: Vec<u32>,
    t: usize,
    layers: Vec<LayerCache>,
    x_out: Vec<f32>,
    lnf: Vec<f32>,
    lnf_stats: (Vec<f32>, Vec<f32>),
    drop_embed: Option<Vec<f32>>,
}

fn forward_segment(model: &Model, mem: &[f32], tokens: &[u32], drop: Option<(Dropout, usize)>) -> SegmentCache {
    let cfg = &model.config;
    let (d, eps, h) = (cfg.n_embd, cfg.layer_norm_epsilon, cfg.n_head);
    let mut x = embed(model, &[Piece::Rows(mem), Piece::Tokens(tokens), Piece::Rows(mem)], 0);
    let t = x.len() / d;
    let mask = |layer: usize, site: u64, n: usize| drop.map(|(dr, seg)| dr.mask(seg, layer, site, n));
    let drop_embed = mask(0, 0, t * d);
    apply(&mut x, &drop_embed);
    let stats = || (vec![0.0; t], vec![0.0; t]);
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (l, b) in model.weights.blocks.iter().enumerate() {
        let (mut ln1, mut ln1_stats) = (vec![0.0; t * d], stats());
        ops::layer_norm(&x, &b.ln_1, eps, &mut ln1, &mut ln1_stats.0, &mut ln1_stats.1);
        let mut qkv = vec![0.0; t * 3 * d];
        matmul(&ln1, t, b.c_attn.mat(), b.c_attn.b.as_deref(), &mut qkv, false);
        let (mut att, mut probs) = (vec![0.0; t * d], vec![0.0; h * t * t]);
        let drop_attn = mask(l, 1, h * t * t);
        ops::attention(&qkv, t, h, &mut att, &mut probs, drop_attn.as_deref());
        // x_mid = x + dropout(att·W + b)
        let mut branch = vec![0.0; t * d];
        matmul(&att, t, b.attn_proj.mat(), b.attn_proj.b.as_deref(), &mut branch, false);
        let drop_resid_attn = mask(l, 2, t * d);
        apply(&mut branch, &drop_resid_attn);
        let x_mid: Vec<f32> = x.iter().zip(&branch).map(|(a, b)| a + b).collect();
        let (mut ln2, mut ln2_stats) = (vec![0.0; t * d], stats());
        ops::layer_norm(&x_mid, &b.ln_2, eps, &mut ln2, &mut ln2_stats.0, &mut ln2_stats.1);
        let mut fc = vec![0.0; t * 4 * d];
        matmul(&ln2, t, b.c_fc.mat(), b.c_fc.b.as_deref(), &mut fc, false);
        let mut act = fc.clone();
        fast::gelu_new(&mut act);
        // x_out = x_mid + dropout(act·W + b)
        matmul(&act, t, b.mlp_proj.mat(), b.mlp_proj.b.as_deref(), &mut branch, false);
        let drop_resid_mlp = mask(l, 3, t * d);
        apply(&mut branch, &drop_resid_mlp);
        let x_out: Vec<f32> = x_mid.iter().zip(&branch).map(|(a, b)| a + b).collect();
        layers.push(LayerCache {
            x_in: x,
            ln1,
            ln1_stats,
            qkv,
            probs,
            att,
            x_mid,
            ln2,
            ln2_stats,
            fc,
            act,
            drop_attn,
            drop_resid_attn,
            drop_resid_mlp,
        });
        x = x_out;
    }
    let (mut lnf, mut lnf_stats) = (vec![0.0; t * d], stats());
    ops::layer_norm(&x, &model.weights.ln_f, eps, &mut lnf, &mut lnf_stats.0, &mut lnf_stats.1);
    SegmentCache { tokens: tokens.to_vec(), t, layers, x_out: x, lnf, lnf_stats, drop_embed }
}

/// The LM head as the right-hand side of `h · Wᵀ` (untied head or `wte`), `[V, d]`.
fn head(w: &Weights) -> &[f32] {
    w.lm_head.as_deref().unwrap_or(&w.wte)
}

/// Where each labelled position is: (segment, row in the segment, target token).
fn labels(model: &Model, sample: &TrainSample) -> Vec<Label> {
    let (seg, m) = (model.config.memory.segment_size, model.config.memory.num_mem_tokens);
    let mut input = sample.prompt.clone();
    input.extend(&sample.answer);
    input.push(model.config.eos_token_id);
    (sample.prompt.len() - 1..input.len() - 1).map(|p| (p / seg, m + p % seg, input[p + 1])).collect()
}

/// A labelled position: (segment, row in the segment, target token).
type Label = (usize, usize, u32);

/// The forward pass of one sample: per-segment caches, the labels, and the softmax of the LM head at every label
/// (`[labels, vocab]`, which the backward reuses).
struct Forward {
    caches: Vec<SegmentCache>,
    labels: Vec<Label>,
    probs: Vec<f32>,
    loss: f32,
}

/// Forward over all segments, then the LM head on the label rows only, as one GEMM.
fn forward(model: &Model, sample: &TrainSample, dropout: Option<Dropout>) -> Result<Forward> {
    let cfg = &model.config;
    if cfg.memory.kind != MemoryKind::Rmt {
        return Err(Error::Input("training supports RMT models (RMT-R is not implemented yet)".into()));
    }
    if sample.prompt.is_empty() {
        return Err(Error::Input("a training sample needs a prompt ending with GEN".into()));
    }
    let (seg, m, d, v) = (cfg.memory.segment_size, cfg.memory.num_mem_tokens, cfg.n_embd, cfg.vocab_size);
    let mut input = sample.prompt.clone();
    input.extend(&sample.answer);
    input.push(cfg.eos_token_id);
    if let Some(&t) = input.iter().find(|&&t| t as usize >= v) {
        return Err(Error::Input(format!("token {t} is outside the vocabulary ({v})")));
    }
    let mut mem = model.weights.memory.clone();
    let mut caches = Vec::new();
    for (s, chunk) in input.chunks(seg).enumerate() {
        let c = forward_segment(model, &mem, chunk, dropout.map(|d| (d, s)));
        mem = c.lnf[(c.t - m) * d..].to_vec();
        caches.push(c);
    }
    let labels = labels(model, sample);
    let rows: Vec<f32> = labels.iter().flat_map(|&(s, row, _)| &caches[s].lnf[row * d..][..d]).copied().collect();
    let mut probs = vec![0.0; labels.len() * v];
    matmul(&rows, labels.len(), head_mat(&model.weights, cfg), None, &mut probs, false);
    let mut loss = 0.0f64;
    for (p, &(_, _, target)) in probs.chunks_exact_mut(v).zip(&labels) {
        fast::softmax(p);
        loss -= (p[target as usize] as f64).ln();
    }
    Ok(Forward { caches, loss: (loss / labels.len() as f64) as f32, labels, probs })
}

/// The LM head as the right-hand side of `h · Wᵀ`.
fn head_mat<'a>(w: &'a Weights, cfg: &crate::model::Config) -> MatRef<'a> {
    MatRef { w: head(w), n_in: cfg.n_embd, n_out: cfg.vocab_size, layout: Layout::OutIn }
}

/// The loss of `sample` (forward only).
pub fn loss(model: &Model, sample: &TrainSample) -> Result<f32> {
    loss_with(model, sample, None)
}

/// The loss of `sample` with optional dropout.
pub fn loss_with(model: &Model, sample: &TrainSample, dropout: Option<Dropout>) -> Result<f32> {
    Ok(forward(model, sample, dropout)?.loss)
}

/// The loss of `sample` and its gradient with respect to every weight (full BPTT), as a [`Weights`] of the same
/// shapes.
pub fn loss_and_grads(model: &Model, sample: &TrainSample) -> Result<(f32, Weights)> {
    loss_and_grads_with(model, sample, None)
}

/// [`loss_and_grads`] with optional dropout (the same masks in the forward and the backward pass).
pub fn loss_and_grads_with(model: &Model, sample: &TrainSample, dropout: Option<Dropout>) -> Result<(f32, Weights)> {
    let mut g = model.weights.zeros_like();
    let loss = accumulate_grads(model, sample, dropout, 1.0, &mut g)?;
    Ok((loss, g))
}

/// Adds `scale ·` the gradient of `sample`'s loss to `g` (shaped like the model's weights) and returns the loss:
/// batches accumulate into one buffer per thread instead of one per sample.
pub fn accumulate_grads(
    model: &Model,
    sample: &TrainSample,
    dropout: Option<Dropout>,
    scale: f32,
    g: &mut Weights,
) -> Result<f32> {
    Ok(accumulate(model, sample, dropout, scale, g, None)?.0)
}

/// The answer loss plus the look-back heads' loss (see [`look_back`]) of `sample`, forward only.
pub fn look_back_loss(model: &Model, heads: &LookBack, weight: f32, sample: &TrainSample) -> Result<f32> {
    let f = forward(model, sample, None)?;
    let cand = Candidates::new(&sample.prompt, head(&model.weights), model.config.n_embd);
    let scales = look_back_scales(model, &f.caches, sample, heads.heads.len(), weight, 1.0);
    let mut aux = 0.0f64;
    for (s, c) in f.caches.iter().enumerate() {
        aux += heads.segment_loss(&look_back_rows(model, c, s, sample), &cand, &scales, None);
    }
    Ok(f.loss + aux as f32)
}

/// [`look_back_loss`] and its gradients: with respect to the model's weights and to the heads. With `lm_head`
/// false the heads' loss leaves the LM head out of the model's gradient (see [`look_back::LookBackConfig::lm_head`]).
pub fn look_back_loss_and_grads(
    model: &Model,
    heads: &LookBack,
    weight: f32,
    lm_head: bool,
    sample: &TrainSample,
) -> Result<(f32, Weights, LookBack)> {
    let (mut g, mut gh) = (model.weights.zeros_like(), heads.zeros_like());
    let aux = LookBackStep { heads, weight, lm_head, share: 1.0, grads: &mut gh };
    let (loss, aux) = accumulate(model, sample, None, 1.0, &mut g, Some(aux))?;
    Ok((loss + aux, g, gh))
}

/// The look-back heads' part of one sample's gradient: the heads, their loss weight, whether it reaches the LM
/// head, the sample's share of the batch, and the heads' gradient buffer.
pub(crate) struct LookBackStep<'a> {
    pub heads: &'a LookBack,
    pub weight: f32,
    pub lm_head: bool,
    pub share: f32,
    pub grads: &'a mut LookBack,
}

/// The context rows of segment `s` that the look-back loss reads: the prompt's tokens in it.
fn look_back_rows<'a>(model: &Model, c: &'a SegmentCache, s: usize, sample: &TrainSample) -> SegmentRows<'a> {
    let seg = model.config.memory.segment_size;
    let context = sample.prompt.len().saturating_sub(s * seg).min(c.tokens.len());
    SegmentRows { lnf: &c.lnf, mem_rows: model.config.memory.num_mem_tokens, tokens: &c.tokens, context }
}

/// The weight of one row of head k (index k − 1): `weight · share` over the sample's rows at distance k, so each
/// head's loss is a mean over the sample's context rows.
fn look_back_scales(
    model: &Model,
    caches: &[SegmentCache],
    sample: &TrainSample,
    heads: usize,
    weight: f32,
    share: f32,
) -> Vec<f32> {
    (1..=heads)
        .map(|k| {
            let rows: usize = caches
                .iter()
                .enumerate()
                .map(|(s, c)| look_back_rows(model, c, s, sample).context.saturating_sub(k))
                .sum();
            if rows == 0 {
                0.0
            } else {
                weight * share / rows as f32
            }
        })
        .collect()
}

/// [`accumulate_grads`] with the look-back heads optionally on: returns the answer loss and the look-back loss
/// (per sample, not scaled by `share`).
fn accumulate(
    model: &Model,
    sample: &TrainSample,
    dropout: Option<Dropout>,
    scale: f32,
    g: &mut Weights,
    mut aux: Option<LookBackStep<'_>>,
) -> Result<(f32, f32)> {
    let Forward { caches, labels, mut probs, loss } = forward(model, sample, dropout)?;
    let cfg = &model.config;
    let (d, m, v, h) = (cfg.n_embd, cfg.memory.num_mem_tokens, cfg.vocab_size, cfg.n_head);
    let w = &model.weights;
    // LM head: dlogits = scale · (softmax − onehot) / labels; dH = dlogits · W ; dW += dlogitsᵀ · H
    let n = labels.len();
    for (p, &(_, _, target)) in probs.chunks_exact_mut(v).zip(&labels) {
        p[target as usize] -= 1.0;
        p.iter_mut().for_each(|x| *x *= scale / n as f32);
    }
    let rows: Vec<f32> = labels.iter().flat_map(|&(s, row, _)| &caches[s].lnf[row * d..][..d]).copied().collect();
    let mut d_rows = vec![0.0f32; n * d];
    matmul(&probs, n, MatRef { w: head(w), n_in: v, n_out: d, layout: Layout::InOut }, None, &mut d_rows, false);
    let gw = if w.lm_head.is_some() { g.lm_head.as_mut().expect("same shapes") } else { &mut g.wte };
    gemm_strided(
        (v, d, n),
        gw,
        Strided::rows(0, d),
        true,
        &probs,
        Strided { offset: 0, rs: 1, cs: v },
        &rows,
        Strided::rows(0, d),
    );
    let cand = aux.as_ref().map(|_| Candidates::new(&sample.prompt, head(w), d));
    let mut d_cand = vec![0.0f32; cand.as_ref().map_or(0, |c| c.count() * d)];
    let scales = aux
        .as_ref()
        .map_or(Vec::new(), |a| look_back_scales(model, &caches, sample, a.heads.heads.len(), a.weight, a.share));
    let mut aux_loss = 0.0f64;
    let mut d_next_mem = vec![0.0f32; m * d]; // ∂loss/∂(memory the next segment reads)
    for (s, c) in caches.iter().enumerate().rev() {
        let t = c.t;
        let mut dlnf = vec![0.0f32; t * d];
        dlnf[(t - m) * d..].copy_from_slice(&d_next_mem);
        for (i, &(_, row, _)) in labels.iter().enumerate().filter(|(_, l)| l.0 == s) {
            dlnf[row * d..][..d].iter_mut().zip(&d_rows[i * d..][..d]).for_each(|(a, b)| *a += b);
        }
        if let (Some(a), Some(cand)) = (aux.as_mut(), cand.as_ref()) {
            let grads = SegmentGrads { dlnf: &mut dlnf, heads: &mut *a.grads, candidates: &mut d_cand };
            aux_loss += a.heads.segment_loss(&look_back_rows(model, c, s, sample), cand, &scales, Some(grads));
        }
        let mut dx = vec![0.0f32; t * d];
        ops::layer_norm_backward(&dlnf, &c.x_out, &c.lnf_stats.0, &c.lnf_stats.1, &w.ln_f, &mut g.ln_f, &mut dx);
        for (l, (lc, b)) in c.layers.iter().zip(&w.blocks).enumerate().rev() {
            let gb = &mut g.blocks[l];
            // x_out = x_mid + mlp_proj(gelu(c_fc(ln_2(x_mid))))
            let mut d_branch = dx.clone();
            apply(&mut d_branch, &lc.drop_resid_mlp);
            let mut d_act = vec![0.0; t * 4 * d];
            ops::linear_backward(&lc.act, t, &b.mlp_proj, &d_branch, &mut d_act, &mut gb.mlp_proj);
            let mut d_fc = vec![0.0; t * 4 * d];
            fast::gelu_backward(&lc.fc, &d_act, &mut d_fc);
            let mut d_ln2 = vec![0.0; t * d];
            ops::linear_backward(&lc.ln2, t, &b.c_fc, &d_fc, &mut d_ln2, &mut gb.c_fc);
            let mut dx_mid = dx;
            ops::layer_norm_backward(
                &d_ln2,
                &lc.x_mid,
                &lc.ln2_stats.0,
                &lc.ln2_stats.1,
                &b.ln_2,
                &mut gb.ln_2,
                &mut dx_mid,
            );
            // x_mid = x_in + attn_proj(attention(c_attn(ln_1(x_in))))
            let mut d_branch = dx_mid.clone();
            apply(&mut d_branch, &lc.drop_resid_attn);
            let mut d_att = vec![0.0; t * d];
            ops::linear_backward(&lc.att, t, &b.attn_proj, &d_branch, &mut d_att, &mut gb.attn_proj);
            let mut d_qkv = vec![0.0; t * 3 * d];
            ops::attention_backward(&lc.qkv, &lc.probs, lc.drop_attn.as_deref(), t, h, &d_att, &mut d_qkv);
            let mut d_ln1 = vec![0.0; t * d];
            ops::linear_backward(&lc.ln1, t, &b.c_attn, &d_qkv, &mut d_ln1, &mut gb.c_attn);
            dx = dx_mid;
            ops::layer_norm_backward(
                &d_ln1,
                &lc.x_in,
                &lc.ln1_stats.0,
                &lc.ln1_stats.1,
                &b.ln_1,
                &mut gb.ln_1,
                &mut dx,
            );
        }
        // x0 = dropout([mem | wte[tokens] | mem] + wpe[0..t])
        apply(&mut dx, &c.drop_embed);
        g.wpe[..t * d].iter_mut().zip(&dx).for_each(|(gv, dv)| *gv += dv);
        for (i, &tok) in c.tokens.iter().enumerate() {
            let row = &dx[(m + i) * d..][..d];
            g.wte[tok as usize * d..][..d].iter_mut().zip(row).for_each(|(gv, dv)| *gv += dv);
        }
        // the same memory is read at the start and written at the end: both rows' gradients
        let dmem: Vec<f32> = dx[..m * d].iter().zip(&dx[(t - m) * d..]).map(|(a, b)| a + b).collect();
        if s == 0 {
            g.memory.iter_mut().zip(&dmem).for_each(|(gv, dv)| *gv += dv);
        } else {
            d_next_mem = dmem;
        }
    }
    if let (Some(a), Some(cand)) = (&aux, &cand) {
        if a.lm_head {
            let gh = if w.lm_head.is_some() { g.lm_head.as_mut().expect("same shapes") } else { &mut g.wte };
            cand.scatter(&d_cand, gh, d);
        }
        aux_loss /= a.share as f64;
    }
    Ok((loss, aux_loss as f32))
}
