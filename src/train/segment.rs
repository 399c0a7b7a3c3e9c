//! One segment of a training sample: its forward pass, keeping what the backward needs, and the backward from
//! ∂/∂ its `ln_f` rows. The rows are `[read | tokens | write]`: RMT reads and writes the memory rows, ARMT
//! (`[tokens | write]`, or the tokens alone in the question segment) reads and writes its associative state in
//! every block instead (see [`super::associative`]).

use super::associative::{self, LayerMemory};
use super::{apply, ops, Dropout};
use crate::backend::cpu::fast;
use crate::backend::cpu::forward::{embed, Piece};
use crate::backend::cpu::ops::matmul;
use crate::model::weights::{Block, Weights};
use crate::model::Model;

/// What one block's backward needs.
pub(super) struct LayerCache {
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
pub(super) struct SegmentCache {
    pub tokens: Vec<u32>,
    /// Rows: read memory, tokens, write memory.
    pub t: usize,
    pub read_rows: usize,
    pub write_rows: usize,
    layers: Vec<LayerCache>,
    /// ARMT: each block's read and write; empty for RMT.
    memory: Vec<LayerMemory>,
    x_out: Vec<f32>,
    pub lnf: Vec<f32>,
    lnf_stats: (Vec<f32>, Vec<f32>),
    drop_embed: Option<Vec<f32>>,
}

/// The memory of a segment: RMT's rows, read before the tokens and written after them, or ARMT's associative
/// state (all layers), read by every block and updated by the `write_rows` learned rows after the tokens.
pub(super) enum SegmentMemory<'a> {
    Rows(&'a [f32]),
    Associative { state: &'a mut [f32], write_rows: usize },
}

/// Dropout's masks for one segment: the run's [`Dropout`] and the segment's index.
pub(super) type SegmentDropout = Option<(Dropout, usize)>;

pub(super) fn forward_segment(
    model: &Model,
    memory: SegmentMemory<'_>,
    tokens: &[u32],
    drop: SegmentDropout,
) -> SegmentCache {
    let cfg = &model.config;
    let (d, eps, h) = (cfg.n_embd, cfg.layer_norm_epsilon, cfg.n_head);
    let write_memory = &model.weights.memory;
    let (mut x, read_rows, write_rows, mut state) = match memory {
        SegmentMemory::Rows(mem) => {
            let x = embed(model, &[Piece::Rows(mem), Piece::Tokens(tokens), Piece::Rows(mem)], 0);
            (x, mem.len() / d, mem.len() / d, None)
        }
        SegmentMemory::Associative { state, write_rows } => {
            let rows = &write_memory[..write_rows * d];
            (embed(model, &[Piece::Tokens(tokens), Piece::Rows(rows)], 0), 0, write_rows, Some(state))
        }
    };
    let t = x.len() / d;
    let mask = |layer: usize, site: u64, n: usize| drop.map(|(dr, seg)| dr.mask(seg, layer, site, n));
    let drop_embed = mask(0, 0, t * d);
    apply(&mut x, &drop_embed);
    let (mut layers, mut memory) = (Vec::with_capacity(cfg.n_layer), Vec::new());
    for (l, b) in model.weights.blocks.iter().enumerate() {
        let mut read = state.as_deref_mut().map(|s| associative::read(model, l, s, &mut x));
        let drop = [mask(l, 1, h * t * t), mask(l, 2, t * d), mask(l, 3, t * d)];
        let (cache, x_out) = block_forward(b, x, t, h, eps, drop);
        if let (Some(s), Some(r), true) = (state.as_deref_mut(), read.as_mut(), write_rows > 0) {
            associative::write(model, l, s, &x_out[(t - write_rows) * d..], r);
        }
        memory.extend(read);
        layers.push(cache);
        x = x_out;
    }
    let stats = || (vec![0.0; t], vec![0.0; t]);
    let (mut lnf, mut lnf_stats) = (vec![0.0; t * d], stats());
    ops::layer_norm(&x, &model.weights.ln_f, eps, &mut lnf, &mut lnf_stats.0, &mut lnf_stats.1);
    SegmentCache {
        tokens: tokens.to_vec(),
        t,
        read_rows,
        write_rows,
        layers,
        memory,
        x_out: x,
        lnf,
        lnf_stats,
        drop_embed,
    }
}

/// One pre-LN block over `t` rows from position 0 with dropout masks `[attention probabilities, attention
/// branch, MLP branch]`: its cache and output.
fn block_forward(
    b: &Block,
    x: Vec<f32>,
    t: usize,
    h: usize,
    eps: f32,
    [drop_attn, drop_resid_attn, drop_resid_mlp]: [Option<Vec<f32>>; 3],
) -> (LayerCache, Vec<f32>) {
    let d = x.len() / t;
    let stats = || (vec![0.0; t], vec![0.0; t]);
    let (mut ln1, mut ln1_stats) = (vec![0.0; t * d], stats());
    ops::layer_norm(&x, &b.ln_1, eps, &mut ln1, &mut ln1_stats.0, &mut ln1_stats.1);
    let mut qkv = vec![0.0; t * 3 * d];
    matmul(&ln1, t, b.c_attn.mat(), b.c_attn.b.as_deref(), &mut qkv, false);
    let (mut att, mut probs) = (vec![0.0; t * d], vec![0.0; h * t * t]);
    ops::attention(&qkv, t, h, &mut att, &mut probs, drop_attn.as_deref());
    // x_mid = x + dropout(att·W + b)
    let mut branch = vec![0.0; t * d];
    matmul(&att, t, b.attn_proj.mat(), b.attn_proj.b.as_deref(), &mut branch, false);
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
    apply(&mut branch, &drop_resid_mlp);
    let x_out: Vec<f32> = x_mid.iter().zip(&branch).map(|(a, b)| a + b).collect();
    let cache = LayerCache {
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
    };
    (cache, x_out)
}

/// Back through one segment from ∂/∂ its `ln_f` rows: adds every weight's gradient into `g` and returns
/// ∂/∂ its read rows and ∂/∂ its write rows (RMT embeds the memory in both; ARMT's write rows are the learned
/// memory). ARMT passes `d_state`, ∂/∂ the state after the segment, which leaves as ∂/∂ the state before it.
pub(super) fn segment_backward(
    model: &Model,
    c: &SegmentCache,
    dlnf: Vec<f32>,
    g: &mut Weights,
    mut d_state: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let (w, cfg) = (&model.weights, &model.config);
    let (d, h, t) = (cfg.n_embd, cfg.n_head, c.t);
    let mut dx = vec![0.0f32; t * d];
    ops::layer_norm_backward(&dlnf, &c.x_out, &c.lnf_stats.0, &c.lnf_stats.1, &w.ln_f, &mut g.ln_f, &mut dx);
    for (l, (lc, b)) in c.layers.iter().zip(&w.blocks).enumerate().rev() {
        let memory = c.memory.get(l);
        if let (Some(mem), Some(ds)) = (memory, d_state.as_deref_mut()) {
            associative::write_backward(model, l, mem, g, ds, &mut dx[(t - c.write_rows) * d..]);
        }
        dx = block_backward(b, lc, dx, t, h, &mut g.blocks[l]);
        if let (Some(mem), Some(ds)) = (memory, d_state.as_deref_mut()) {
            associative::read_backward(model, l, mem, g, ds, &mut dx);
        }
    }
    // x0 = dropout([read | wte[tokens] | write] + wpe[0..t])
    apply(&mut dx, &c.drop_embed);
    g.wpe[..t * d].iter_mut().zip(&dx).for_each(|(gv, dv)| *gv += dv);
    for (i, &tok) in c.tokens.iter().enumerate() {
        let row = &dx[(c.read_rows + i) * d..][..d];
        g.wte[tok as usize * d..][..d].iter_mut().zip(row).for_each(|(gv, dv)| *gv += dv);
    }
    (dx[..c.read_rows * d].to_vec(), dx[(t - c.write_rows) * d..].to_vec())
}

/// Back through one block from ∂/∂ its output: adds its weights' gradients into `gb` and returns ∂/∂ its input.
fn block_backward(b: &Block, lc: &LayerCache, dx: Vec<f32>, t: usize, h: usize, gb: &mut Block) -> Vec<f32> {
    let d = dx.len() / t;
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
    ops::layer_norm_backward(&d_ln2, &lc.x_mid, &lc.ln2_stats.0, &lc.ln2_stats.1, &b.ln_2, &mut gb.ln_2, &mut dx_mid);
    // x_mid = x_in + attn_proj(attention(c_attn(ln_1(x_in))))
    let mut d_branch = dx_mid.clone();
    apply(&mut d_branch, &lc.drop_resid_attn);
    let mut d_att = vec![0.0; t * d];
    ops::linear_backward(&lc.att, t, &b.attn_proj, &d_branch, &mut d_att, &mut gb.attn_proj);
    let mut d_qkv = vec![0.0; t * 3 * d];
    ops::attention_backward(&lc.qkv, &lc.probs, lc.drop_attn.as_deref(), t, h, &d_att, &mut d_qkv);
    let mut d_ln1 = vec![0.0; t * d];
    ops::linear_backward(&lc.ln1, t, &b.c_attn, &d_qkv, &mut d_ln1, &mut gb.c_attn);
    let mut dx = dx_mid;
    ops::layer_norm_backward(&d_ln1, &lc.x_in, &lc.ln1_stats.0, &lc.ln1_stats.1, &b.ln_1, &mut gb.ln_1, &mut dx);
    dx
}
