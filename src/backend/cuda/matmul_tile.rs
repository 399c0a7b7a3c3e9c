//! The block tiles of `cuda/matmul.cu`'s kernels: each one's launch shape, the choice per matmul shape, and the
//! split of K for f32 outputs with too few blocks.
//!
//! A larger tile reads fewer bytes per FLOP (the step's matmuls stream their tiles from L2), a smaller one gives
//! more blocks. Measured on an H200 (`benches/cuda.rs`; bench/results/2026-11-26-h200-cuda-tiles.md, runs 5 and 6):
//! - 8,704 rows (16 streams): 128 × 128 is the fastest tile on all four of GPT-2 small's matmuls, by 11–22 %.
//! - 4,352 rows (8 streams): the step took 7.33 ms with 128 × 128 projections (204 blocks), 7.99 ms with 64 × 64
//!   ones (816 blocks).
//! - 544 rows (one stream): 64 × 64 beats 128 × 128 on qkv (by 31 %; 90 blocks of 128 × 128), fc (8 %; 120
//!   blocks) and attn proj (33 %, both in 3 shares of K). On fc proj 128 × 128 in 9 shares was 7 % faster than
//!   64 × 64 in 3; after the epilogue fix of run 14 (bench/results/2026-11-27-cuda-runs13-15.md) 35 % faster, and
//!   residual_layernorm loads shares together, so projections now take it ([`MatmulTile::for_projection`]).
//! - 128 × 64 and 64 × 128 never won; they were dropped.
//! - 544 rows again, after the main loops lost their per-step address arithmetic (runs 20–21,
//!   bench/results/2026-11-27-cuda-runs20-21.md): alone, 20 launches in a graph, 128 × 128 was 1.16× faster on qkv
//!   and 1.31× on fc. Picked for them in the step, it changed nothing (1.2021 against 1.2006 ms, same run), and
//!   ARMT's chain ran 3.5 % slower; so 64 × 64 stays.
//!
//! So the larger tile is picked once it fills the GPU. With one stream the projections' 768 columns give 108
//! blocks of 64 × 64 for 132 SMs, so those split K (each share a block of its own).
//!
//! Outputs of at most 16 rows (RMT-R's retrieval over 16 memory rows, decode rows) have a third tile, 16 × 8: a
//! SIMT kernel that reads each weight once for all the rows, where a 64 × 64 tile multiplies at least 48 rows of
//! zeros. On an H200 (bench/results/2026-11-26-cuda-runs10-12.md, run 12), 16 rows, per launch:
//! - the retrieval's fixed matmuls, whose 64 × 64 grids leave SMs idle: 16 × 8 is 2.2–2.6× faster on the folded
//!   query and output maps (768 × 768) and fc_1 (3,072 × 768), 1.2× on fc_2 (768 × 3,072, K split);
//! - the scores over a 1M-token store (31,264 × 768), 489 blocks of 64 × 64: 64 × 64 is 1.46× faster. It reads the
//!   16 rows once per 64 columns, 16 × 8 once per 8: past one wave the traffic decides.
//!
//! So with at most 16 rows the rule is the same, with 16 × 8 as the smallest tile: 64 × 64 once it fills the GPU,
//! else 16 × 8 (128 × 128 is not measured on 16 rows and not picked there).

use super::device::Precision;

/// One block tile: its kernels (activations out, and f32 out with K split over the grid's z) compute `rows ×
/// cols` outputs per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulTile {
    /// The kernel with activations (the storage type) out, in `cuda/matmul.cu`.
    pub kernel: &'static str,
    /// The kernel with f32 out, K split over `gridDim.z`.
    pub kernel_f32: &'static str,
    /// Output rows per block.
    pub rows: usize,
    /// Output columns per block.
    pub cols: usize,
    /// Threads per block of the bf16 build.
    bf16_threads: u32,
    /// Threads per block of the f32 checking build.
    f32_threads: u32,
}

/// Every tile: the few-rows tile, then the 2-D tiles smallest first.
pub const MATMUL_TILES: [MatmulTile; 3] = [
    MatmulTile {
        kernel: "matmul_16x8",
        kernel_f32: "matmul_f32_16x8",
        rows: 16,
        cols: 8,
        bf16_threads: 128,
        f32_threads: 128,
    },
    MatmulTile { kernel: "matmul", kernel_f32: "matmul_f32", rows: 64, cols: 64, bf16_threads: 128, f32_threads: 256 },
    MatmulTile {
        kernel: "matmul_128x128",
        kernel_f32: "matmul_f32_128x128",
        rows: 128,
        cols: 128,
        bf16_threads: 256,
        f32_threads: 256,
    },
];

/// Blocks a launch should have to fill an H100 or H200 (132 SMs) once.
const FILL_BLOCKS: usize = 132;
/// The least K a share of a split-K matmul takes (8 of the tensor-core kernel's K steps).
const MIN_SHARE_K: usize = 256;

