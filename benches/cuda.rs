//! Segment-step throughput of the CUDA backend (bf16) on GPU 0: GPT-2-small RMT (16 + 512 + 16 positions) with
//! 1, 8 and 16 streams in one step, RMT-R v2 retrieval over the store of a 1M-token stream (1,954 stored
//! states), ARMT streams as device-side chains (GPT-2 small with `d_mem` 32, and the bundled default), and the
//! matmul tiles of `cuda/matmul.cu` on the step's four projections and on RMT-R's 16-row
//! matmuls (the data behind [`MatmulTile::for_shape`]). Without a GPU it prints why and exits 0 (nothing is
//! measured, nothing is claimed).
//!
//!     cargo bench --bench cuda        (scripts/gpu-check.sh runs the prebuilt binary)
//!
//! First it prints (GPU or not) the FLOP and byte floors of each kernel of the step and of the whole step, on the
//! H100 SXM's 989 TFLOP/s (bf16 dense) and 3.35 TB/s (ENGINE-NOTES §5): a kernel cannot beat
//! max(FLOPs / peak, bytes / bandwidth).

use std::sync::Arc;

use criterion::{Criterion, Throughput};
use std::time::Duration;

use rmt_fast::backend::cuda::{
    unavailable, CudaModel, CudaStep, Device, Gpu, KernelArg, MatmulTile, Precision, MATMUL_TILES,
};
use rmt_fast::backend::{SegmentInput, Step};
use rmt_fast::store::{RowStore, StoreConfig};
use rmt_fast::{Config, Model};

mod shapes;
use shapes::shape;

const PEAK_FLOPS: f64 = 989e12;
const PEAK_BYTES: f64 = 3.35e12;
/// The H100 SXM's f32 peak without tensor cores: ARMT's kernels are SIMT f32.
const PEAK_F32_FLOPS: f64 = 67e12;

/// GPT-2 small (12 × 768, 12 heads) with 16 memory tokens and segments of 512.
fn gpt2_small(kind: &str) -> Config {
    shape(12, 768, 12, kind, 16, 512)
}

/// (kernel, launches per step, FLOPs, bytes) of one write step over `streams` streams of `t` rows (bf16). The
/// projections write f32 K shares ([`MatmulTile::for_projection`]) that residual_layernorm reads back.
fn kernel_costs(cfg: &Config, streams: usize, t: usize) -> Vec<(&'static str, usize, f64, f64)> {
    let (d, l, rows) = (cfg.n_embd as f64, cfg.n_layer, (streams * t) as f64);
    let shares = |k: usize| MatmulTile::for_projection(streams * t, cfg.n_embd, k).1 as f64;
    let mm = |n: f64, k: f64, out_bytes: f64| (2.0 * rows * n * k, 2.0 * (rows * k + n * k) + out_bytes * rows * n);
    let (proj_shares, fc_proj_shares) = (shares(cfg.n_embd), shares(4 * cfg.n_embd));
    let (qkv, fc) = (mm(3.0 * d, d, 2.0), mm(4.0 * d, d, 2.0));
    let (proj, fc_proj) = (mm(d, d, 4.0 * proj_shares), mm(d, 4.0 * d, 4.0 * fc_proj_shares));
    let att_flops = streams as f64 * 2.0 * (t * t) as f64 * d; // causal: half of 4·T²·d
                                                               // residual_layernorm: x read and written (f32), the shares read (f32), LN out (bf16)
    let residual = |shares: f64| rows * d * (4.0 * 2.0 + 4.0 * shares + 2.0);
    vec![
        ("embed", 1, 0.0, rows * d * 6.0),
        ("layernorm (ln_1 of block 0)", 1, 0.0, rows * d * 6.0),
        ("matmul qkv", l, qkv.0, qkv.1),
        ("attention", l, att_flops, rows * 3.0 * d * 2.0 + rows * d * 2.0),
        ("matmul attn proj (f32 shares)", l, proj.0, proj.1),
        ("residual_layernorm (attn)", l, 0.0, residual(proj_shares)),
        ("matmul fc + gelu", l, fc.0, fc.1),
        ("matmul fc proj (f32 shares)", l, fc_proj.0, fc_proj.1),
        ("residual_layernorm (mlp)", l, 0.0, residual(fc_proj_shares)),
        ("layernorm_tail (memory out)", 1, 0.0, (streams * 16) as f64 * d * 8.0),
    ]
}

