//! Segment-step throughput of the exact CPU reference: GPT-2-small RMT (16 read + 512 tokens + 16 write = 544
//! positions) and RMT-R (32 read + 512 + 16), random weights. Tokens/s = 512 / time per segment; GFLOP/s against
//! the step's GEMM + attention FLOP count (ENGINE-NOTES §5.3) are printed once before the runs.
//!
//!     cargo bench --bench segment

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rmt_fast::backend::cpu::CpuStep;
use rmt_fast::backend::Step;
use rmt_fast::{Config, Model};

fn gpt2_small(kind: &str) -> Config {
    let retrieval = if kind == "rmt-r" { r#", "retrieval": "v2""# } else { "" };
    Config::from_json(&format!(
        r#"{{"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024,
            "memory": {{"kind": "{kind}", "num_mem_tokens": 16, "segment_size": 512{retrieval}}}}}"#
    ))
    .unwrap()
}

/// FLOPs of one write segment: 2·T·(weights per layer)·layers for the GEMMs plus causal attention 2·T²·d·layers.
fn segment_flops(cfg: &Config) -> f64 {
    let (t, d, l) = (
        (cfg.memory.read_rows() + cfg.memory.segment_size + cfg.memory.num_mem_tokens) as f64,
        cfg.n_embd as f64,
        cfg.n_layer as f64,
    );
    2.0 * t * 12.0 * d * d * l + 2.0 * t * t * d * l
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment_step_reference");
    group.sample_size(10);
    for kind in ["rmt", "rmt-r"] {
        let cfg = gpt2_small(kind);
        let (m, d, seg) = (cfg.memory.num_mem_tokens, cfg.n_embd, cfg.memory.segment_size);
        let flops = segment_flops(&cfg);
        let model = Arc::new(Model::random(cfg, 0).unwrap());
        let read = model.weights.memory.clone();
        let tokens: Vec<u32> = (0..seg as u32).map(|i| (i * 7919) % 50000).collect();
        let mut step = CpuStep::new(Arc::clone(&model), &Default::default());
        let mut out = vec![0.0; m * d];
        let t0 = std::time::Instant::now();
        step.write_segment(&read, &tokens, &read[..m * d], &mut out);
        let s = t0.elapsed().as_secs_f64();
        eprintln!(
            "{kind}: {:.1} GFLOP per segment; first run {:.0} ms = {:.1} GFLOP/s",
            flops / 1e9,
            s * 1e3,
            flops / s / 1e9
        );
        group.throughput(Throughput::Elements(seg as u64));
        group.bench_function(format!("gpt2-small-{kind}-1x512"), |b| {
            b.iter(|| step.write_segment(&read, &tokens, &read[..m * d], &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