impl MatmulTile {
    /// The tile for an `m × n` output: the largest that still fills the GPU (fewer bytes per FLOP), else the
    /// smallest (most blocks). Up to 16 rows the tiles are 16 × 8 and 64 × 64, beyond them 64 × 64 and 128 × 128.
    pub fn for_shape(m: usize, n: usize) -> MatmulTile {
        let tiles = if m <= MATMUL_TILES[0].rows { &MATMUL_TILES[..2] } else { &MATMUL_TILES[1..] };
        let fills = |t: &&MatmulTile| t.blocks(m, n) >= FILL_BLOCKS;
        *tiles.iter().rev().find(fills).unwrap_or(&tiles[0])
    }

    /// The tile and K shares of a projection (`m × n` f32 out, K = `k`, shares summed by residual_layernorm): the
    /// largest 2-D tile that fills the GPU alone, or whose shares fill it twice, else the smallest; up to 16 rows
    /// as [`for_shape`](Self::for_shape). Measured on an H200 (bench/results/2026-11-27-cuda-runs13-15.md, run 14):
    /// one stream's fc proj (544 × 768 × 3072) takes 128 × 128 in 8 shares of 384 (planned 9, the last empty),
    /// 1.35× faster than 64 × 64 in 3; its attn
    /// proj (K = 768, at most 3 shares of 128 × 128: 90 blocks) keeps 64 × 64 in 3 shares, 1.10× faster.
    pub fn for_projection(m: usize, n: usize, k: usize) -> (MatmulTile, usize) {
        let with_shares = |t: MatmulTile| (t, t.k_shares(m, n, k));
        if m <= MATMUL_TILES[0].rows {
            return with_shares(Self::for_shape(m, n));
        }
        let tiles = &MATMUL_TILES[1..];
        // judged by the planned shares, as measured (fc proj's 9th share was empty then)
        let fills = |t: &&MatmulTile| {
            t.blocks(m, n) >= FILL_BLOCKS || t.blocks(m, n) * t.planned_shares(m, n, k) >= 2 * FILL_BLOCKS
        };
        with_shares(*tiles.iter().rev().find(fills).unwrap_or(&tiles[0]))
    }

    /// Blocks of an `m × n` output.
    pub fn blocks(&self, m: usize, n: usize) -> usize {
        m.div_ceil(self.rows) * n.div_ceil(self.cols)
    }

    /// How many shares of K an f32 `m × n × k` matmul on this tile splits into: one when its blocks fill the
    /// GPU, else enough to fill it twice, each share at least 256 of K long, less those that `k_split` would leave
    /// empty.
    pub fn k_shares(&self, m: usize, n: usize, k: usize) -> usize {
        nonempty_shares(k, self.planned_shares(m, n, k))
    }

    /// The shares that fill the GPU twice (see [`k_shares`](Self::k_shares)), empty ones included.
    fn planned_shares(&self, m: usize, n: usize, k: usize) -> usize {
        let blocks = self.blocks(m, n);
        if blocks >= FILL_BLOCKS {
            return 1;
        }
        (2 * FILL_BLOCKS).div_ceil(blocks).min(k / MIN_SHARE_K).max(1)
    }

    /// f32 elements that hold the K shares of any split-K matmul of up to `max_m` rows and `n` columns on the
    /// tile [`for_shape`](Self::for_shape) or [`for_projection`](Self::for_projection) picks. One share: `m · n`.
    /// More: only with fewer than 132 blocks, and then at most `264 / blocks + 1` shares, so `shares · blocks <
    /// 3 · 132`; a block holds at most 128² outputs, so `shares · m · n < 3 · 132 · 128²`.
    pub fn shares_capacity(max_m: usize, n: usize) -> usize {
        (max_m * n).max(3 * FILL_BLOCKS * 128 * 128)
    }

    /// The launch grid of an `m × n` output (one share of K).
    pub fn grid(&self, m: usize, n: usize) -> [u32; 3] {
        [n.div_ceil(self.cols) as u32, m.div_ceil(self.rows) as u32, 1]
    }

    /// The launch block: the f32 checking build runs the 2-D tiles as 64 × 64 SIMT tiles of 16 × 16 threads.
    pub fn block(&self, precision: Precision) -> [u32; 3] {
        let threads = match precision {
            Precision::Bf16 => self.bf16_threads,
            Precision::F32 => self.f32_threads,
        };
        [threads, 1, 1]
    }
}

