//! Training throughput on the CPU: the loss and every gradient of one qa1-shaped sample at the bundled shape
//! (4 × 128, 16 memory rows, segments of 128, random weights), as RMT and as ARMT (keys of 6 · 32): 8 segments with
//! a memory probe after each but the last, with full BPTT and with the last 2 segments only (`k2`); and a long
//! sample of 64 segments with the last 8 only (where the segments before the window are most of the work).
//! Tokens/s = the sample's tokens / time per sample, one sample at a time (the trainer runs a batch's samples in
//! parallel).
//!
//!     cargo bench --bench train

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rmt_fast::train::{loss_and_grads, loss_and_grads_truncated, Probe, TrainSample};
use rmt_fast::{Config, Model};

const SEGMENTS: usize = 8;
/// The long sample's segments and BPTT window.
const LONG: (usize, usize) = (64, 8);

/// A qa1-shaped sample of `segments` segments of `seg`: a context ending inside the last segment, the question's
/// GEN, a one-token answer, and a memory probe after each segment but the last.
fn qa1_sample(segments: usize, seg: usize, gen: u32) -> TrainSample {
    let mut prompt: Vec<u32> = (0..(segments - 1) * seg + 100).map(|i| (i as u32 * 7919) % 50000).collect();
    prompt.push(gen);
    let mut sample = TrainSample::new(prompt, vec![1234]);
    sample.probes = (0..segments - 1)
        .map(|after| Probe { after, prompt: vec![8496, 318, 5335, 30, gen], answer: vec![9592], weight: 1.0 })
        .collect();
    sample
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_sample");
    group.sample_size(10);
    for kind in ["rmt", "armt"] {
        let extra = if kind == "armt" { r#", "d_mem": 32"# } else { "" };
        let cfg = Config::from_json(&format!(
            r#"{{"n_layer": 4, "n_head": 4, "n_embd": 128, "vocab_size": 50257, "n_positions": 160,
                "memory": {{"kind": "{kind}", "num_mem_tokens": 16, "segment_size": 128{extra}}}}}"#
        ))
        .unwrap();
        let (seg, gen) = (cfg.memory.segment_size, cfg.gen_token_id);
        let model = Model::random(cfg, 0).unwrap();
        let sample = qa1_sample(SEGMENTS, seg, gen);
        group.throughput(Throughput::Elements(sample.prompt.len() as u64));
        group.bench_function(format!("small-4x128-{kind}-{SEGMENTS}-segments-probes-full-bptt"), |b| {
            b.iter(|| loss_and_grads(&model, &sample).unwrap())
        });
        group.bench_function(format!("small-4x128-{kind}-{SEGMENTS}-segments-probes-k2-2"), |b| {
            b.iter(|| loss_and_grads_truncated(&model, &sample, 2).unwrap())
        });
        let (segments, k2) = LONG;
        let long = qa1_sample(segments, seg, gen);
        group.throughput(Throughput::Elements(long.prompt.len() as u64));
        group.bench_function(format!("small-4x128-{kind}-{segments}-segments-probes-k2-{k2}"), |b| {
            b.iter(|| loss_and_grads_truncated(&model, &long, k2).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
