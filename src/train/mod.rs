//! Training (RMT-SPEC §1.5–1.6): the loss of one sample and its exact gradient with full backpropagation through
//! time (k2 = −1). Every segment, the partial last one too, runs `[mem | segment | mem]` with write memory; the
//! next segment's memory is `ln_f` at the write rows; the loss is the mean cross-entropy of the answer tokens and
//! EOS only. Gradients flow back through every memory hand-off into the learned `memory`. Optional training-only
//! look-back heads ([`look_back`]) add a dense auxiliary loss on the context rows. ARMT (RMT-SPEC §3.1) instead
//! carries its associative state through every block of every segment; its last segment only reads it. RMT-R is
//! not trained yet. The element-wise passes use the fast CPU kernels (polynomial `tanh` and `exp`, within 2 ulp of
//! libm), as inference does.

mod associative;
pub mod look_back;
pub mod ops;
pub mod optim;
pub mod probes;
pub mod qa1;
mod segment;
pub mod trainer;

use crate::backend::cpu::ops::{gemm_strided, matmul, MatRef, Strided};
use crate::backend::cpu::{fast, Kernels, Scratch};
use crate::error::{Error, Result};
use crate::model::weights::{Layout, Weights};
use crate::model::{MemoryKind, Model};
use look_back::{Candidates, LookBack, SegmentGrads, SegmentRows};
use segment::{forward_segment, segment_backward, SegmentCache, SegmentMemory};

/// One training sample: `prompt` (context + question + GEN) and the answer tokens (EOS is appended), with
/// optional memory probes.
#[derive(Clone, Debug)]
pub struct TrainSample {
    /// Context, question and the GEN marker.
    pub prompt: Vec<u32>,
    /// Answer tokens, without EOS.
    pub answer: Vec<u32>,
    /// Questions asked of the memory between segments (training only; see [`Probe`]).
    pub probes: Vec<Probe>,
}

impl TrainSample {
    /// A sample without probes.
    pub fn new(prompt: Vec<u32>, answer: Vec<u32>) -> Self {
        TrainSample { prompt, answer, probes: Vec::new() }
    }
}

/// A memory probe: a question put to the memory that segment `after` writes, read as a one-segment
/// `[mem | prompt answer EOS | mem]` beside the sample's next segment. Its loss, `weight ×` the mean
/// cross-entropy of its answer and EOS, is added to the sample's: every memory hand-off gets a direct target
/// (what the stream has said so far), not only the one the final question reaches through BPTT. The probes
/// never touch the sample's own segments; their gradient joins the memory's on its way back.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The segment whose written memory is asked (0-based; any segment of the sample).
    pub after: usize,
    /// Question and GEN.
    pub prompt: Vec<u32>,
    /// Answer tokens, without EOS.
    pub answer: Vec<u32>,
    /// Weight of its mean cross-entropy in the sample's loss.
    pub weight: f32,
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

/// The LM head as the right-hand side of `h · Wᵀ` (untied head or `wte`), `[V, d]`.
fn head(w: &Weights) -> &[f32] {
    w.lm_head.as_deref().unwrap_or(&w.wte)
}

/// Where each labelled position is: (segment, row in the segment, target token).
fn labels(model: &Model, sample: &TrainSample) -> Vec<Label> {
    let (seg, read) = (model.config.memory.segment_size, model.config.memory.read_rows());
    let mut input = sample.prompt.clone();
    input.extend(&sample.answer);
    input.push(model.config.eos_token_id);
    (sample.prompt.len() - 1..input.len() - 1).map(|p| (p / seg, read + p % seg, input[p + 1])).collect()
}

/// A labelled position: (segment, row in the segment, target token).
type Label = (usize, usize, u32);

/// One probe's forward: the segment it asks after, its weight, its segment and its labelled rows `(row, target)`.
struct ProbeForward {
    after: usize,
    weight: f32,
    cache: SegmentCache,
    labels: Vec<(usize, u32)>,
}

impl ProbeForward {
    /// `ln_f` at the labelled rows, `[labels, d]`.
    fn rows(&self, d: usize) -> impl Iterator<Item = &f32> {
        self.labels.iter().flat_map(move |&(row, _)| &self.cache.lnf[row * d..][..d])
    }
}

/// The forward pass of one sample: the caches of the segments from `first` on (the gradient's window: all of
/// them, unless truncated by `k2`), the labels, and the softmax of the LM head at every label
/// (`[labels, vocab]`, which the backward reuses); the probes' likewise, all probes' labelled rows stacked in
/// order in `probe_probs` (one LM-head GEMM for them all: the head is 50,257 rows, and a GEMM per probe would
/// read it, and write its gradient, once per probe).
struct Forward {
    first: usize,
    caches: Vec<SegmentCache>,
    labels: Vec<Label>,
    probs: Vec<f32>,
    loss: f32,
    probes: Vec<ProbeForward>,
    probe_probs: Vec<f32>,
    probe_loss: f32,
}