/// Of `planned` shares of K, those to which `cuda/matmul.cu`'s `k_split` gives columns: it cuts K into spans of
/// ⌈k / (64 · planned)⌉ · 64, so the last shares can be empty (K = 3072 in 9 planned: spans of 384, 8 shares). With
/// the returned count it cuts the same spans, none of them empty (`nonempty_shares_keep_the_spans`).
fn nonempty_shares(k: usize, planned: usize) -> usize {
    k.div_ceil(k_span(k, planned).max(64)).max(1)
}

/// The span of K each share gets from `k_split` with `shares` shares.
fn k_span(k: usize, shares: usize) -> usize {
    k.div_ceil(64 * shares) * 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_tiles_fill_the_gpu_or_split_k() {
        let pick = |m, n| MatmulTile::for_shape(m, n);
        // one stream: 64 × 64 everywhere (128 × 128 gives qkv 90 blocks, fc 120); the projections (768 wide, 108
        // blocks) split K: attn proj in 3 shares of 256, fc proj in 3 of 1024
        assert_eq!(pick(544, 2304).kernel, "matmul");
        assert_eq!(pick(544, 3072).kernel, "matmul");
        assert_eq!(pick(544, 768).kernel, "matmul");
        assert_eq!(pick(544, 768).k_shares(544, 768, 768), 3);
        assert_eq!(pick(544, 768).k_shares(544, 768, 3072), 3);
        // 8 streams: the projections' 204 blocks of 128 × 128 fill the GPU
        assert_eq!(pick(8 * 544, 768).kernel, "matmul_128x128");
        // 16 streams: every matmul takes the largest tile and one share
        assert_eq!(pick(16 * 544, 768).kernel, "matmul_128x128");
        assert_eq!(pick(16 * 544, 768).k_shares(16 * 544, 768, 3072), 1);
        // up to 16 rows (RMT-R's retrieval, decode rows): 16 × 8 while 64 × 64 leaves SMs idle (the retrieval's
        // maps and MLP), 64 × 64 once it fills the GPU (scores over a long store, the LM head); 17 rows: 64 × 64
        assert_eq!(pick(16, 768).kernel, "matmul_16x8");
        assert_eq!(pick(16, 3072).kernel, "matmul_16x8");
        assert_eq!(pick(16, 131 * 64).kernel, "matmul_16x8");
        assert_eq!(pick(16, 132 * 64).kernel, "matmul");
        assert_eq!(pick(16, 1954 * 16).kernel, "matmul");
        assert_eq!(pick(1, 50257).kernel, "matmul");
        assert_eq!(pick(17, 768).kernel, "matmul");
        // projections: one stream's fc proj in 8 shares of 128 × 128 (30 blocks; 9 planned, the 9th empty), its attn proj in 3 of 64 × 64
        // (128 × 128 would have 90 blocks); 8 streams: 128 × 128 unsplit (204 blocks); decode rows as for_shape
        let proj = |m, n, k| {
            let (t, shares) = MatmulTile::for_projection(m, n, k);
            (t.kernel_f32, shares)
        };
        assert_eq!(proj(544, 768, 3072), ("matmul_f32_128x128", 8));
        assert_eq!(proj(544, 768, 768), ("matmul_f32", 3));
        assert_eq!(proj(8 * 544, 768, 3072), ("matmul_f32_128x128", 1));
        assert_eq!(proj(16, 768, 3072), ("matmul_f32_16x8", 3));
        // a decode row: 96 blocks of 8 columns, so K = 768 in 3 shares of 256
        assert_eq!(pick(1, 768).k_shares(1, 768, 768), 3);
        assert_eq!(pick(16, 768).grid(16, 768), [96, 1, 1]);
        assert_eq!(MatmulTile::for_shape(1, 1).grid(1, 1), [1, 1, 1]);
    }

    #[test]
    fn nonempty_shares_keep_the_spans() {
        for k in (8..5000).step_by(8) {
            for planned in 1..40 {
                let used = nonempty_shares(k, planned);
                let span = k_span(k, used);
                assert!(used <= planned && span == k_span(k, planned), "k {k}, {planned} planned");
                assert!((used - 1) * span < k && used * span >= k, "k {k}: share {} empty", used - 1);
            }
        }
        assert_eq!(nonempty_shares(3072, 9), 8);
        assert_eq!(nonempty_shares(768, 3), 3);
    }

    #[test]
    fn shares_fit_their_capacity() {
        for n in [1, 64, 100, 768, 2304, 3072, 5000] {
            for k in [16, 256, 768, 3072, 6400] {
                for m in 1..=1100 {
                    let shares = MatmulTile::for_shape(m, n).k_shares(m, n, k);
                    assert!(shares * m * n <= MatmulTile::shares_capacity(m, n), "{m} × {n} × {k}: {shares} shares");
                    let (_, shares) = MatmulTile::for_projection(m, n, k);
                    assert!(shares * m * n <= MatmulTile::shares_capacity(m, n), "{m} × {n} × {k}: {shares} shares");
                }
            }
        }
    }
}