fn print_floors(cfg: &Config, streams: usize, t: usize) {
    let floor = |f: f64, b: f64| (f / PEAK_FLOPS).max(b / PEAK_BYTES) * 1e6;
    println!("floors, GPT-2 small, {streams} stream(s) × {t} rows, bf16, H100 SXM:");
    let (mut flops, mut bytes, mut us) = (0.0, 0.0, 0.0);
    for (name, n, f, b) in kernel_costs(cfg, streams, t) {
        println!("  {name:<30} ×{n:<3} {:>8.2} GFLOP {:>8.2} MB  floor {:>7.2} µs each", f / 1e9, b / 1e6, floor(f, b));
        flops += n as f64 * f;
        bytes += n as f64 * b;
        us += n as f64 * floor(f, b);
    }
    let tokens = (streams * 512) as f64;
    println!(
        "  step: {:.1} GFLOP, {:.0} MB, floor {us:.0} µs (sum of kernels) = {:.2}M tokens/s",
        flops / 1e9,
        bytes / 1e6,
        tokens / us
    );
}

/// ARMT's kernels per layer on one stream of `rows` rows, `m` of them writing: floors at the f32 SIMT peak, with
/// the state (A, `dk × d` f32) read once. The maps and the delta are split along K in chunks of 64
/// (`associative.cu`'s K_CHUNK), each chunk's share written once and read once; `associative_read` reads A once per
/// tile of 16 rows, from L2.
fn print_associative_floors(cfg: &Config, rows: usize) {
    let (d, dm, dk, m) = (cfg.n_embd as f64, cfg.memory.d_mem.unwrap() as f64, cfg.memory.key_width() as f64, 16.0);
    let floor = |f: f64, b: f64| (f / PEAK_F32_FLOPS).max(b / PEAK_BYTES) * 1e6;
    let (r, chunks) = (rows as f64, (d / 64.0).ceil());
    let delta_chunks = chunks + (dk / 64.0).ceil();
    let map = |n: f64| (2.0 * n * dm * d, (n * d + dm * d + chunks * n * dm) * 4.0);
    let query = (0.0, (chunks * r * dm + r * dk) * 4.0);
    let read = (2.0 * r * dk * d, r * (d * 8.0 + dk * 4.0) + dk * d * 4.0);
    let key = (2.0 * m * d, (chunks * m * dm + m * d + m * dk) * 4.0);
    let delta_part = (2.0 * m * (d + dk) * d, (m * (d + dk) + d * d + dk * d + delta_chunks * m * d) * 4.0);
    let delta = (m * d * delta_chunks, (delta_chunks + 1.0) * m * d * 4.0);
    let update = (2.0 * m * dk * d, 2.0 * dk * d * 4.0);
    println!("ARMT floors per layer, GPT-2 small (d_mem {dm}, dk {dk}), {rows} rows, f32 SIMT:");
    let kernels = [
        ("associative_map (query)", map(r)),
        ("associative_query", query),
        ("associative_read", read),
        ("associative_map (key)", map(m)),
        ("associative_key", key),
        ("associative_delta_part", delta_part),
        ("associative_delta", delta),
        ("associative_update", update),
    ];
    for (name, (f, b)) in kernels {
        println!("  {name:<30} {:>8.3} GFLOP {:>8.2} MB  floor {:>7.2} µs", f / 1e9, b / 1e6, floor(f, b));
    }
    println!("  (associative_read reads A once per 16 rows: {:.0} MB from L2)", (r / 16.0).ceil() * dk * d * 4.0 / 1e6);
}

