//! Causal multi-head self-attention of new rows against a per-layer KV cache (exact f32 reference).

use super::kernels::Kernels;
use super::ops::{gemm_strided, Strided};

/// Keys and values of every position seen so far, per layer: `[positions, d]` each, heads side by side.
pub struct KvCache {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub len: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache { k: vec![Vec::new(); layers], v: vec![Vec::new(); layers], len: 0 }
    }

    pub fn clear(&mut self) {
        self.k.iter_mut().chain(self.v.iter_mut()).for_each(Vec::clear);
        self.len = 0;
    }
}

/// For `n` new rows of packed `qkv` (`[n, 3d]`, Q|K|V) at positions `cache.len .. cache.len + n`: appends their
/// K and V to layer `layer` of the cache and writes the attention output `[n, d]`. Row i attends to every
/// cached position up to and including its own. Per head: scores = Q·Kᵀ/√hd (GEMM), causal mask, softmax,
/// then P·V (GEMM), both through strided views of the packed buffers.
pub fn causal_attention(
    qkv: &[f32],
    n: usize,
    n_head: usize,
    cache: &mut KvCache,
    layer: usize,
    out: &mut [f32],
    k: Kernels,
) {
    let d = qkv.len() / n / 3;
    let hd = d / n_head;
    let past = cache.len;
    for row in qkv.chunks_exact(3 * d) {
        cache.k[layer].extend_from_slice(&row[d..2 * d]);
        cache.v[layer].extend_from_slice(&row[2 * d..]);
    }
    let (keys, values) = (&cache.k[layer], &cache.v[layer]);
    let total = past + n;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0.0f32; n * total];
    for h in 0..n_head {
        let q = Strided { offset: h * hd, rs: 3 * d, cs: 1 };
        let k_t = Strided { offset: h * hd, rs: 1, cs: d };
        gemm_strided((n, total, hd), &mut scores, Strided::rows(0, total), false, qkv, q, keys, k_t);
        for (i, row) in scores.chunks_exact_mut(total).enumerate() {
            let visible = past + i + 1;
            row[..visible].iter_mut().for_each(|s| *s *= scale);
            k.softmax(&mut row[..visible]);
            row[visible..].fill(0.0);
        }
        let v = Strided { offset: h * hd, rs: d, cs: 1 };
        let o = Strided { offset: h * hd, rs: d, cs: 1 };
        gemm_strided((n, hd, total), out, o, false, &scores, Strided::rows(0, total), values, v);
    }
}
