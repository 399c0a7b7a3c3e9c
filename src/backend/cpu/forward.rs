//! GPT-2 forward over new input rows (exact f32): embeddings + learned positions, pre-LN blocks, `ln_f`.

use super::associative;
use super::attention::{causal_attention, KvCache};
use super::kernels::Kernels;
use super::ops::{matmul, MatRef};
use super::pair;
use crate::model::weights::Layout;
use crate::model::Model;

/// From this many values on, GELU takes both cores: a hand-off to the spinning helper costs well under a µs, and
/// this many GELUs several µs (the bundled model's MLP has 73,728 values a segment).
const GELU_PAIR_MIN: usize = 1 << 14;

/// Activation buffers of the blocks, kept between segments so a step allocates nothing once warm.
#[derive(Default)]
pub struct Workspace {
    a: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    hidden: Vec<f32>,
}

/// `buf` resized to `n` (contents are overwritten by the caller).
fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n, 0.0);
    &mut buf[..n]
}

/// One piece of a segment's input rows.
pub enum Piece<'a> {
    /// Embedding rows fed as they are (memory), `k × d`.
    Rows(&'a [f32]),
    /// Token ids, looked up in `wte`.
    Tokens(&'a [u32]),
}

/// Input rows `[pieces…]` plus the position embeddings of positions `start ..`.
pub fn embed(model: &Model, pieces: &[Piece<'_>], start: usize) -> Vec<f32> {
    let d = model.config.n_embd;
    let w = &model.weights;
    let mut x = Vec::new();
    for p in pieces {
        match p {
            Piece::Rows(rows) => x.extend_from_slice(rows),
            Piece::Tokens(toks) => toks.iter().for_each(|&t| x.extend_from_slice(&w.wte[t as usize * d..][..d])),
        }
    }
    for (i, row) in x.chunks_exact_mut(d).enumerate() {
        row.iter_mut().zip(&w.wpe[(start + i) * d..][..d]).for_each(|(a, p)| *a += p);
    }
    x
}

/// ARMT's part of a pass over one stream: the associative state (all layers) that every block reads before it,
/// and how many last rows (the memory rows) update it after each block (0: read only).
pub struct AssociativePass<'a> {
    /// `n_layer · dk · (d + 1)` values (see [`crate::Config::associative_state_len`]).
    pub state: &'a mut [f32],
    /// Memory rows at the end of the input that write; 0 for the question segment and decoding.
    pub write_rows: usize,
}

/// Runs all blocks over the rows `x` of `caches.len()` independent streams (`[streams · n, d]`, stream after
/// stream, positions continuing each stream's cache) and returns the final residual stream; each stream's K/V are
/// appended to its cache. The linear layers run once over all rows (one GEMM for every stream); attention runs
/// per stream. ARMT models pass their one stream's `associative` state.
pub fn blocks(
    model: &Model,
    mut x: Vec<f32>,
    caches: &mut [KvCache],
    k: Kernels,
    ws: &mut Workspace,
    mut associative: Option<AssociativePass<'_>>,
) -> Vec<f32> {
    let cfg = &model.config;
    let (d, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
    let rows = x.len() / d;
    let n = rows / caches.len();
    let a = sized(&mut ws.a, rows * d);
    let qkv = sized(&mut ws.qkv, rows * 3 * d);
    let att = sized(&mut ws.att, rows * d);
    let hidden = sized(&mut ws.hidden, rows * 4 * d);
    let dk = cfg.memory.key_width();
    assert!(associative.is_none() || caches.len() == 1, "ARMT runs one stream per pass");
    for (l, b) in model.weights.blocks.iter().enumerate() {
        let memory = associative.as_mut().map(|p| {
            let (a, z) = associative::layers(p.state, dk, d).nth(l).expect("a state per layer");
            (&model.weights.associative[l], a, z, p.write_rows)
        });
        if let Some((w, a, z, _)) = &memory {
            associative::read(w, a, z, &mut x, d);
        }
        k.layer_norm(&x, &b.ln_1, eps, a);
        matmul(a, rows, b.c_attn.mat(), b.c_attn.b.as_deref(), qkv, false);
        for ((q, o), cache) in qkv.chunks_exact(n * 3 * d).zip(att.chunks_exact_mut(n * d)).zip(caches.iter_mut()) {
            causal_attention(q, n, cfg.n_head, cache, l, o, k);
        }
        matmul(att, rows, b.attn_proj.mat(), b.attn_proj.b.as_deref(), &mut x, true);
        k.layer_norm(&x, &b.ln_2, eps, a);
        matmul(a, rows, b.c_fc.mat(), b.c_fc.b.as_deref(), hidden, false);
        pair::for_halves(hidden, 4 * d, GELU_PAIR_MIN, |h| k.gelu(h));
        matmul(hidden, rows, b.mlp_proj.mat(), b.mlp_proj.b.as_deref(), &mut x, true);
        if let Some((w, a, z, write_rows)) = memory.filter(|m| m.3 > 0) {
            associative::write(w, &cfg.memory, a, z, &x[(rows - write_rows) * d..], d);
        }
    }
    caches.iter_mut().for_each(|c| c.len += n);
    x
}

/// `ln_f` of the given rows.
pub fn final_norm(model: &Model, rows: &[f32], k: Kernels) -> Vec<f32> {
    let mut out = vec![0.0; rows.len()];
    k.layer_norm(rows, &model.weights.ln_f, model.config.layer_norm_epsilon, &mut out);
    out
}

/// LM head logits of one normalised row: `h · Wᵀ` with the untied head or `wte`.
pub fn lm_head(model: &Model, h: &[f32], logits: &mut [f32]) {
    let w = model.weights.lm_head.as_deref().unwrap_or(&model.weights.wte);
    let head = MatRef { w, n_in: model.config.n_embd, n_out: model.config.vocab_size, layout: Layout::OutIn };
    matmul(h, 1, head, None, logits, false);
}
