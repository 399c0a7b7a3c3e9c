//! Random initialisation with GPT-2's scheme, for tests and benchmarks.

use super::config::{Config, MemoryKind, RetrievalVersion};
use super::weights::{Associative, Block, LayerNorm, Layout, Linear, Retrieval, RetrievalV2, Weights};
use crate::rng::Rng;

const STD: f64 = 0.02;

fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * std) as f32).collect()
}

fn linear(rng: &mut Rng, n_in: usize, n_out: usize, layout: Layout) -> Linear {
    Linear { w: normal(rng, n_in * n_out, STD), b: Some(vec![0.0; n_out]), n_in, n_out, layout }
}

fn layer_norm(d: usize) -> LayerNorm {
    LayerNorm { w: vec![1.0; d], b: vec![0.0; d] }
}

fn std_dev(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    // torch.std is the unbiased estimate
    (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

pub(super) fn random_weights(cfg: &Config, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let d = cfg.n_embd;
    let wte = normal(&mut rng, cfg.vocab_size * d, STD);
    let wpe = normal(&mut rng, cfg.n_positions * d, STD);
    let blocks = (0..cfg.n_layer)
        .map(|_| Block {
            ln_1: layer_norm(d),
            c_attn: linear(&mut rng, d, 3 * d, Layout::InOut),
            attn_proj: linear(&mut rng, d, d, Layout::InOut),
            ln_2: layer_norm(d),
            c_fc: linear(&mut rng, d, 4 * d, Layout::InOut),
            mlp_proj: linear(&mut rng, 4 * d, d, Layout::InOut),
        })
        .collect();
    let memory = normal(&mut rng, cfg.memory.memory_rows() * d, std_dev(&wte));
    let retrieval = match (cfg.memory.kind, cfg.memory.retrieval) {
        (MemoryKind::RmtR, Some(version)) => {
            let mut lin = |i, o| linear(&mut rng, i, o, Layout::OutIn);
            let (q, k, v, o) = (lin(d, d), lin(d, d), lin(d, d), lin(d, d));
            let v2 = (version == RetrievalVersion::V2).then(|| RetrievalV2 {
                ln_q: layer_norm(d),
                ln_kv: layer_norm(d),
                ln_mlp: layer_norm(d),
                fc_1: lin(d, 4 * d),
                fc_2: lin(4 * d, d),
            });
            Some(Retrieval { q, k, v, o, v2 })
        }
        _ => None,
    };
    let associative = match cfg.memory.d_mem {
        Some(k) => (0..cfg.n_layer)
            .map(|_| {
                let mut map = |n_out| Linear { b: None, ..linear(&mut rng, d, n_out, Layout::OutIn) };
                let (w_mq, w_mk) = (map(k), map(k));
                // as the authors' code: W_mv starts at zero, so the first writes store nothing
                let w_mv = Linear { w: vec![0.0; d * d], b: None, n_in: d, n_out: d, layout: Layout::OutIn };
                Associative { w_mq, w_mk, w_mv, w_mb: linear(&mut rng, d, 1, Layout::OutIn) }
            })
            .collect(),
        None => Vec::new(),
    };
    Weights { wte, wpe, blocks, ln_f: layer_norm(d), lm_head: None, memory, retrieval, associative }
}
