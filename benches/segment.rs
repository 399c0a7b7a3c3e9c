//! Segment-step throughput of the CPU backend, reference and fast kernels: GPT-2-small RMT (16 read + 512 tokens +
//! 16 write = 544 positions) and RMT-R (32 read + 512 + 16), and the bundled small shape (4 × 128, 16 memory
//! tokens, segments of 128) as RMT and as ARMT (keys of 6 · 32), random weights; the small RMT also with 8 streams
//! stacked in one step. Tokens/s =
//! segment tokens / time per segment. Before the runs it prints each step's FLOP count (GEMMs + attention,
//! ENGINE-NOTES §5.3), the GFLOP/s of one timed step, and the GEMM crate's own rate on the step's MLP GEMM (the
//! peak the step can reach here).
//!
//!     cargo bench --bench segment

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rmt_fast::backend::cpu::ops::{gemm_strided, Strided};
use rmt_fast::backend::cpu::{CpuStep, Kernels};
use rmt_fast::backend::{SegmentInput, Step};
use rmt_fast::{Config, MemoryKind, Model};

mod shapes;
use shapes::shape;

/// Rows of one write segment.
fn rows(cfg: &Config) -> f64 {
    (cfg.memory.read_rows() + cfg.memory.segment_size + cfg.memory.num_mem_tokens) as f64
}

/// FLOPs of one write segment: 2·T·(weights per layer)·layers for the GEMMs plus causal attention 2·T²·d·layers;
/// ARMT adds per layer its read over all T rows (query map, `q·A`) and its write from the m memory rows (key and
/// value maps, `k·A`, the update).
fn segment_flops(cfg: &Config) -> f64 {
    let (t, d, l) = (rows(cfg), cfg.n_embd as f64, cfg.n_layer as f64);
    let (m, dm, dk) =
        (cfg.memory.num_mem_tokens as f64, cfg.memory.d_mem.unwrap_or(0) as f64, cfg.memory.key_width() as f64);
    let associative = 2.0 * t * (d * dm + dk * d) + 2.0 * m * (d * dm + d * d + 2.0 * dk * d);
    2.0 * t * 12.0 * d * d * l + 2.0 * t * t * d * l + associative * l
}

/// GFLOP/s of the GEMM crate alone on the step's MLP GEMM (`[T, d] · [d, 4d]`), best of 5.
fn gemm_rate(cfg: &Config) -> f64 {
    let (t, d) = (rows(cfg) as usize, cfg.n_embd);
    let (a, b) = (vec![0.5f32; t * d], vec![0.25f32; d * 4 * d]);
    let mut c = vec![0.0f32; t * 4 * d];
    let best = (0..5)
        .map(|_| {
            let t0 = std::time::Instant::now();
            gemm_strided(
                (t, 4 * d, d),
                &mut c,
                Strided::rows(0, 4 * d),
                false,
                &a,
                Strided::rows(0, d),
                &b,
                Strided::rows(0, 4 * d),
            );
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (t * d * 4 * d) as f64 / best / 1e9
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment_step");
    group.sample_size(10);
    let shapes = [
        ("gpt2-small-rmt", shape(12, 768, 12, "rmt", 16, 512)),
        ("gpt2-small-rmt-r", shape(12, 768, 12, "rmt-r", 16, 512)),
        ("small-4x128-rmt", shape(4, 128, 4, "rmt", 16, 128)),
        ("small-4x128-armt", shape(4, 128, 4, "armt", 16, 128)),
    ];
    for (name, cfg) in shapes {
        let (m, d, seg) = (cfg.memory.num_mem_tokens, cfg.n_embd, cfg.memory.segment_size);
        let flops = segment_flops(&cfg);
        let peak = gemm_rate(&cfg);
        let armt = cfg.memory.kind == MemoryKind::Armt;
        let out_len = cfg.written_len();
        let model = Arc::new(Model::random(cfg, 0).unwrap());
        // the learned memory holds the read rows (RMT-R: memory and retrieved); the write rows are the first m.
        // ARMT reads its associative state (the same work whatever its values) and writes with the learned rows.
        let read = if armt { vec![0.0; out_len] } else { model.weights.memory.clone() };
        let tokens: Vec<u32> = (0..seg as u32).map(|i| (i * 7919) % 50000).collect();
        for kernels in [Kernels::Reference, Kernels::Fast] {
            let mut step = CpuStep::new(Arc::clone(&model), kernels, &Default::default());
            let mut out = vec![0.0; out_len];
            let write = &model.weights.memory[..m * d];
            step.write_segment(&read, &tokens, write, &mut out).unwrap(); // warm the buffers
            let t0 = std::time::Instant::now();
            step.write_segment(&read, &tokens, write, &mut out).unwrap();
            let s = t0.elapsed().as_secs_f64();
            eprintln!(
                "{name} {kernels:?}: {:.2} GFLOP per segment; one step {:.1} ms = {:.1} GFLOP/s = {:.0} % of the \
                 GEMM crate's {peak:.1} GFLOP/s on the step's MLP GEMM",
                flops / 1e9,
                s * 1e3,
                flops / s / 1e9,
                100.0 * flops / s / 1e9 / peak
            );
            group.throughput(Throughput::Elements(seg as u64));
            group.bench_function(format!("{name}-{kernels:?}"), |b| {
                b.iter(|| step.write_segment(&read, &tokens, write, &mut out).unwrap())
            });
            if kernels == Kernels::Fast && name == "small-4x128-rmt" {
                // throughput mode: 8 streams stacked in one step (one GEMM per layer over 8 × 160 rows)
                let inputs = vec![SegmentInput { read: &read, tokens: &tokens, write }; 8];
                let mut outs = vec![0.0; 8 * m * d];
                group.throughput(Throughput::Elements(8 * seg as u64));
                group.bench_function(format!("{name}-{kernels:?}-8-streams"), |b| {
                    b.iter(|| step.write_segments(&inputs, &mut outs).unwrap())
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
