//! The CPU backend: the exact f32 reference (the oracle every faster path is compared with) and the fast kernels
//! behind the same step.

mod attention;
mod fast;
pub(crate) mod forward;
mod kernels;
pub mod ops;
mod retrieval;

use std::sync::Arc;

use attention::KvCache;
pub use forward::Piece;
use forward::Workspace;
pub use kernels::Kernels;
use retrieval::StoreCache;

use super::Step;
use crate::error::Result;
use crate::model::weights::Retrieval;
use crate::model::Model;
use crate::store::{RowStore, StoreConfig};

/// The session only asks RMT-R models for retrieval.
fn retrieval(model: &Model) -> &Retrieval {
    model.weights.retrieval.as_ref().expect("retrieval is only called for RMT-R models")
}

/// One stream's segment step on the CPU.
pub struct CpuStep {
    model: Arc<Model>,
    kernels: Kernels,
    cache: KvCache,
    work: Workspace,
    store: StoreCache,
}

impl CpuStep {
    /// A step for `model` with empty caches, using `kernels`; `store` configures RMT-R v1's key/value caches.
    pub fn new(model: Arc<Model>, kernels: Kernels, store: &StoreConfig) -> Self {
        let cache = KvCache::new(model.config.n_layer);
        let store = StoreCache::new(model.weights.retrieval.as_ref(), model.config.n_embd, store);
        CpuStep { model, kernels, cache, work: Workspace::default(), store }
    }

    /// Runs `pieces` from position 0 in a fresh cache; returns the final residual rows.
    fn run(&mut self, pieces: &[Piece<'_>]) -> Vec<f32> {
        self.cache.clear();
        let x = forward::embed(&self.model, pieces, 0);
        forward::blocks(&self.model, x, &mut self.cache, self.kernels, &mut self.work)
    }

    fn final_norm(&self, rows: &[f32]) -> Vec<f32> {
        forward::final_norm(&self.model, rows, self.kernels)
    }
}

impl Step for CpuStep {
    fn write_segment(&mut self, read: &[f32], tokens: &[u32], write: &[f32], out: &mut [f32]) {
        let h = self.run(&[Piece::Rows(read), Piece::Tokens(tokens), Piece::Rows(write)]);
        out.copy_from_slice(&self.final_norm(&h[h.len() - write.len()..]));
    }

    fn prefill(&mut self, read: &[f32], tokens: &[u32], logits: &mut [f32]) {
        let h = self.run(&[Piece::Rows(read), Piece::Tokens(tokens)]);
        let d = self.model.config.n_embd;
        let last = self.final_norm(&h[h.len() - d..]);
        forward::lm_head(&self.model, &last, logits);
    }

    fn decode(&mut self, token: u32, logits: &mut [f32]) {
        let x = forward::embed(&self.model, &[Piece::Tokens(&[token])], self.cache.len);
        let h = forward::blocks(&self.model, x, &mut self.cache, self.kernels, &mut self.work);
        forward::lm_head(&self.model, &self.final_norm(&h), logits);
    }

    fn push_state(&mut self, state: &[f32]) -> Result<()> {
        self.store.push(retrieval(&self.model), state)
    }

    fn truncate_states(&mut self, n: usize) {
        self.store.truncate_rows(n * self.model.config.memory.num_mem_tokens);
    }

    fn retrieve(&mut self, store: &RowStore, cur: &[f32], out: &mut [f32]) {
        self.store.retrieve(retrieval(&self.model), store, cur, self.model.config.layer_norm_epsilon, out);
    }
}
