//! Causal multi-head self-attention of new rows against a per-layer KV cache (exact f32 reference).

use rayon::prelude::*;

use super::ops::softmax;

/// Keys and values of every position seen so far, per layer: `[positions, d]` each, heads side by side.
pub struct KvCache {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub len: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache {
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            len: 0,
        }
    }

    pub fn clear(&mut self) {
        self.k
            .iter_mut()
            .chain(self.v.iter_mut())
            .for_each(Vec::clear);
        self.len = 0;
    }
}

/// For `n` new rows of packed `qkv` (`[n, 3d]`, Q|K|V) at positions `cache.len .. cache.len + n`: appends their
/// K and V to layer `layer` of the cache and writes the attention output `[n, d]`. Row i attends to every
/// cached position up to and including its own.
pub fn causal_attention(
    qkv: &[f32],
    n: usize,
    n_head: usize,
    cache: &mut KvCache,
    layer: usize,
    out: &mut [f32],
) {
    let d = qkv.len() / n / 3;
    let hd = d / n_head;
    let past = cache.len;
    for row in qkv.chunks_exact(3 * d) {
        cache.k[layer].extend_from_slice(&row[d..2 * d]);
        cache.v[layer].extend_from_slice(&row[2 * d..]);
    }
    let (keys, values) = (&cache.k[layer], &cache.v[layer]);
    let scale = 1.0 / (hd as f32).sqrt();
    out[..n * d]
        .par_chunks_mut(d)
        .enumerate()
        .for_each(|(i, o)| {
            let visible = past + i + 1;
            let mut scores = vec![0.0f32; visible];
            for h in 0..n_head {
                let q = &qkv[i * 3 * d + h * hd..][..hd];
                for (j, s) in scores.iter_mut().enumerate() {
                    let k = &keys[j * d + h * hd..][..hd];
                    *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                }
                softmax(&mut scores);
                let oh = &mut o[h * hd..][..hd];
                oh.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let v = &values[j * d + h * hd..][..hd];
                    oh.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
                }
            }
        });
}