/// `prompt`, `answer` and EOS: the tokens a sample (or a probe) runs, checked against the vocabulary.
fn with_answer(cfg: &crate::model::Config, prompt: &[u32], answer: &[u32]) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::Input("a training sample needs a prompt ending with GEN".into()));
    }
    let mut input = prompt.to_vec();
    input.extend(answer);
    input.push(cfg.eos_token_id);
    match input.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        Some(&t) => Err(Error::Input(format!("token {t} is outside the vocabulary ({})", cfg.vocab_size))),
        None => Ok(input),
    }
}

/// The LM head on `rows` (`[n, d]`), as one GEMM: the softmax per row, and the summed cross-entropy of `targets`.
fn head_softmax(model: &Model, rows: &[f32], targets: impl Iterator<Item = u32>) -> (Vec<f32>, f64) {
    let (d, v) = (model.config.n_embd, model.config.vocab_size);
    let n = rows.len() / d;
    let mut probs = vec![0.0; n * v];
    matmul(rows, n, head_mat(&model.weights, &model.config), None, &mut probs, false);
    let mut nll = 0.0f64;
    for (p, target) in probs.chunks_exact_mut(v).zip(targets) {
        fast::softmax(p);
        nll -= (p[target as usize] as f64).ln();
    }
    (probs, nll)
}

/// Forward over all segments, then the LM head on the label rows only; then each probe from the memory it asks.
/// RMT runs every segment with write memory (the last one's write is unused); ARMT's last segment only reads,
/// as the question segment does in inference. With `k2` (the authors' BPTT unroll length; `None` is their −1,
/// full BPTT) only the last `k2` segments keep caches for the backward pass, or more when the answer's labels
/// start earlier: the memory entering them is a constant, and probes asking about earlier segments are not run.
/// Without dropout the earlier segments run through the inference engine's fast step.
fn forward(model: &Model, sample: &TrainSample, dropout: Option<Dropout>, k2: Option<usize>) -> Result<Forward> {
    let cfg = &model.config;
    let (seg, m, d, v) = (cfg.memory.segment_size, cfg.memory.num_mem_tokens, cfg.n_embd, cfg.vocab_size);
    let input = with_answer(cfg, &sample.prompt, &sample.answer)?;
    let segments = input.len().div_ceil(seg);
    let labels = labels(model, sample);
    let first = k2.map_or(0, |k| segments.saturating_sub(k.max(1)).min(labels[0].0));
    let mut caches = Vec::with_capacity(segments - first);
    let mut states_after = std::collections::HashMap::new(); // ARMT: the state after each segment a probe asks

    // Segments before the window keep nothing for the backward pass: without dropout they run through the inference
    // engine's fast step, which builds no caches and reuses its buffers (with dropout, through the training forward,
    // for its masks).
    let mut prefix = (dropout.is_none() && first > 0).then(Scratch::default);
    let engine = (model, Kernels::Fast);
    match cfg.memory.kind {
        MemoryKind::Rmt => {
            let mut mem = model.weights.memory.clone();
            for (s, chunk) in input.chunks(seg).enumerate() {
                if let (Some(scratch), true) = (prefix.as_mut(), s < first) {
                    let mut next = vec![0.0; mem.len()];
                    scratch.write_segment(engine, &mem, chunk, &mem, &mut next);
                    mem = next;
                    continue;
                }
                let c = forward_segment(model, SegmentMemory::Rows(&mem), chunk, dropout.map(|d| (d, s)));
                mem = c.lnf[(c.t - m) * d..].to_vec();
                if s >= first {
                    caches.push(c);
                }
            }
        }
        MemoryKind::Armt => {
            let mut state = vec![0.0; cfg.associative_state_len()];
            for (s, chunk) in input.chunks(seg).enumerate() {
                if let (Some(scratch), true) = (prefix.as_mut(), s < first) {
                    let read = state.clone();
                    scratch.write_segment(engine, &read, chunk, &model.weights.memory[..m * d], &mut state);
                    continue;
                }
                let write_rows = if s + 1 < segments { m } else { 0 };
                let memory = SegmentMemory::Associative { state: &mut state, write_rows };
                let c = forward_segment(model, memory, chunk, dropout.map(|d| (d, s)));
                if s >= first {
                    caches.push(c);
                }
                if s >= first && sample.probes.iter().any(|p| p.after == s) {
                    states_after.insert(s, state.clone());
                }
            }
        }
        MemoryKind::RmtR => {
            return Err(Error::Input("training supports RMT and ARMT models (RMT-R is not implemented yet)".into()))
        }
    }
    let rows: Vec<f32> =
        labels.iter().flat_map(|&(s, row, _)| &caches[s - first].lnf[row * d..][..d]).copied().collect();
    let (probs, nll) = head_softmax(model, &rows, labels.iter().map(|l| l.2));
    let mut probes = Vec::with_capacity(sample.probes.len());
    for (i, p) in sample.probes.iter().enumerate() {
        if p.after >= segments {
            return Err(Error::Input(format!("a probe asks after segment {}; the sample has {segments}", p.after)));
        }
        let Some(asked) = p.after.checked_sub(first).map(|a| &caches[a]) else { continue };
        let input = with_answer(cfg, &p.prompt, &p.answer)?;
        if input.len() > seg {
            return Err(Error::Input(format!("a probe of {} tokens does not fit a segment of {seg}", input.len())));
        }
        let drop = dropout.map(|d| (d, segments + i));
        let cache = match states_after.get(&p.after) {
            // ARMT: the probe only reads the state, as a question does
            Some(state) => {
                let memory = SegmentMemory::Associative { state: &mut state.clone(), write_rows: 0 };
                forward_segment(model, memory, &input, drop)
            }
            None => forward_segment(model, SegmentMemory::Rows(&asked.lnf[(asked.t - m) * d..]), &input, drop),
        };
        let read = cache.read_rows;
        let labels: Vec<(usize, u32)> =
            (p.prompt.len() - 1..input.len() - 1).map(|q| (read + q, input[q + 1])).collect();
        probes.push(ProbeForward { after: p.after, weight: p.weight, cache, labels });
    }
    let rows: Vec<f32> = probes.iter().flat_map(|pf| pf.rows(d)).copied().collect();
    let (probe_probs, _) = head_softmax(model, &rows, probes.iter().flat_map(|pf| pf.labels.iter().map(|l| l.1)));
    let mut probe_loss = 0.0f64;
    let mut at = 0;
    for pf in &probes {
        let nll: f64 =
            pf.labels.iter().enumerate().map(|(i, l)| -(probe_probs[(at + i) * v + l.1 as usize] as f64).ln()).sum();
        probe_loss += pf.weight as f64 * nll / pf.labels.len() as f64;
        at += pf.labels.len();
    }
    let loss = (nll / labels.len() as f64) as f32;
    Ok(Forward { first, caches, loss, labels, probs, probes, probe_probs, probe_loss: probe_loss as f32 })
}

