//! Causal multi-head self-attention of new rows against a per-layer KV cache (exact f32 reference).

use std::ops::Range;

use super::kernels::Kernels;
use super::ops::{gemm_strided, Strided};
use super::pair;

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
/// then P·V (GEMM), both through strided views of the packed buffers. With a second core free the heads are shared
/// between the two (each head is computed as it would be alone).
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
    let heads = Heads { qkv, keys: &cache.k[layer], values: &cache.v[layer], n, past, d, hd, k };
    let split = n_head / 2;
    if split == 0 || !pair::may_split() {
        return heads.run(0..n_head, out, d);
    }
    // the second core writes its heads into a buffer of their own, copied into place after both halves
    let width = (n_head - split) * hd;
    let mut right = vec![0.0f32; n * width];
    pair::join(|| heads.run(0..split, out, d), || heads.run(split..n_head, &mut right, width));
    for (o, r) in out.chunks_exact_mut(d).zip(right.chunks_exact(width)) {
        o[split * hd..].copy_from_slice(r);
    }
}

/// What every head of one layer's attention reads.
struct Heads<'a> {
    qkv: &'a [f32],
    keys: &'a [f32],
    values: &'a [f32],
    n: usize,
    past: usize,
    d: usize,
    hd: usize,
    k: Kernels,
}

impl Heads<'_> {
    /// The outputs of heads `range`, side by side from column 0 of `out` (`[n, width]`).
    fn run(&self, range: Range<usize>, out: &mut [f32], width: usize) {
        let Heads { qkv, keys, values, n, past, d, hd, k } = *self;
        let total = past + n;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut scores = vec![0.0f32; n * total];
        for (slot, h) in range.enumerate() {
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
            let o = Strided { offset: slot * hd, rs: width, cs: 1 };
            gemm_strided((n, hd, total), out, o, false, &scores, Strided::rows(0, total), values, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heads shared between two cores give every output the bits of the heads computed one after another on one
    /// core, with and without a cache before the new rows.
    #[test]
    fn heads_on_two_cores_equal_one_core_bit_for_bit() {
        // the bundled shape's 4 heads of 32, and 5 heads (an odd split), over 37 new rows after 0 or 23 cached ones
        for (n_head, hd, past) in [(4, 32, 0), (4, 32, 23), (5, 8, 23)] {
            let (d, n) = (n_head * hd, 37);
            let fill = |len: usize, seed: usize| -> Vec<f32> {
                (0..len).map(|i| ((i * 7919 + seed) % 1000) as f32 / 250.0 - 2.0).collect()
            };
            let run = |pairs: bool| {
                let mut cache = KvCache::new(1);
                let mut out = vec![0.0; n * d];
                let mut go = || {
                    if past > 0 {
                        let (earlier, mut first) = (fill(past * 3 * d, 1), vec![0.0; past * d]);
                        causal_attention(&earlier, past, n_head, &mut cache, 0, &mut first, Kernels::Fast);
                        cache.len += past;
                    }
                    causal_attention(&fill(n * 3 * d, 2), n, n_head, &mut cache, 0, &mut out, Kernels::Fast);
                    assert_eq!(pair::may_split(), pairs, "the run took the path it tests");
                };
                if pairs {
                    go();
                } else {
                    // a rayon task may not take the second core, so its heads run one after another
                    rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(go);
                }
                out
            };
            assert!(rayon::current_num_threads() > 1, "this test needs two cores");
            let (two, one) = (run(true), run(false));
            let same = two.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{n_head} heads of {hd}, {past} cached rows");
        }
    }
}
