//! Checks shared by the emulated (`tests/cuda_emu.rs`) and the real GPU (`tests/cuda_gpu.rs`) CUDA tests: every
//! kernel and whole streams against the CPU backend, for any [`Device`]. Tolerances, as normalised error
//! ‖gpu − cpu‖ / ‖cpu‖: 1e-5 in the f32 checking build, 1e-2 in the bf16 build.

use crate::common::rel_err;
use rmt_fast::backend::cpu::associative;
use rmt_fast::backend::cpu::ops::{gelu_new, layer_norm, matmul, MatRef};
use rmt_fast::backend::cuda::{Device, KernelArg, MatmulTile, Precision, MATMUL_TILES};
use rmt_fast::model::weights::{Associative, LayerNorm, Layout, Linear};
use rmt_fast::{AssociativeWrite, Config, Engine, MemoryConfig, MemoryKind, Model};

pub fn tolerance(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-5,
        Precision::Bf16 => 1e-2,
    }
}

/// Logits come out of every layer plus the LM head, each adding bf16 rounding (2⁻⁹ relative per stored value)
/// to activations that the test model's enlarged weights make large: twice the per-kernel bound in bf16.
pub fn logits_tolerance(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-5,
        Precision::Bf16 => 2e-2,
    }
}

pub const PRECISIONS: [Precision; 2] = [Precision::F32, Precision::Bf16];

pub fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Kernel-level helpers: buffers in f32 or the storage type, and reading them back.
pub struct Lab<D: Device> {
    pub dev: D,
}