/// The LM head as the right-hand side of `h · Wᵀ`.
fn head_mat<'a>(w: &'a Weights, cfg: &crate::model::Config) -> MatRef<'a> {
    MatRef { w: head(w), n_in: cfg.n_embd, n_out: cfg.vocab_size, layout: Layout::OutIn }
}

/// Back through the LM head at `rows` (`[n, d]`): `dlogits` (`[n, vocab]`) goes into the head's gradient, and
/// ∂/∂rows comes back.
fn head_backward(model: &Model, g: &mut Weights, dlogits: &[f32], rows: &[f32]) -> Vec<f32> {
    let (w, d, v) = (&model.weights, model.config.n_embd, model.config.vocab_size);
    let n = rows.len() / d;
    // dH = dlogits · W ; dW += dlogitsᵀ · H
    let mut d_rows = vec![0.0f32; n * d];
    matmul(dlogits, n, MatRef { w: head(w), n_in: v, n_out: d, layout: Layout::InOut }, None, &mut d_rows, false);
    let gw = if w.lm_head.is_some() { g.lm_head.as_mut().expect("same shapes") } else { &mut g.wte };
    let rows_view = Strided::rows(0, d);
    gemm_strided((v, d, n), gw, rows_view, true, dlogits, Strided { offset: 0, rs: 1, cs: v }, rows, rows_view);
    d_rows
}

/// Turns softmax rows into `scale ·` (softmax − one-hot of the target): the cross-entropy's ∂/∂logits.
fn softmax_to_dlogits(probs: &mut [f32], v: usize, targets: impl Iterator<Item = u32>, scale: f32) {
    for (p, target) in probs.chunks_exact_mut(v).zip(targets) {
        p[target as usize] -= 1.0;
        p.iter_mut().for_each(|x| *x *= scale);
    }
}

