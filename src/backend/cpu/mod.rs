//! The CPU backend: the exact f32 reference (the oracle every faster path is compared with) and the fast kernels
//! behind the same step.

pub mod associative;
mod attention;
pub(crate) mod fast;
pub(crate) mod forward;
mod kernels;
pub mod ops;
mod pair;
mod retrieval;

use std::sync::Arc;

use attention::KvCache;
pub use forward::Piece;
use forward::{AssociativePass, Workspace};
pub use kernels::Kernels;
use retrieval::StoreCache;

use super::{SegmentInput, Step};
use crate::error::Result;
use crate::model::weights::Retrieval;
use crate::model::{MemoryKind, Model};
use crate::store::{RowStore, StoreConfig};

/// The session only asks RMT-R models for retrieval.
fn retrieval(model: &Model) -> &Retrieval {
    model.weights.retrieval.as_ref().expect("retrieval is only called for RMT-R models")
}

/// One stream's segment step on the CPU.
pub struct CpuStep {
    model: Arc<Model>,
    kernels: Kernels,
    scratch: Scratch,
    store: StoreCache,
    /// ARMT: the associative state the question segment and its decoding read.
    decode_state: Vec<f32>,
}

/// What the passes of a step keep between segments besides the model: one KV cache per stream of a batched step
/// (the first is the single stream's) and the blocks' buffers. Training runs the segments before its BPTT window
/// through [`Scratch::write_segment`] too (they keep nothing for the backward pass).
#[derive(Default)]
pub(crate) struct Scratch {
    caches: Vec<KvCache>,
    work: Workspace,
}

impl Scratch {
    /// Runs each stream's `pieces` from position 0 in a fresh cache, all streams in one pass; returns the final
    /// residual rows, stream after stream.
    fn run(
        &mut self,
        model: &Model,
        kernels: Kernels,
        streams: &[&[Piece<'_>]],
        associative: Option<AssociativePass<'_>>,
    ) -> Vec<f32> {
        let layers = model.config.n_layer;
        self.caches.resize_with(self.caches.len().max(streams.len()), || KvCache::new(layers));
        let caches = &mut self.caches[..streams.len()];
        caches.iter_mut().for_each(KvCache::clear);
        let x: Vec<f32> = streams.iter().flat_map(|p| forward::embed(model, p, 0)).collect();
        forward::blocks(model, x, caches, kernels, &mut self.work, associative)
    }

    /// [`Step::write_segment`] of `model` through `kernels`.
    pub(crate) fn write_segment(
        &mut self,
        (model, kernels): (&Model, Kernels),
        read: &[f32],
        tokens: &[u32],
        write: &[f32],
        out: &mut [f32],
    ) {
        if model.config.memory.kind == MemoryKind::Armt {
            // `[tokens | memory rows]`; the memory rows update the state, which is the whole output
            out.copy_from_slice(read);
            let write_rows = write.len() / model.config.n_embd;
            let pass = Some(AssociativePass { state: out, write_rows });
            self.run(model, kernels, &[&[Piece::Tokens(tokens), Piece::Rows(write)]], pass);
            return;
        }
        let h = self.run(model, kernels, &[&[Piece::Rows(read), Piece::Tokens(tokens), Piece::Rows(write)]], None);
        out.copy_from_slice(&forward::final_norm(model, &h[h.len() - write.len()..], kernels));
    }
}

impl CpuStep {
    /// A step for `model` with empty caches, using `kernels`; `store` configures RMT-R v1's key/value caches.
    pub fn new(model: Arc<Model>, kernels: Kernels, store: &StoreConfig) -> Self {
        let scratch = Scratch { caches: vec![KvCache::new(model.config.n_layer)], work: Workspace::default() };
        let store = StoreCache::new(model.weights.retrieval.as_ref(), model.config.n_embd, store);
        CpuStep { model, kernels, scratch, store, decode_state: Vec::new() }
    }

    fn run(&mut self, streams: &[&[Piece<'_>]], associative: Option<AssociativePass<'_>>) -> Vec<f32> {
        self.scratch.run(&self.model, self.kernels, streams, associative)
    }

    fn is_armt(&self) -> bool {
        self.model.config.memory.kind == MemoryKind::Armt
    }

    fn final_norm(&self, rows: &[f32]) -> Vec<f32> {
        forward::final_norm(&self.model, rows, self.kernels)
    }
}

impl Step for CpuStep {
    fn write_segment(&mut self, read: &[f32], tokens: &[u32], write: &[f32], out: &mut [f32]) -> Result<()> {
        self.scratch.write_segment((&self.model, self.kernels), read, tokens, write, out);
        Ok(())
    }

    fn write_segments(&mut self, segments: &[SegmentInput<'_>], out: &mut [f32]) -> Result<()> {
        if self.is_armt() {
            // each stream's state is updated inside every block: the streams run one after the other
            return super::write_each(self, segments, out);
        }
        let pieces: Vec<[Piece<'_>; 3]> =
            segments.iter().map(|s| [Piece::Rows(s.read), Piece::Tokens(s.tokens), Piece::Rows(s.write)]).collect();
        let streams: Vec<&[Piece<'_>]> = pieces.iter().map(|p| p.as_slice()).collect();
        let h = self.run(&streams, None);
        let (rows_per_stream, out_per_stream) = (h.len() / segments.len(), out.len() / segments.len());
        let streams = segments.iter().zip(h.chunks_exact(rows_per_stream)).zip(out.chunks_exact_mut(out_per_stream));
        for ((s, rows), o) in streams {
            o.copy_from_slice(&self.final_norm(&rows[rows.len() - s.write.len()..]));
        }
        Ok(())
    }

    fn prefill(&mut self, read: &[f32], tokens: &[u32], logits: &mut [f32]) -> Result<()> {
        let h = if self.is_armt() {
            // the question segment only reads the state (the authors' generate mode), and so does decoding
            let mut state = read.to_vec();
            let h = self.run(&[&[Piece::Tokens(tokens)]], Some(AssociativePass { state: &mut state, write_rows: 0 }));
            self.decode_state = state;
            h
        } else {
            self.run(&[&[Piece::Rows(read), Piece::Tokens(tokens)]], None)
        };
        let d = self.model.config.n_embd;
        let last = self.final_norm(&h[h.len() - d..]);
        forward::lm_head(&self.model, &last, logits);
        Ok(())
    }

    fn decode(&mut self, token: u32, logits: &mut [f32]) -> Result<()> {
        let x = forward::embed(&self.model, &[Piece::Tokens(&[token])], self.scratch.caches[0].len);
        let mut state = std::mem::take(&mut self.decode_state);
        let pass = self.is_armt().then_some(AssociativePass { state: &mut state, write_rows: 0 });
        let h =
            forward::blocks(&self.model, x, &mut self.scratch.caches[..1], self.kernels, &mut self.scratch.work, pass);
        self.decode_state = state;
        forward::lm_head(&self.model, &self.final_norm(&h), logits);
        Ok(())
    }

    fn push_state(&mut self, state: &[f32]) -> Result<()> {
        self.store.push(retrieval(&self.model), state)
    }

    fn truncate_states(&mut self, n: usize) {
        self.store.truncate_rows(n * self.model.config.memory.num_mem_tokens);
    }

    fn retrieve(&mut self, store: &RowStore, cur: &[f32], out: &mut [f32]) -> Result<()> {
        self.store.retrieve(retrieval(&self.model), store, cur, self.model.config.layer_norm_epsilon, out);
        Ok(())
    }
}