impl<D: Device> Lab<D> {
    pub fn f32(&self, v: &[f32]) -> D::Buffer {
        self.bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    pub fn stored(&self, v: &[f32]) -> D::Buffer {
        self.bytes(&self.dev.precision().encode(v))
    }
    pub fn bytes(&self, b: &[u8]) -> D::Buffer {
        let mut buf = self.dev.alloc(b.len()).unwrap();
        self.dev.upload(&mut buf, 0, b).unwrap();
        buf
    }
    pub fn zeros(&self, n: usize) -> D::Buffer {
        self.dev.alloc(n * 4).unwrap()
    }
    pub fn read_f32(&self, buf: &D::Buffer, n: usize) -> Vec<f32> {
        let mut b = vec![0u8; n * 4];
        self.dev.download(buf, 0, &mut b).unwrap();
        b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    pub fn read_stored(&self, buf: &D::Buffer, n: usize) -> Vec<f32> {
        match self.dev.precision() {
            Precision::F32 => self.read_f32(buf, n),
            Precision::Bf16 => {
                let mut b = vec![0u8; n * 2];
                self.dev.download(buf, 0, &mut b).unwrap();
                b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
        }
    }
    pub fn p(&self, b: &D::Buffer) -> KernelArg {
        KernelArg::Ptr(self.dev.address(b))
    }
    pub fn run(&self, name: &str, grid: [u32; 3], block: [u32; 3], args: &[KernelArg]) {
        self.dev.launch(name, grid, block, args).unwrap_or_else(|e| panic!("{e}"));
    }
    pub fn check(&self, what: &str, got: &[f32], want: &[f32]) {
        let e = rel_err(got, want);
        eprintln!("{:?} {what}: {e:.2e}", self.dev.precision());
        assert!(e <= tolerance(self.dev.precision()), "{:?} {what}: normalised error {e:.3e}", self.dev.precision());
    }
}

pub fn i(v: usize) -> KernelArg {
    KernelArg::I32(v as i32)
}

/// LayerNorm, residual (3 f32 shares) + LayerNorm, and the memory write-out against `ops::layer_norm`.
pub fn layernorm<D: Device>(dev: D) {
    let lab = Lab { dev };
    let (rows, c, eps) = (7, 200, 1e-5f32); // a row spans two of a thread's columns, the second partly
    let x = random(rows * c, 1, 2.0);
    let ln = LayerNorm { w: random(c, 3, 1.0), b: random(c, 4, 0.5) };
    let (w, b) = (lab.stored(&ln.w), lab.stored(&ln.b));
    // reference on the inputs as the device holds them
    let mut want = vec![0.0; rows * c];
    layer_norm(&x, &ln, eps, &mut want);

    let (xb, out) = (lab.f32(&x), lab.stored(&vec![0.0; rows * c]));
    let args = [lab.p(&out), lab.p(&xb), lab.p(&w), lab.p(&b), i(rows), i(c), KernelArg::F32(eps)];
    lab.run("layernorm", [rows as u32, 1, 1], [128, 1, 1], &args);
    lab.check("layernorm", &lab.read_stored(&out, rows * c), &want);

    // the delta in 3 f32 shares (a split-K projection's), added in order
    let shares: Vec<f32> = [5, 6, 7].iter().flat_map(|&seed| random(rows * c, seed, 1.0)).collect();
    let db = lab.f32(&shares);
    let args = [lab.p(&xb), lab.p(&db), i(3), lab.p(&out), lab.p(&w), lab.p(&b), i(rows), i(c), KernelArg::F32(eps)];
    lab.run("residual_layernorm", [rows as u32, 1, 1], [128, 1, 1], &args);
    let summed: Vec<f32> =
        (0..rows * c).map(|e| x[e] + shares[e] + shares[rows * c + e] + shares[2 * rows * c + e]).collect();
    layer_norm(&summed, &ln, eps, &mut want);
    lab.check("residual_layernorm (sum)", &lab.read_f32(&xb, rows * c), &summed);
    lab.check("residual_layernorm (norm)", &lab.read_stored(&out, rows * c), &want);

    // the last 2 rows of each of 2 streams of 3 rows, in f32, advancing a chain's segment counter from 5
    let (tail, step) = (lab.zeros(4 * c), lab.bytes(&5i32.to_le_bytes()));
    let args =
        [lab.p(&tail), lab.p(&xb), lab.p(&w), lab.p(&b), lab.p(&step), i(4), i(2), i(3), i(c), KernelArg::F32(eps)];
    lab.run("layernorm_tail", [4, 1, 1], [128, 1, 1], &args);
    let picked: Vec<f32> = [1, 2, 4, 5].iter().flat_map(|&r| want[r * c..][..c].to_vec()).collect();
    lab.check("layernorm_tail", &lab.read_f32(&tail, 4 * c), &picked);
    assert_eq!(lab.read_f32(&step, 1)[0].to_bits(), 6, "the chain counter advances by one");
}

/// Every matmul tile and the f32-output entry point on shapes with partial tiles, with bias and GELU, and rows
/// scattered to a strided cache, against `ops::matmul`.
pub fn matmul_kernels<D: Device>(dev: D) {
    let lab = Lab { dev };
    let p = lab.dev.precision();
    // shapes that leave partial tiles in every dimension of every tile (m = 130: a third row block of 128, with
    // its first rows the only ones within M). The tensor-core tiles load by cp.async when K is a multiple of 32 (64,
    // 96, 256: 8 K steps, twice around the 4 stages, in 1 or 2 shares) and element by element otherwise; the 16 × 8
    // tile's lanes load 16 bytes at a time but at K = 27, and at K = 520 go around K three times, the last time 8
    // elements
    for (m, n, k, gelu) in [
        (16, 21, 520, false),
        (40, 136, 256, false),
        (37, 70, 40, false),
        (5, 130, 96, true),
        (64, 64, 64, false),
        (9, 20, 27, true),
        (33, 72, 200, false),
        (130, 136, 72, true),
    ] {
        let x = random(m * k, 10 + m as u64, 1.0);
        let w = random(n * k, 20 + n as u64, 0.5);
        let bias = random(n, 30, 0.5);
        let (xd, wd) = (lab.read_stored(&lab.stored(&x), x.len()), lab.read_stored(&lab.stored(&w), w.len()));
        let mut want = vec![0.0; m * n];
        let mat = MatRef { w: &wd, n_in: k, n_out: n, layout: Layout::OutIn };
        matmul(&xd, m, mat, Some(&bias), &mut want, false);
        if gelu {
            gelu_new(&mut want);
        }
        let (xb, wb, bb) = (lab.stored(&x), lab.stored(&w), lab.stored(&bias));
        for tile in MATMUL_TILES {
            let out = lab.stored(&vec![0.0; m * n]);
            let args =
                [lab.p(&out), lab.p(&xb), lab.p(&wb), lab.p(&bb), i(m), i(n), i(k), i(gelu as usize), i(m), i(0)];
            lab.run(tile.kernel, tile.grid(m, n), tile.block(p), &args);
            lab.check(&format!("{} {m}×{n}×{k}", tile.kernel), &lab.read_stored(&out, m * n), &want);
        }
        // f32 out in 1 or (without GELU) 3 shares of K, summed in order; K = 200 splits at 128, and shorter Ks
        // leave the third share (or the second) empty
        for tile in MATMUL_TILES {
            for shares in if gelu { 1..=1 } else { 1..=3 } {
                let out32 = lab.zeros(shares * m * n);
                let args = [lab.p(&out32), lab.p(&xb), lab.p(&wb), lab.p(&bb), i(m), i(n), i(k), i(gelu as usize)];
                let [x, y, _] = tile.grid(m, n);
                lab.run(tile.kernel_f32, [x, y, shares as u32], tile.block(p), &args);
                let got = lab.read_f32(&out32, shares * m * n);
                let summed: Vec<f32> = (0..m * n).map(|e| (0..shares).map(|z| got[z * m * n + e]).sum()).collect();
                lab.check(&format!("{} {m}×{n}×{k}, {shares} share(s)", tile.kernel_f32), &summed, &want);
            }
        }
    }
    // rows scattered to a strided cache: 2 streams of 3 rows into slots of 5
    let (m, n, k) = (6, 8, 16);
    let (x, w) = (random(m * k, 40, 1.0), random(n * k, 41, 1.0));
    let (xb, wb) = (lab.stored(&x), lab.stored(&w));
    let (xd, wd) = (lab.read_stored(&xb, m * k), lab.read_stored(&wb, n * k));
    let mut want = vec![0.0; m * n];
    matmul(&xd, m, MatRef { w: &wd, n_in: k, n_out: n, layout: Layout::OutIn }, None, &mut want, false);
    for tile in MATMUL_TILES {
        let out = lab.stored(&vec![0.0; 10 * n]);
        let args = [lab.p(&out), lab.p(&xb), lab.p(&wb), KernelArg::Ptr(0), i(m), i(n), i(k), i(0), i(3), i(5)];
        lab.run(tile.kernel, tile.grid(m, n), tile.block(p), &args);
        let got = lab.read_stored(&out, 10 * n);
        let placed: Vec<f32> = [0, 1, 2, 5, 6, 7].iter().flat_map(|&r| got[r * n..][..n].to_vec()).collect();
        lab.check(&format!("{} (strided rows)", tile.kernel), &placed, &want);
        assert!(got[3 * n..5 * n].iter().all(|&v| v == 0.0), "rows between streams are left alone");
    }
}

/// Causal attention by the book: softmax(q·kᵀ/√hs) v over keys 0..=pos, per stream and head.
pub fn attention_reference(
    qkv: &[f32],
    streams: usize,
    cap: usize,
    q0: usize,
    nq: usize,
    c: usize,
    hs: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; streams * nq * c];
    for s in 0..streams {
        for qi in 0..nq {
            let pos = q0 + qi;
            for h in 0..c / hs {
                let row = |p: usize, part: usize| &qkv[((s * cap + p) * 3 + part) * c + h * hs..][..hs];
                let q = row(pos, 0);
                let scores: Vec<f32> = (0..=pos)
                    .map(|j| q.iter().zip(row(j, 1)).map(|(a, b)| a * b).sum::<f32>() / (hs as f32).sqrt())
                    .collect();
                let mx = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f32 = e.iter().sum();
                for d in 0..hs {
                    out[(s * nq + qi) * c + h * hs + d] = (0..=pos).map(|j| e[j] / z * row(j, 2)[d]).sum();
                }
            }
        }
    }
    out
}

/// Flash attention against [`attention_reference`]: multi-stream segments, a decode row, head sizes 32 and 64.
pub fn attention<D: Device>(dev: D) {
    let lab = Lab { dev };
    // (streams, cache rows, first query position, queries, width, head size): a segment of 2 streams that
    // spans two query blocks and two key tiles, a decode step at position 130, head size 64, and 150 queries from
    // position 16 (three query blocks, three key tiles), and a decode row at position 600 (10 splits of 64: the
    // merge takes two batches of 8)
    for (streams, cap, q0, nq, c, hs) in [
        (2, 80, 0, 70, 64, 32),
        (1, 140, 130, 1, 64, 32),
        (1, 40, 0, 37, 128, 64),
        (1, 200, 16, 150, 128, 64),
        (1, 620, 600, 1, 64, 32),
    ] {
        let mut qkv = random(streams * cap * 3 * c, 50 + nq as u64, 1.5);
        if cap == 620 {
            // the row's largest scores at key 590, in the merge's second batch: the first must be rescaled
            let (q, k) = (600 * 3 * c, 590 * 3 * c + c);
            for e in 0..c {
                qkv[k + e] = 2.0 * qkv[q + e];
            }
        }
        let qkvb = lab.stored(&qkv);
        let want = attention_reference(&lab.read_stored(&qkvb, qkv.len()), streams, cap, q0, nq, c, hs);
        // the same rows one element past a 16-byte boundary, which the bf16 kernel loads element by element
        let shifted = lab.stored(&[&[0.0], &qkv[..]].concat());
        let elem = match lab.dev.precision() {
            Precision::Bf16 => 2,
            Precision::F32 => 4,
        };
        let qkv_ptrs = [("aligned", lab.p(&qkvb)), ("unaligned", KernelArg::Ptr(lab.dev.address(&shifted) + elem))];
        // in one pass, and with the keys split in 64s (a block per split, then attention_merge)
        for ((layout, qkv_ptr), split_keys) in qkv_ptrs.into_iter().flat_map(|p| [(p, cap), (p, 64)]) {
            let splits = (q0 + nq).div_ceil(split_keys);
            let out = lab.stored(&vec![0.0; streams * nq * c]);
            let partial = lab.zeros(if splits > 1 { streams * splits * nq * (c / hs) * (hs + 2) } else { 1 });
            let grid = [nq.div_ceil(64) as u32, (c / hs) as u32, (streams * splits) as u32];
            let args =
                [lab.p(&out), lab.p(&partial), qkv_ptr, i(nq), i(q0), i(cap), i(c), i(hs), i(splits), i(split_keys)];
            lab.run("attention", grid, [128, 1, 1], &args);
            if splits > 1 {
                let args = [lab.p(&out), lab.p(&partial), i(nq), i(q0), i(c), i(hs), i(splits), i(split_keys)];
                lab.run("attention_merge", [nq as u32, streams as u32, c.div_ceil(256) as u32], [128, 1, 1], &args);
            }
            let what = format!("attention {streams}×{nq} at {q0}, hs {hs}, {splits} split(s), {layout} qkv");
            lab.check(&what, &lab.read_stored(&out, want.len()), &want);
        }
    }
}

/// RMT-R's two-pass retrieval over several chunks against a direct softmax.
pub fn retrieval<D: Device>(dev: D) {
    let lab = Lab { dev };
    // 20 queries (a full pass of 16 and a partial one), width 200 (two dim blocks of the partials, 7 of the merge,
    // the second and the seventh partial), 300 rows in chunks of 100 (two weight tiles each, the second partial),
    // or of 2 (150 chunks: more than the merge's threads; its warps take 3 or 2 groups of 8, the last group of 6)
    let (m, d, n) = (20usize, 200usize, 300usize);
    let scale = 1.0 / (d as f32).sqrt();
    let (q, keys, values) = (random(m * d, 60, 2.0), random(n * d, 61, 2.0), random(n * d, 62, 1.0));
    let (qb, kb, vb) = (lab.stored(&q), lab.stored(&keys), lab.stored(&values));
    let (q, keys, values) =
        (lab.read_stored(&qb, q.len()), lab.read_stored(&kb, keys.len()), lab.read_stored(&vb, values.len()));
    let mut want = vec![0.0; m * d];
    for qi in 0..m {
        let s: Vec<f32> =
            (0..n).map(|j| (0..d).map(|e| q[qi * d + e] * keys[j * d + e]).sum::<f32>() * scale).collect();
        let mx = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = s.iter().map(|v| (v - mx).exp()).sum();
        for e in 0..d {
            want[qi * d + e] = (0..n).map(|j| (s[j] - mx).exp() / z * values[j * d + e]).sum();
        }
    }
    // scores q·kᵀ on the matmul kernel, then the chunks, then their merge
    let scores = lab.zeros(m * n);
    let args = [lab.p(&scores), lab.p(&qb), lab.p(&kb), KernelArg::Ptr(0), i(m), i(n), i(d), i(0)];
    let tile = MatmulTile::for_shape(m, n);
    lab.run(tile.kernel_f32, tile.grid(m, n), tile.block(lab.dev.precision()), &args);
    for chunk in [100, 2] {
        let chunks = n.div_ceil(chunk);
        let partial = lab.zeros(m * chunks * (d + 2));
        let args = [lab.p(&partial), lab.p(&scores), lab.p(&vb), i(n), i(m), i(d), i(chunk), KernelArg::F32(scale)];
        lab.run("retrieval_partial", [chunks as u32, d.div_ceil(128) as u32, 1], [128, 1, 1], &args);
        let out = lab.stored(&vec![0.0; m * d]);
        let args = [lab.p(&out), lab.p(&partial), i(chunks), i(d)];
        lab.run("retrieval_merge", [m as u32, d.div_ceil(32) as u32, 1], [256, 1, 1], &args);
        lab.check(&format!("retrieval in {chunks} chunks"), &lab.read_stored(&out, m * d), &want);
    }
}

/// ARMT's read and write (f32 in both builds) against `cpu::associative`: 2 streams of 37 rows 200 wide (a row spans
/// two of a block's column passes, the second partly; the tiles of 64 columns, the last partial; the products' K
/// chunks of 64 and their steps of 32, the last of both partial), key maps 5 wide (dk = 30: one partial K chunk; a
/// warp with two outputs), the last 19 rows of each stream writing (tiles of 16 rows: the read's third and the
/// write's second partial); each stream has its own state, `stride` floats after the one before (more than a state:
/// other layers').
pub fn associative<D: Device>(dev: D) {
    let lab = Lab { dev };
    let (streams, per, d, dm, m) = (2usize, 37usize, 200usize, 5usize, 19usize);
    let (dk, rows) = (6 * dm, streams * per);
    let (len, stride) = (dk * (d + 1), dk * (d + 1) + 40);
    let map = |n_out: usize, seed: u64, b: Option<Vec<f32>>| Linear {
        w: random(n_out * d, seed, 0.3),
        b,
        n_in: d,
        n_out,
        layout: Layout::OutIn,
    };
    let w = Associative {
        w_mq: map(dm, 80, None),
        w_mk: map(dm, 81, None),
        w_mv: map(d, 82, None),
        w_mb: map(1, 83, Some(vec![0.4])),
    };
    // states as writes leave them: z ≥ 0, so that every denominator is positive; stream 0's z is small next to
    // the keys (γ > 0, the replacing gain is 1), stream 1's as large as many keys' sum (γ = 0, the gain above 1)
    let mut states = random(streams * stride, 84, 1.0);
    for (s, st) in states.chunks_exact_mut(stride).enumerate() {
        let scale = if s == 0 { 1.0 } else { 500.0 };
        st[dk * d..len].iter_mut().for_each(|z| *z = scale * z.abs());
    }
    let x = random(rows * d, 85, 2.0);
    let buf = |l: &Linear| lab.f32(&l.w);
    let (wq, wk, wv, wb, bb) = (buf(&w.w_mq), buf(&w.w_mk), buf(&w.w_mv), buf(&w.w_mb), lab.f32(&[0.4]));
    // each rule's write, and the authors' rule with a decay, against the CPU's; the replacing gain and the decay
    // must each change the write (else the kernels do not see them)
    let mut written = Vec::new();
    let writes =
        [(AssociativeWrite::Delta, None), (AssociativeWrite::Replacing, None), (AssociativeWrite::Delta, Some(0.75))];
    for (rule, decay) in writes {
        let replacing = (rule == AssociativeWrite::Replacing) as usize;
        let memory = MemoryConfig {
            kind: MemoryKind::Armt,
            num_mem_tokens: m,
            segment_size: per - m,
            retrieval: None,
            d_mem: Some(dm),
            write: rule,
            decay,
        };
        let (xb, sb) = (lab.f32(&x), lab.f32(&states));
        let eps = KernelArg::F32(associative::EPS);

        let (mut want, mut want_states) = (x.clone(), states.clone());
        for (xs, st) in want.chunks_exact_mut(per * d).zip(want_states.chunks_exact_mut(stride)) {
            let (a, z) = st[..len].split_at_mut(dk * d);
            associative::read(&w, a, z, xs, d);
            associative::write(&w, &memory, a, z, &xs[(per - m) * d..], d);
        }
        // the K chunks' shares: 64 columns each, of d = 200 (4 chunks, the last partial) and of dk = 30 (1, partial)
        let chunks = |k: usize| k.div_ceil(64);
        let (map_chunks, delta_chunks) = (chunks(d), chunks(d) + chunks(dk));
        let partial = lab.zeros((map_chunks * rows * dm).max(delta_chunks * streams * m * d));
        let map = |w: &D::Buffer, skip: usize, n: usize| {
            let args = [lab.p(&partial), lab.p(&xb), lab.p(w), i(per), i(skip), i(n), i(d), i(dm)];
            lab.run("associative_map", [n.div_ceil(16) as u32, streams as u32, map_chunks as u32], [128, 1, 1], &args);
        };
        let query = lab.zeros(rows * dk);
        map(&wq, 0, per);
        let args =
            [lab.p(&query), lab.p(&partial), i(map_chunks), lab.p(&sb), i(stride), i(rows), i(per), i(d), i(dm), eps];
        lab.run("associative_query", [rows as u32, 1, 1], [128, 1, 1], &args);
        let args = [lab.p(&xb), lab.p(&query), lab.p(&sb), i(stride), i(per), i(d), i(dk)];
        lab.run(
            "associative_read",
            [per.div_ceil(16) as u32, d.div_ceil(64) as u32, streams as u32],
            [128, 1, 1],
            &args,
        );
        lab.check("associative_query and associative_read", &lab.read_f32(&xb, rows * d), &want);

        let (keys, gates, delta) =
            (lab.zeros(streams * m * dk), lab.zeros(streams * m * 3), lab.zeros(streams * m * d));
        map(&wk, per - m, m);
        let args = [lab.p(&keys), lab.p(&gates), lab.p(&partial), i(map_chunks), lab.p(&xb), lab.p(&wb), lab.p(&bb)];
        let lambda = KernelArg::F32(memory.decay_factor());
        let args = [&args[..], &[lab.p(&sb), i(stride), i(m), i(per), i(d), i(dm), eps, i(replacing), lambda]].concat();
        lab.run("associative_key", [m as u32, streams as u32, 1], [128, 1, 1], &args);
        let args = [lab.p(&partial), lab.p(&keys), lab.p(&gates), lab.p(&xb), lab.p(&wv), lab.p(&sb), i(stride), i(m)];
        let args = [&args[..], &[i(per), i(d), i(dk), lambda]].concat();
        let grid = [m.div_ceil(16) as u32, d.div_ceil(64) as u32, (streams * delta_chunks) as u32];
        lab.run("associative_delta_part", grid, [128, 1, 1], &args);
        let args = [lab.p(&delta), lab.p(&partial), i(delta_chunks), lab.p(&gates), i(streams * m), i(d)];
        lab.run("associative_delta", [(streams * m * d).div_ceil(256) as u32, 1, 1], [256, 1, 1], &args);
        let step = lab.bytes(&5i32.to_le_bytes());
        let args = [lab.p(&sb), lab.p(&keys), lab.p(&delta), lab.p(&gates), lab.p(&step), i(stride), i(m), i(d)];
        let args = [&args[..], &[i(dk), lambda]].concat();
        lab.run("associative_update", [len.div_ceil(256) as u32, streams as u32, 1], [256, 1, 1], &args);
        assert_eq!(lab.read_f32(&step, 1)[0].to_bits(), 6, "the chain counter advances by one");
        let got = lab.read_f32(&sb, states.len());
        for (k, (g, w)) in got.chunks_exact(stride).zip(want_states.chunks_exact(stride)).enumerate() {
            let what = format!("associative write ({rule:?}, decay {decay:?}), stream {k}");
            lab.check(&format!("{what} (A)"), &g[..dk * d], &w[..dk * d]);
            lab.check(&format!("{what} (z)"), &g[dk * d..len], &w[dk * d..len]);
            assert_eq!(g[len..], w[len..], "stream {k}: the values between states are left alone");
        }
        // the write changed the states by more than the tolerance: the check sees a missing update
        assert!(rel_err(&states, &want_states) > 1e-2, "the test's write is too small to see");
        written.push(want_states);
    }
    // the writes themselves (new state − old) differ by more than any tolerance here (1e-2 at most): a kernel
    // that dropped the gain or the decay would fail its check above (the decay's: 5.7e-2)
    let write = |w: &[f32]| -> Vec<f32> { w.iter().zip(&states).map(|(a, b)| a - b).collect() };
    for (k, what) in [(1, "the replacing gain"), (2, "the decay")] {
        let gap = rel_err(&write(&written[k]), &write(&written[0]));
        assert!(gap > 2e-2, "{what} changes the write by only {gap:.1e}");
    }
}

/// Token and memory rows with restarting positions, and the f32 → storage conversion.
pub fn embed<D: Device>(dev: D) {
    let lab = Lab { dev };
    let (c, vocab, positions) = (32, 50, 20);
    let (wte, wpe, mem) = (random(vocab * c, 70, 1.0), random(positions * c, 71, 1.0), random(3 * c, 72, 1.0));
    let (wteb, wpeb) = (lab.stored(&wte), lab.stored(&wpe));
    let (wte, wpe) = (lab.read_stored(&wteb, wte.len()), lab.read_stored(&wpeb, wpe.len()));
    // 2 streams of 4 rows from position 3: [mem0, tok 7, tok 49, mem1] and [mem2, tok 0, tok 1, tok 2]
    let ids: [i32; 8] = [-1, 7, 49, -2, -3, 0, 1, 2];
    let id_bytes = |ids: &[i32]| ids.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>();
    let idb = lab.bytes(&id_bytes(&ids));
    let (memb, x) = (lab.f32(&mem), lab.zeros(8 * c));
    let null = KernelArg::Ptr(0);
    let args = [lab.p(&x), lab.p(&idb), null, lab.p(&memb), lab.p(&wteb), lab.p(&wpeb), i(8), i(4), i(3), i(c)];
    lab.run("embed", [1, 1, 1], [256, 1, 1], &args);
    // the same rows as segment 1 of a chain's ids (segment 0: other ids), picked by the device counter
    let chained = lab.bytes(&id_bytes(&[[5; 8], ids].concat()));
    let (step, x2) = (lab.bytes(&1i32.to_le_bytes()), lab.zeros(8 * c));
    let args =
        [lab.p(&x2), lab.p(&chained), lab.p(&step), lab.p(&memb), lab.p(&wteb), lab.p(&wpeb), i(8), i(4), i(3), i(c)];
    lab.run("embed", [1, 1, 1], [256, 1, 1], &args);
    assert_eq!(lab.read_f32(&x2, 8 * c), lab.read_f32(&x, 8 * c), "the chain counter selects the segment's ids");
    let want: Vec<f32> = ids
        .iter()
        .enumerate()
        .flat_map(|(r, &id)| {
            let e = if id >= 0 { &wte[id as usize * c..][..c] } else { &mem[(-id - 1) as usize * c..][..c] };
            let pos = 3 + r % 4;
            e.iter().zip(&wpe[pos * c..][..c]).map(|(a, b)| a + b).collect::<Vec<_>>()
        })
        .collect();
    lab.check("embed", &lab.read_f32(&x, 8 * c), &want);

    let stored = lab.stored(&vec![0.0; 3 * c]);
    lab.run("to_storage", [1, 1, 1], [256, 1, 1], &[lab.p(&stored), lab.p(&memb), i(3 * c)]);
    lab.check("to_storage", &lab.read_stored(&stored, 3 * c), &mem);
    for bf16_store in [false, true] {
        let out = lab.zeros(3 * c);
        lab.run("stored_state", [1, 1, 1], [256, 1, 1], &[lab.p(&out), lab.p(&memb), i(3 * c), i(bf16_store as usize)]);
        let want: Vec<f32> =
            if bf16_store { mem.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect() } else { mem.clone() };
        assert_eq!(lab.read_f32(&out, 3 * c), want, "stored_state, bf16 store {bf16_store}: bit-exact");
    }
}

/// An ARMT [`tiny_model`] whose value maps are random too (zero at initialisation, they would write nothing).
pub fn tiny_armt(seed: u64) -> Model {
    let mut model = Model::random(
        Config::from_json(
            r#"{"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 120, "n_positions": 48,
            "eos_token_id": 119, "gen_token_id": 118,
            "memory": {"kind": "armt", "num_mem_tokens": 4, "segment_size": 16, "d_mem": 4}}"#,
        )
        .unwrap(),
        seed,
    )
    .unwrap();
    for (l, a) in model.weights.associative.iter_mut().enumerate() {
        a.w_mv.w = random(a.w_mv.w.len(), seed + 100 + l as u64, 0.3);
    }
    model
}

/// `model` (an ARMT) with a decay of 0.8 on its state (`memory.decay`): strong enough to move the state by far more
/// than the checks' tolerances (`emulated_decayed_armt_stream_matches_the_cpu` asserts it).
pub fn decayed(mut model: Model) -> Model {
    model.config.memory.decay = Some(0.8);
    model
}

pub fn tiny_model(memory: &str, seed: u64) -> Model {
    // head size 32 (the kernels take multiples of 32 up to 64), 2 layers, n_positions room for decoding
    scaled_model(
        &format!(
            r#"{{"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 120, "n_positions": 48,
            "eos_token_id": 119, "gen_token_id": 118, "memory": {memory}}}"#
        ),
        seed,
    )
}