/// The loss of `sample` (forward only): the answer's, plus its probes' when it has any.
pub fn loss(model: &Model, sample: &TrainSample) -> Result<f32> {
    loss_with(model, sample, None)
}

/// The loss of `sample` with optional dropout.
pub fn loss_with(model: &Model, sample: &TrainSample, dropout: Option<Dropout>) -> Result<f32> {
    let f = forward(model, sample, dropout, None)?;
    Ok(f.loss + f.probe_loss)
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

/// [`loss_and_grads`] with backpropagation through the last `k2` segments only (the authors' `k2`): the memory
/// entering them is a constant, probes asking about earlier segments are left out. The window grows to the
/// answer's first segment if it starts earlier.
pub fn loss_and_grads_truncated(model: &Model, sample: &TrainSample, k2: usize) -> Result<(f32, Weights)> {
    let mut g = model.weights.zeros_like();
    let l = accumulate(model, sample, (None, Some(k2)), (1.0, 1.0), &mut g, None)?;
    Ok((l.answer + l.probes, g))
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
    let l = accumulate(model, sample, (dropout, None), (scale, scale), g, None)?;
    Ok(l.answer + l.probes)
}

/// The answer loss plus the probes' and the look-back heads' losses (see [`look_back`]) of `sample`, forward only.
pub fn look_back_loss(model: &Model, heads: &LookBack, weight: f32, sample: &TrainSample) -> Result<f32> {
    let f = forward(model, sample, None, None)?;
    let cand = Candidates::new(&sample.prompt, head(&model.weights), model.config.n_embd);
    let scales = look_back_scales(model, &f.caches, 0, sample, heads.heads.len(), weight, 1.0);
    let mut aux = 0.0f64;
    for (s, c) in f.caches.iter().enumerate() {
        aux += heads.segment_loss(&look_back_rows(model, c, s, sample), &cand, &scales, None);
    }
    Ok(f.loss + f.probe_loss + aux as f32)
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
    let l = accumulate(model, sample, (None, None), (1.0, 1.0), &mut g, Some(aux))?;
    Ok((l.answer + l.probes + l.look_back, g, gh))
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
    SegmentRows { lnf: &c.lnf, mem_rows: c.read_rows, tokens: &c.tokens, context }
}

/// The weight of one row of head k (index k − 1): `weight · share` over the sample's rows at distance k, so each
/// head's loss is a mean over the sample's context rows (those of `caches`, segments `first`, `first + 1`, …).
fn look_back_scales(
    model: &Model,
    caches: &[SegmentCache],
    first: usize,
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
                .map(|(i, c)| look_back_rows(model, c, first + i, sample).context.saturating_sub(k))
                .sum();
            if rows == 0 {
                0.0
            } else {
                weight * share / rows as f32
            }
        })
        .collect()
}

/// One sample's losses, each per sample (not scaled by the batch).
pub(crate) struct SampleLosses {
    /// Mean cross-entropy of the answer and EOS.
    pub answer: f32,
    /// Σ over the probes of weight × mean cross-entropy.
    pub probes: f32,
    /// The look-back heads' loss (0 without them).
    pub look_back: f32,
}

