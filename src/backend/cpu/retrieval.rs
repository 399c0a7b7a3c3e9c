//! RMT-R retrieval on the CPU (RMT-SPEC §2.3), streaming over the store in chunks so it can live in a file.
//!
//! v2 folds its projections (ENGINE-NOTES §8): with h̃_j = ln_kv(s_j),
//! q·k_j = (W_kᵀq)·h̃_j + q·b_k, where the last term is the same for every j and cancels in the softmax, and
//! Σ p_j v_j = W_v(Σ p_j h̃_j) + b_v because the weights sum to 1. So no keys or values are stored at all: one
//! pass over the raw states computes the scores, a second the weighted sum. v1 has gelu on its keys and values,
//! which does not fold; they are computed once per stored state and kept in their own stores.

use super::ops::{gelu_new, gemm_strided, layer_norm, matmul, softmax, MatRef, Strided};
use crate::error::Result;
use crate::model::weights::{Layout, Retrieval};
use crate::store::{RowStore, StoreConfig};

/// Rows converted to f32 at a time.
const CHUNK_ROWS: usize = 4096;

/// What retrieval keeps besides the session's store: v1's keys and values.
pub struct StoreCache {
    v1_keys_values: Option<(RowStore, RowStore)>,
}

impl StoreCache {
    pub fn new(r: Option<&Retrieval>, d: usize, config: &StoreConfig) -> Self {
        let v1 = r.is_some_and(|r| r.v2.is_none());
        StoreCache { v1_keys_values: v1.then(|| (RowStore::new(d, config.clone()), RowStore::new(d, config.clone()))) }
    }

    /// v1: caches `gelu(W_k s + b_k)` and `gelu(W_v s + b_v)` of one stored state.
    pub fn push(&mut self, r: &Retrieval, state: &[f32]) -> Result<()> {
        if let Some((keys, values)) = &mut self.v1_keys_values {
            let rows = state.len() / r.k.n_in;
            for (lin, store) in [(&r.k, keys), (&r.v, values)] {
                let mut x = vec![0.0; state.len()];
                matmul(state, rows, lin.mat(), lin.b.as_deref(), &mut x, false);
                gelu_new(&mut x);
                store.push(&x)?;
            }
        }
        Ok(())
    }

    /// Keeps the first `rows` cached rows.
    pub fn truncate_rows(&mut self, rows: usize) {
        if let Some((k, v)) = &mut self.v1_keys_values {
            k.truncate(rows);
            v.truncate(rows);
        }
    }

    /// Rows `range` of the keys (v1: cached; v2: `ln_kv` of the stored states) as f32.
    fn keys(&self, r: &Retrieval, store: &RowStore, range: std::ops::Range<usize>, eps: f32, out: &mut Vec<f32>) {
        out.clear();
        match (&self.v1_keys_values, &r.v2) {
            (Some((k, _)), _) => k.read(range, out),
            (None, Some(v2)) => {
                let mut raw = Vec::with_capacity(range.len() * store.width());
                store.read(range, &mut raw);
                out.resize(raw.len(), 0.0);
                layer_norm(&raw, &v2.ln_kv, eps, out);
            }
            (None, None) => unreachable!("v1 always has its cache"),
        }
    }

    /// Rows `range` of the values (v1: cached; v2: the same normalised states as the keys).
    fn values(&self, r: &Retrieval, store: &RowStore, range: std::ops::Range<usize>, eps: f32, out: &mut Vec<f32>) {
        match &self.v1_keys_values {
            Some((_, v)) => {
                out.clear();
                v.read(range, out);
            }
            None => self.keys(r, store, range, eps, out),
        }
    }

    /// Retrieved rows for `cur` (`m × d`) over all rows of `store`, into `out`.
    pub fn retrieve(&self, r: &Retrieval, store: &RowStore, cur: &[f32], eps: f32, out: &mut [f32]) {
        let d = r.q.n_in;
        let (m, n) = (cur.len() / d, store.rows());
        // the query, already multiplied by W_k for v2
        let mut q = vec![0.0; m * d];
        match &r.v2 {
            Some(v2) => {
                let mut h = vec![0.0; m * d];
                layer_norm(cur, &v2.ln_q, eps, &mut h);
                let mut q_raw = vec![0.0; m * d];
                matmul(&h, m, r.q.mat(), r.q.b.as_deref(), &mut q_raw, false);
                // (W_kᵀ q) for W_k stored [out, in]: q · W_k as an [out, in] right-hand side
                let wk = MatRef { w: &r.k.w, n_in: r.k.n_out, n_out: r.k.n_in, layout: Layout::InOut };
                matmul(&q_raw, m, wk, None, &mut q, false);
            }
            None => {
                matmul(cur, m, r.q.mat(), r.q.b.as_deref(), &mut q, false);
                gelu_new(&mut q);
            }
        }
        // pass 1: scores = q Kᵀ / √d, chunk by chunk, then softmax over all n stored rows
        let mut scores = vec![0.0; m * n];
        let mut rows = Vec::new();
        for c0 in (0..n).step_by(CHUNK_ROWS) {
            let c1 = (c0 + CHUNK_ROWS).min(n);
            self.keys(r, store, c0..c1, eps, &mut rows);
            let dst = Strided { offset: c0, rs: n, cs: 1 };
            gemm_strided(
                (m, c1 - c0, d),
                &mut scores,
                dst,
                false,
                &q,
                Strided::rows(0, d),
                &rows,
                Strided { offset: 0, rs: 1, cs: d },
            );
        }
        let scale = 1.0 / (d as f32).sqrt();
        for row in scores.chunks_exact_mut(n) {
            row.iter_mut().for_each(|s| *s *= scale);
            softmax(row);
        }
        // pass 2: Σ p_j v_j
        let mut attended = vec![0.0; m * d];
        for c0 in (0..n).step_by(CHUNK_ROWS) {
            let c1 = (c0 + CHUNK_ROWS).min(n);
            self.values(r, store, c0..c1, eps, &mut rows);
            let p = Strided { offset: c0, rs: n, cs: 1 };
            gemm_strided(
                (m, d, c1 - c0),
                &mut attended,
                Strided::rows(0, d),
                c0 > 0,
                &scores,
                p,
                &rows,
                Strided::rows(0, d),
            );
        }
        match &r.v2 {
            Some(v2) => {
                let mut v = vec![0.0; m * d];
                matmul(&attended, m, r.v.mat(), r.v.b.as_deref(), &mut v, false);
                out[..m * d].copy_from_slice(cur);
                matmul(&v, m, r.o.mat(), r.o.b.as_deref(), out, true);
                let mut h = vec![0.0; m * d];
                layer_norm(&out[..m * d], &v2.ln_mlp, eps, &mut h);
                let mut hidden = vec![0.0; m * 4 * d];
                matmul(&h, m, v2.fc_1.mat(), v2.fc_1.b.as_deref(), &mut hidden, false);
                gelu_new(&mut hidden);
                matmul(&hidden, m, v2.fc_2.mat(), v2.fc_2.b.as_deref(), out, true);
            }
            None => {
                matmul(&attended, m, r.o.mat(), r.o.b.as_deref(), out, false);
                gelu_new(&mut out[..m * d]);
            }
        }
    }
}