/// A random model of this config with weights ×3: larger than GPT-2's 0.02 init, so activations reach GELU's
/// curve and LayerNorm has work to do.
pub fn scaled_model(config: &str, seed: u64) -> Model {
    let mut m = Model::random(Config::from_json(config).unwrap(), seed).unwrap();
    m.weights.tensors_mut().into_iter().for_each(|t| t.iter_mut().for_each(|v| *v *= 3.0));
    m
}

pub fn stream(n: usize, seed: u64) -> Vec<u32> {
    random(n, seed, 1.0).iter().map(|v| ((v + 1.0) * 55.0) as u32).collect()
}

/// Reads a stream of `segments` segments (seed `seed`) on the exact CPU reference once, then on each of `devices`:
/// segment by segment (memory after every segment, then a 3-token greedy answer), and again in one read (for plain
/// RMT a device-side chain), whose final memory must agree too. f32: same greedy tokens; bf16: logits compared
/// while the tokens fed so far are the same.
pub fn compare_streams(
    model: &Model,
    segments: usize,
    seed: u64,
    devices: impl IntoIterator<Item = (Precision, Engine)>,
) {
    let seg = model.config.memory.segment_size;
    let tokens = stream(seg * segments + 5, seed);
    let (read, question) = tokens.split_at(seg * segments);
    let mut cpu = Engine::cpu_reference(model.clone()).session();
    let mut memory = Vec::new();
    for chunk in read.chunks(seg) {
        cpu.read(chunk).unwrap();
        memory.push(cpu.state().memory.clone());
    }
    let x = cpu.ask(question, 3).unwrap();
    let kind = model.config.memory.kind;
    for (p, gpu) in devices {
        let mut b = gpu.session();
        for (k, (chunk, expected)) in read.chunks(seg).zip(&memory).enumerate() {
            b.read(chunk).unwrap();
            let e = rel_err(&b.state().memory, expected);
            eprintln!("{kind:?} {p:?} memory after segment {k}: {e:.2e}");
            assert!(e <= tolerance(p), "{p:?}: memory after segment {k}: {e:.3e}");
        }
        let y = b.ask(question, 3).unwrap();
        if p == Precision::F32 {
            assert_eq!(y.tokens, x.tokens, "greedy answer");
        }
        // a step's logits are comparable while the tokens fed so far are the same (bf16 may pick another)
        let same_prefix = x.tokens.iter().zip(&y.tokens).take_while(|(a, b)| a == b).count();
        for (step, (g, c)) in y.logits.iter().zip(&x.logits).enumerate().take(same_prefix + 1) {
            let e = rel_err(g, c);
            eprintln!("{kind:?} {p:?} logits of answer step {step}: {e:.2e}");
            assert!(e <= logits_tolerance(p), "{p:?}: logits of answer step {step}: {e:.3e}");
        }
        let mut whole = gpu.session();
        whole.read(read).unwrap();
        let e = rel_err(&whole.state().memory, memory.last().unwrap());
        eprintln!("{kind:?} {p:?} memory after all {segments} segments read at once: {e:.2e}");
        assert!(e <= tolerance(p), "{p:?}: memory after one read of {segments} segments: {e:.3e}");
    }
}

/// Two streams read in one batched step on `gpu` (f32) agree with separate CPU sessions within 1e-5.
pub fn batched_streams(model: &Model, gpu: Engine) {
    let (a, b) = (stream(32, 4), stream(32, 5));
    let mut batch = gpu.batch(2);
    batch.read(&[&a, &b]).unwrap();
    let cpu = Engine::cpu_reference(model.clone());
    for (session, tokens) in batch.sessions().iter().zip([&a, &b]) {
        let mut alone = cpu.session();
        alone.read(tokens).unwrap();
        let e = rel_err(&session.state().memory, &alone.state().memory);
        assert!(e <= 1e-5, "batched stream vs alone: {e:.3e}");
    }
}