/// [`accumulate_grads`] with the look-back heads optionally on and BPTT optionally truncated to the last `k2`
/// segments (see [`forward`]). `scales` is (the answer's, the probes'): the factors of their gradients, a
/// sample's share of the batch for each.
pub(crate) fn accumulate(
    model: &Model,
    sample: &TrainSample,
    (dropout, k2): (Option<Dropout>, Option<usize>),
    scales: (f32, f32),
    g: &mut Weights,
    mut aux: Option<LookBackStep<'_>>,
) -> Result<SampleLosses> {
    let Forward { first, caches, labels, mut probs, loss, probes, mut probe_probs, probe_loss } =
        forward(model, sample, dropout, k2)?;
    let cfg = &model.config;
    let (d, m, v) = (cfg.n_embd, cfg.memory.num_mem_tokens, cfg.vocab_size);
    let w = &model.weights;
    let n = labels.len();
    softmax_to_dlogits(&mut probs, v, labels.iter().map(|l| l.2), scales.0 / n as f32);
    let rows: Vec<f32> =
        labels.iter().flat_map(|&(s, row, _)| &caches[s - first].lnf[row * d..][..d]).copied().collect();
    let d_rows = head_backward(model, g, &probs, &rows);
    // each probe's gradient reaches the memory it asked: what segment `after` wrote (ARMT: the state after it)
    let armt = cfg.memory.kind == MemoryKind::Armt;
    let mut d_written = vec![vec![0.0f32; cfg.written_len()]; if probes.is_empty() { 0 } else { caches.len() }];
    let mut at = 0;
    for pf in &probes {
        let scale = scales.1 * pf.weight / pf.labels.len() as f32;
        let n = pf.labels.len();
        softmax_to_dlogits(&mut probe_probs[at * v..][..n * v], v, pf.labels.iter().map(|l| l.1), scale);
        at += n;
    }
    let probe_rows: Vec<f32> = probes.iter().flat_map(|pf| pf.rows(d)).copied().collect();
    let probe_d_rows = if probes.is_empty() { Vec::new() } else { head_backward(model, g, &probe_probs, &probe_rows) };
    let mut at = 0;
    for pf in &probes {
        let d_rows = &probe_d_rows[at * d..][..pf.labels.len() * d];
        at += pf.labels.len();
        let mut dlnf = vec![0.0f32; pf.cache.t * d];
        for (&(row, _), dr) in pf.labels.iter().zip(d_rows.chunks_exact(d)) {
            dlnf[row * d..][..d].copy_from_slice(dr);
        }
        if armt {
            let mut d_read_state = vec![0.0f32; cfg.written_len()];
            segment_backward(model, &pf.cache, dlnf, g, Some(&mut d_read_state));
            d_written[pf.after - first].iter_mut().zip(&d_read_state).for_each(|(a, r)| *a += r);
        } else {
            let (d_read, d_write) = segment_backward(model, &pf.cache, dlnf, g, None);
            d_written[pf.after - first].iter_mut().zip(d_read.iter().zip(&d_write)).for_each(|(a, (r, w))| *a += r + w);
        }
    }
    let cand = aux.as_ref().map(|_| Candidates::new(&sample.prompt, head(w), d));
    let mut d_cand = vec![0.0f32; cand.as_ref().map_or(0, |c| c.count() * d)];
    let lb_scales = aux.as_ref().map_or(Vec::new(), |a| {
        look_back_scales(model, &caches, first, sample, a.heads.heads.len(), a.weight, a.share)
    });
    let mut aux_loss = 0.0f64;
    let mut d_next_mem = vec![0.0f32; if armt { 0 } else { m * d }]; // RMT: ∂loss/∂(memory the next segment reads)
    let mut d_state = vec![0.0f32; cfg.associative_state_len()]; // ARMT: ∂loss/∂(state the next segment reads)
    for (i, c) in caches.iter().enumerate().rev() {
        let (s, t) = (first + i, c.t);
        let mut dlnf = vec![0.0f32; t * d];
        let asked = d_written.get(i);
        if armt {
            // the probes read the state this segment left, as the next segment does
            asked.into_iter().for_each(|a| d_state.iter_mut().zip(a).for_each(|(x, y)| *x += y));
        } else {
            dlnf[(t - m) * d..].copy_from_slice(&d_next_mem);
            asked.into_iter().for_each(|a| dlnf[(t - m) * d..].iter_mut().zip(a).for_each(|(x, y)| *x += y));
        }
        for (j, &(_, row, _)) in labels.iter().enumerate().filter(|(_, l)| l.0 == s) {
            dlnf[row * d..][..d].iter_mut().zip(&d_rows[j * d..][..d]).for_each(|(a, b)| *a += b);
        }
        if let (Some(a), Some(cand)) = (aux.as_mut(), cand.as_ref()) {
            let grads = SegmentGrads { dlnf: &mut dlnf, heads: &mut *a.grads, candidates: &mut d_cand };
            aux_loss += a.heads.segment_loss(&look_back_rows(model, c, s, sample), cand, &lb_scales, Some(grads));
        }
        let (d_read, d_write) = segment_backward(model, c, dlnf, g, armt.then_some(&mut d_state[..]));
        if armt {
            // every writing segment embeds the learned memory rows; the state before the window is a constant
            g.memory.iter_mut().zip(&d_write).for_each(|(gv, dv)| *gv += dv);
        } else if s == 0 {
            g.memory.iter_mut().zip(d_read.iter().zip(&d_write)).for_each(|(gv, (r, w))| *gv += r + w);
        } else if i > 0 {
            d_next_mem = d_read.iter().zip(&d_write).map(|(r, w)| r + w).collect();
        } // else: the memory entering a truncated window is a constant
    }
    if let (Some(a), Some(cand)) = (&aux, &cand) {
        if a.lm_head {
            let gh = if w.lm_head.is_some() { g.lm_head.as_mut().expect("same shapes") } else { &mut g.wte };
            cand.scatter(&d_cand, gh, d);
        }
        aux_loss /= a.share as f64;
    }
    Ok(SampleLosses { answer: loss, probes: probe_loss, look_back: aux_loss as f32 })
}
