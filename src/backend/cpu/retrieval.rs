//! RMT-R retrieval on the CPU (RMT-SPEC §2.3). The keys and values of a stored state never change, so they are
//! computed once when the state is stored (linear work per segment); each retrieval then attends over the cache.

use super::ops::{gelu_new, layer_norm, matmul, softmax, MatRef};
use crate::model::weights::{Layout, Retrieval};

/// Keys and values of all stored states, `[N, d]` each.
#[derive(Default)]
pub struct StoreCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl StoreCache {
    /// Caches K and V of one state (`m × d`): v1 `gelu(W x + b)`, v2 `W · ln_kv(x) + b`.
    pub fn push(&mut self, r: &Retrieval, state: &[f32], eps: f32) {
        let d = r.k.n_in;
        let rows = state.len() / d;
        let normed;
        let x = match &r.v2 {
            Some(v2) => {
                let mut h = vec![0.0; state.len()];
                layer_norm(state, &v2.ln_kv, eps, &mut h);
                normed = h;
                &normed
            }
            None => state,
        };
        for (lin, cache) in [(&r.k, &mut self.k), (&r.v, &mut self.v)] {
            let at = cache.len();
            cache.resize(at + rows * d, 0.0);
            matmul(
                x,
                rows,
                lin.mat(),
                lin.b.as_deref(),
                &mut cache[at..],
                false,
            );
            if r.v2.is_none() {
                gelu_new(&mut cache[at..]);
            }
        }
    }

    /// Keeps the first `n` stored rows.
    pub fn truncate_rows(&mut self, n: usize, d: usize) {
        self.k.truncate(n * d);
        self.v.truncate(n * d);
    }

    /// Retrieved rows for `cur` (`m × d`) into `out`.
    pub fn retrieve(&self, r: &Retrieval, cur: &[f32], eps: f32, out: &mut [f32]) {
        let d = r.q.n_in;
        let (m, n) = (cur.len() / d, self.k.len() / d);
        let mut q = vec![0.0; m * d];
        match &r.v2 {
            Some(v2) => {
                let mut h = vec![0.0; m * d];
                layer_norm(cur, &v2.ln_q, eps, &mut h);
                matmul(&h, m, r.q.mat(), r.q.b.as_deref(), &mut q, false);
            }
            None => {
                matmul(cur, m, r.q.mat(), r.q.b.as_deref(), &mut q, false);
                gelu_new(&mut q);
            }
        }
        // scores = q Kᵀ / √d over all stored rows, softmax per query row, then attend over V
        let mut scores = vec![0.0; m * n];
        matmul(
            &q,
            m,
            MatRef {
                w: &self.k,
                n_in: d,
                n_out: n,
                layout: Layout::OutIn,
            },
            None,
            &mut scores,
            false,
        );
        let scale = 1.0 / (d as f32).sqrt();
        for row in scores.chunks_exact_mut(n) {
            row.iter_mut().for_each(|s| *s *= scale);
            softmax(row);
        }
        let mut attended = vec![0.0; m * d];
        matmul(
            &scores,
            m,
            MatRef {
                w: &self.v,
                n_in: n,
                n_out: d,
                layout: Layout::InOut,
            },
            None,
            &mut attended,
            false,
        );
        match &r.v2 {
            Some(v2) => {
                out[..m * d].copy_from_slice(cur);
                matmul(&attended, m, r.o.mat(), r.o.b.as_deref(), out, true);
                let mut h = vec![0.0; m * d];
                layer_norm(&out[..m * d], &v2.ln_mlp, eps, &mut h);
                let mut hidden = vec![0.0; m * 4 * d];
                matmul(
                    &h,
                    m,
                    v2.fc_1.mat(),
                    v2.fc_1.b.as_deref(),
                    &mut hidden,
                    false,
                );
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