fn main() {
    for streams in [1, 8, 16] {
        print_floors(&gpt2_small("rmt"), streams, 544);
    }
    print_associative_floors(&gpt2_small("armt"), 528);
    if let Some(why) = unavailable() {
        println!("cuda bench skipped: {why}");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let d = 768;
    let mem: Vec<f32> = (0..32 * d).map(|i| ((i % 97) as f32 - 48.0) / 100.0).collect();
    let tokens: Vec<u32> = (0..512).map(|i| (i * 37 % 50000) as u32).collect();

    let model = Arc::new(Model::random(gpt2_small("rmt"), 1).unwrap());
    let gpu = Gpu::new(0, Precision::Bf16).unwrap();
    println!("{}", gpu.describe());
    let uploaded = CudaModel::new(gpu, Arc::clone(&model)).unwrap();
    let mut group = c.benchmark_group("cuda gpt2-small rmt");
    for streams in [1usize, 8, 16] {
        let mut step = CudaStep::new(Arc::clone(&uploaded));
        let inputs: Vec<SegmentInput<'_>> = (0..streams)
            .map(|_| SegmentInput { read: &mem[..16 * d], tokens: &tokens, write: &mem[16 * d..] })
            .collect();
        let mut out = vec![0.0; streams * 16 * d];
        step.write_segments(&inputs, &mut out).unwrap(); // allocate and capture the graph
        group.throughput(Throughput::Elements(512 * streams as u64));
        group.bench_function(format!("{streams} stream(s)"), |b| {
            b.iter(|| step.write_segments(&inputs, &mut out).unwrap())
        });
    }
    group.finish();

    // RMT-R v2: one retrieval over the states a 1M-token stream stores (1,954 segments × 16 rows)
    let cfg = gpt2_small("rmt-r");
    let model = Arc::new(Model::random(cfg, 2).unwrap());
    let uploaded = CudaModel::new(Gpu::new(0, Precision::Bf16).unwrap(), Arc::clone(&model)).unwrap();
    let mut step = CudaStep::new(uploaded);
    let mut store = RowStore::new(d, StoreConfig::default());
    for _ in 0..1954 {
        store.push(&mem[..16 * d]).unwrap();
        step.push_state(&mem[..16 * d]).unwrap();
    }
    let rows = (1954 * 16) as f64;
    println!(
        "retrieval floor over {rows} stored rows: {:.1} MB read, {:.1} µs",
        rows * d as f64 * 2.0 / 1e6,
        rows * d as f64 * 2.0 / PEAK_BYTES * 1e6
    );
    let mut out = vec![0.0; 16 * d];
    c.bench_function("cuda gpt2-small rmt-r v2 retrieve at 1M tokens", |b| {
        b.iter(|| step.retrieve(&store, &mem[..16 * d], &mut out).unwrap())
    });
    armt_chains(&mut c);
    matmul_tiles(&mut c);
    c.final_summary();
}

/// ARMT streams read as device-side chains (`Step::write_associative_chain`): the state goes up once and comes back
/// once per chain of `segments` segments. GPT-2 small with `d_mem` 32 (16 segments of 512 per iteration) and the
/// bundled default (4 layers × 128, 64 segments of 128).
fn armt_chains(c: &mut Criterion) {
    let mut group = c.benchmark_group("cuda armt chain");
    let bundled = Model::load("models/default.safetensors");
    let models =
        [("gpt2-small armt", Model::random(gpt2_small("armt"), 3).ok(), 16), ("bundled default", bundled.ok(), 64)];
    for (name, model, segments) in models {
        let Some(model) = model else {
            println!("{name}: no model (run from the repository root)");
            continue;
        };
        let (cfg, model) = (model.config.clone(), Arc::new(model));
        let seg = cfg.memory.segment_size;
        let uploaded = CudaModel::new(Gpu::new(0, Precision::Bf16).unwrap(), Arc::clone(&model)).unwrap();
        let mut step = CudaStep::new(uploaded);
        let tokens: Vec<u32> = (0..segments * seg).map(|i| (i * 37 % 50000) as u32).collect();
        let mut state = vec![0.0; cfg.associative_state_len()];
        let write = &model.weights.memory;
        step.write_associative_chain(&mut state, write, &tokens, seg).unwrap(); // allocate and capture the graph
        group.throughput(Throughput::Elements(tokens.len() as u64));
        group.bench_function(format!("{name}, {segments} segments of {seg}"), |b| {
            b.iter(|| step.write_associative_chain(&mut state, write, &tokens, seg).unwrap())
        });
    }
    group.finish();
}

/// The matmul tiles on the step's four matmuls at 1 and 16 streams (544 and 8,704 rows), launched as the step
/// launches them: qkv and fc + GELU into bf16, the two projections into f32 with K split in the tile's
/// [`MatmulTile::k_shares`]; and on RMT-R v2's 16-row matmuls (the folded query map, fc_1 + GELU, the folded
/// output map and fc_2 as projections, and the scores over a 1M-token store in one share). A graph of `REPS`
/// launches per iteration; throughput in FLOP/s ("elem/s"). The tile the step picks for the shape is marked.
fn matmul_tiles(c: &mut Criterion) {
    const REPS: usize = 20;
    /// (name, N, K, GELU, out): what one of the step's matmuls computes.
    type Shape = (&'static str, usize, usize, usize, Out);
    const WRITE_STEP: [Shape; 4] = [
        ("qkv", 2304, 768, 0, Out::Stored),
        ("attn proj", 768, 768, 0, Out::Shares),
        ("fc", 3072, 768, 1, Out::Stored),
        ("fc proj", 768, 3072, 0, Out::Shares),
    ];
    const RETRIEVAL: [Shape; 5] = [
        ("query map", 768, 768, 0, Out::Stored),
        ("output map", 768, 768, 0, Out::Shares),
        ("fc_1", 3072, 768, 1, Out::Stored),
        ("fc_2", 768, 3072, 0, Out::Shares),
        ("scores at 1M", 1954 * 16, 768, 0, Out::F32),
    ];
    let gpu = Gpu::new(0, Precision::Bf16).unwrap();
    let filled = |bytes: usize| {
        let mut buf = gpu.alloc(bytes).unwrap();
        let pattern: Vec<u8> = (0..bytes).map(|i| if i % 2 == 0 { 0 } else { 0x3c + (i % 7) as u8 }).collect();
        gpu.upload(&mut buf, 0, &pattern).unwrap();
        buf
    };
    let i32_arg = |v: usize| KernelArg::I32(v as i32);
    for (m, shapes) in [(16, &RETRIEVAL[..]), (544, &WRITE_STEP[..]), (16 * 544, &WRITE_STEP[..])] {
        let mut group = c.benchmark_group(format!("cuda matmul tiles, {m} rows (elem/s = FLOP/s)"));
        group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(700)).sample_size(20);
        for &(name, n, k, gelu, out_kind) in shapes {
            let (input, w, bias) = (filled(m * k * 2), filled(n * k * 2), filled(n * 2));
            let out = gpu.alloc(MatmulTile::shares_capacity(m, n) * 4).unwrap();
            let ptr = |b| KernelArg::Ptr(gpu.address(b));
            let mut args = vec![ptr(&out), ptr(&input), ptr(&w), ptr(&bias), i32_arg(m), i32_arg(n), i32_arg(k)];
            args.push(i32_arg(gelu));
            if out_kind == Out::Stored {
                args.extend([i32_arg(m), i32_arg(0)]);
            }
            group.throughput(Throughput::Elements((2 * m * n * k * REPS) as u64));
            // the few-rows tile on few rows only, the 2-D tiles against it at 16 rows and with each other above
            for tile in MATMUL_TILES.into_iter().filter(|t| (t.rows == 16) == (m <= 16) || t.rows == 64) {
                let shares = if out_kind == Out::Shares { tile.k_shares(m, n, k) } else { 1 };
                let kernel = if out_kind == Out::Stored { tile.kernel } else { tile.kernel_f32 };
                let [x, y, _] = tile.grid(m, n);
                let mut launches = || {
                    (0..REPS)
                        .try_for_each(|_| gpu.launch(kernel, [x, y, shares as u32], tile.block(Precision::Bf16), &args))
                };
                let graph = gpu.capture(&mut launches).unwrap();
                let pick = match out_kind {
                    Out::Shares => MatmulTile::for_projection(m, n, k),
                    _ => (MatmulTile::for_shape(m, n), 1),
                };
                let picked = if pick == (tile, shares) { " (picked)" } else { "" };
                group.bench_function(format!("{name} {m}×{n}×{k} {kernel} ×{shares}{picked}"), |b| {
                    b.iter(|| {
                        gpu.replay(&graph).unwrap();
                        gpu.download(&out, 0, &mut [0u8; 4]).unwrap(); // waits for the graph
                    })
                });
            }
        }
        group.finish();
    }
}

/// Where a benchmarked matmul writes: activations (bf16), f32 K shares (a projection), or f32 in one share.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    Stored,
    Shares,
    F32,
}
