// out = in · Wᵀ + bias, optionally GELU, with f32 accumulation: every linear layer of the step. Bias and GELU
// are fused in the epilogue. W is [N, K] (each output's weights contiguous), the "col" operand of mma.
// bf16 builds run a tensor-core kernel (mma.sync m16n8k16); the f32 checking build a SIMT kernel; outputs of at
// most 16 rows a SIMT kernel in both (the 16 × 8 tile: W is read once, nothing is multiplied by zeros). The f32-output
// kernels can split K over gridDim.z (split-K, for outputs with too few blocks to fill the GPU): block z writes
// the partial sums of its share to out + z·M·N, the bias in share 0 only, and the consumer adds the shares up in
// order (residual_layernorm), so results do not depend on scheduling.
#include "common.cuh"

// Block z's share of K: columns [kb, ke), whole multiples of 64 (K steps of either build) but the last.
DEVICE void k_split(int K, int& kb, int& ke) {
    int span = (K + 64 * gridDim.z - 1) / (64 * gridDim.z) * 64;
    kb = blockIdx.z * span;
    ke = kb + span < K ? kb + span : K;
}

// Output row of input row r: row (r / per) * stride + r % per, so a batch of streams can land in a
// cache laid out with a fixed stride per stream (per = rows, stride = 0 for a plain matrix).
DEVICE long out_row(int r, int per, int stride) { return (long)(r / per) * stride + r % per; }

template <class TOut>
DEVICE void epilogue(TOut* out, const floatX* bias, int gelu_act, int M, int N, int r, int n, float acc, int per,
                     int stride) {
    if (r >= M || n >= N) return;
    if (bias) acc += to_float(bias[n]);
    if (gelu_act) acc = gelu(acc);
    store(&out[out_row(r, per, stride) * N + n], acc);
}

// The epilogue of a thread holding mma accumulator fragments: rows r0 + 16·mi + 8·h, column pairs c0 + 8·ni + {0, 1}
// (acc[mi][ni][2h + j]). Each row's place (a division by `per`) and each column's bias are worked out once, and a
// pair is one 4-byte (bf16) or 8-byte (f32) store where aligned: the epilogue was most of the 64 × 64 kernel's
// instructions when every output computed its own (Nsight Compute, bench/results/2026-11-27-cuda-runs13-15.md).
template <int MI, int NI, class TOut>
DEVICE void pair_epilogue(TOut* out, const floatX* bias, int gelu_act, int M, int N, int r0, int c0,
                          const float (&acc)[MI][NI][4], int per, int stride) {
    float b[NI][2];
#pragma unroll
    for (int ni = 0; ni < NI; ni++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            int n = c0 + 8 * ni + j;
            b[ni][j] = bias && n < N ? to_float(bias[n]) : 0.0f;
        }
    bool pairs = N % 2 == 0 && ((unsigned long long)out % (2 * sizeof(TOut))) == 0;
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int r = r0 + 16 * mi + 8 * h;
            if (r >= M) continue;
            TOut* row = out + out_row(r, per, stride) * N;
#pragma unroll
            for (int ni = 0; ni < NI; ni++) {
                int n = c0 + 8 * ni;
                float v[2];
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    v[j] = acc[mi][ni][2 * h + j] + b[ni][j];
                    if (gelu_act) v[j] = gelu(v[j]);
                }
                if (pairs && n + 1 < N) {
                    store_pair(row + n, v[0], v[1]);
                } else {
#pragma unroll
                    for (int j = 0; j < 2; j++)
                        if (n + j < N) store(row + n + j, v[j]);
                }
            }
        }
}

#ifdef RMT_F32
// SIMT: 256 threads compute the 64 × 64 tile at (m0, n0), each 4×4 outputs strided by 16 so that shared-memory
// reads broadcast or hit distinct banks. A larger block tile runs as several of these in turn.
#define BK 16
template <class TOut>
DEVICE void simt_tile(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K, int kb,
                      int ke, int gelu_act, int per, int stride, int m0, int n0) {
    __shared__ float as[BK][64 + 1];
    __shared__ float ws[BK][64 + 1];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {};
    for (int k0 = kb; k0 < ke; k0 += BK) {
        for (int i = threadIdx.x; i < 64 * BK; i += blockDim.x) {
            int r = i / BK, k = i % BK;
            as[k][r] = (m0 + r < M && k0 + k < ke) ? to_float(in[(long)(m0 + r) * K + k0 + k]) : 0.0f;
            ws[k][r] = (n0 + r < N && k0 + k < ke) ? to_float(w[(long)(n0 + r) * K + k0 + k]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; k++)
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += as[k][ty + 16 * i] * ws[k][tx + 16 * j];
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            epilogue(out, bias, gelu_act, M, N, m0 + ty + 16 * i, n0 + tx + 16 * j, acc[i][j], per, stride);
}

template <int BM, int BN, class TOut>
DEVICE void matmul_block(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                         int kb, int ke, int gelu_act, int per, int stride) {
    for (int i = 0; i < BM; i += 64)
        for (int j = 0; j < BN; j += 64)
            simt_tile(out, in, w, bias, M, N, K, kb, ke, gelu_act, per, stride, blockIdx.y * BM + i,
                      blockIdx.x * BN + j);
}
#else
// Tensor cores: WARPS_M × WARPS_N warps, each a WM × WN tile of 16×8 mma tiles, K in steps of 32 through an
// S-stage cp.async pipeline: the tiles of the next S − 1 K steps are in flight while the tensor cores work on this
// one, one barrier per step.
#define BK 32

// A shared tile of ROWS × 32 bf16 in which the 8 rows an ldmatrix phase reads at one 16-byte chunk fall in distinct
// banks. Padded: rows of 40 bf16 (80 bytes). SWIZZLED, unpadded (so that 128 × 128 fits 3 stages in the 48 KB of
// static shared memory): row r's four chunks are stored in the order chunk ^ ((r / 2) % 4), so those 8 rows cover
// all 32 banks once (two rows per 128-byte line, four distinct chunk slots).
template <int ROWS, bool SWIZZLED>
struct alignas(16) Tile {
    bf16 v[ROWS][SWIZZLED ? BK : BK + 8];
    // Byte offset of element (r, k) in the tile.
    static DEVICE u32 offset(int r, int k) {
        return 2 * (SWIZZLED ? r * BK + 8 * ((k / 8) ^ ((r / 2) % 4)) + k % 8 : r * (BK + 8) + k);
    }
};

// One thread's share of filling a tile with rows [r0, r0 + ROWS) × columns [k0, k0 + 32) of a row-major [rows, K]
// matrix, K step after K step, zero outside it and from column ke on. Its chunks' rows, source rows and places in
// the tile are the same every step, so they are worked out once. VEC: K steps that are all whole (K a multiple of
// 32, as split-K's shares are) from 16-byte aligned rows, so a step is one cp.async of 16 bytes per chunk with no
// column test; else element by element, each tested (stored at once).
template <int ROWS, int THREADS, bool SWIZZLED>
struct TileLoader {
    static constexpr int CHUNKS = ROWS * BK / 8 / THREADS;
    static_assert(ROWS * BK / 8 % THREADS == 0 && THREADS % (BK / 8) == 0, "16-byte chunks split evenly");
    const bf16* src[CHUNKS];  // row start + this thread's column; row 0's for rows outside (never read, but mapped)
    u32 dst[CHUNKS];          // byte offset in the tile
    bool row_in[CHUNKS];
    int col;  // column within the K step: the same for all of a thread's chunks

    DEVICE TileLoader(const bf16* m, int r0, int rows, int K) {
        col = threadIdx.x % (BK / 8) * 8;
#pragma unroll
        for (int c = 0; c < CHUNKS; c++) {
            int r = (threadIdx.x + c * THREADS) / (BK / 8);
            row_in[c] = r0 + r < rows;
            src[c] = m + (row_in[c] ? (long)(r0 + r) * K : 0) + col;
            dst[c] = Tile<ROWS, SWIZZLED>::offset(r, col);
        }
    }

    // Starts filling the tile at `tile` (shared address; `tile_ptr` the same tile as a pointer) with the K step at k0.
    template <bool VEC>
    DEVICE void load(smem_t tile, bf16* tile_ptr, int k0, int ke) const {
#pragma unroll
        for (int c = 0; c < CHUNKS; c++) {
            if (VEC) {
                cp_async16(tile + dst[c], src[c] + k0, row_in[c]);
            } else {
                bf16x8 v = {};
#pragma unroll
                for (int e = 0; e < 8; e++)
                    if (row_in[c] && k0 + col + e < ke) v.w[e / 2] |= (u32)src[c][k0 + e].bits << (16 * (e % 2));
                *(bf16x8*)((char*)tile_ptr + dst[c]) = v;
            }
        }
    }
};

template <int WARPS_M, int WARPS_N, int WM, int WN, int STAGES, bool VEC, class TOut, class ATile, class WTile>
DEVICE void matmul_tc(ATile (&a_tile)[STAGES], WTile (&w_tile)[STAGES], TOut* out, const floatX* in, const floatX* w,
                      const floatX* bias, int M, int N, int K, int kb, int ke, int gelu_act, int per, int stride) {
    constexpr int BM = WARPS_M * WM, BN = WARPS_N * WN, THREADS = WARP * WARPS_M * WARPS_N;
    constexpr int MI = WM / 16, NI = WN / 8;
    constexpr bool SWIZZLED = BM == 128;
    constexpr u32 A_BYTES = sizeof(ATile), W_BYTES = sizeof(WTile);
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    int g = lane / 4, t = lane % 4;
    int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const TileLoader<BM, THREADS, SWIZZLED> a_loader(in, m0, M, K);
    const TileLoader<BN, THREADS, SWIZZLED> w_loader(w, n0, N, K);
    smem_t a_base = smem(a_tile), w_base = smem(w_tile);
    // ldmatrix: lane l points at row l % 8 of matrix l / 8. A's four matrices are its 16×16 tile's quadrants (rows
    // +8 second, columns +8 third); W's are two n-tiles of 8 rows × k and k + 8. Byte offsets in a stage's tiles,
    // per half of the K step (kk = 0, 16).
    u32 a_at[2][MI], w_at[2][NI / 2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
            a_at[h][mi] = ATile::offset(wm + 16 * mi + lane % 8 + 8 * (lane / 8 % 2), 16 * h + 8 * (lane / 16));
#pragma unroll
        for (int np = 0; np < NI / 2; np++)
            w_at[h][np] = WTile::offset(wn + 16 * np + lane % 8 + 8 * (lane / 16), 16 * h + 8 * (lane / 8 % 2));
    }
    float acc[MI][NI][4] = {};
    int steps = ke > kb ? (ke - kb + BK - 1) / BK : 0;
    // one group committed per step, empty or not, so that "all but the last STAGES - 2" always means "step kt"
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < steps) {
            a_loader.template load<VEC>(a_base + s * A_BYTES, a_tile[s].v[0], kb + s * BK, ke);
            w_loader.template load<VEC>(w_base + s * W_BYTES, w_tile[s].v[0], kb + s * BK, ke);
        }
        cp_async_commit();
    }
    int read = 0, write = STAGES - 1;  // the stages step kt reads and step kt + STAGES - 1 fills
    for (int kt = 0; kt < steps; kt++) {
        cp_async_wait(STAGES - 2);  // this thread's copies of step kt have landed
        __syncthreads();            // everyone's have; and step kt - 1's buffer is no longer read
        int k_next = kb + (kt + STAGES - 1) * BK;
        if (k_next < ke) {
            a_loader.template load<VEC>(a_base + write * A_BYTES, a_tile[write].v[0], k_next, ke);
            w_loader.template load<VEC>(w_base + write * W_BYTES, w_tile[write].v[0], k_next, ke);
        }
        cp_async_commit();
        smem_t as = a_base + read * A_BYTES, ws = w_base + read * W_BYTES;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            u32 a[MI][4], b[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; mi++) ldmatrix_x4(a[mi], as + a_at[h][mi]);
#pragma unroll
            for (int np = 0; np < NI / 2; np++) {
                u32 r[4];
                ldmatrix_x4(r, ws + w_at[h][np]);
                b[2 * np][0] = r[0];
                b[2 * np][1] = r[1];
                b[2 * np + 1][0] = r[2];
                b[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int ni = 0; ni < NI; ni++) mma_16x8x16(acc[mi][ni], a[mi], b[ni]);
        }
        read = read + 1 == STAGES ? 0 : read + 1;
        write = write + 1 == STAGES ? 0 : write + 1;
    }
    pair_epilogue<MI, NI>(out, bias, gelu_act, M, N, m0 + wm + g, n0 + wn + 2 * t, acc, per, stride);
}

// The main loop compiled per load path: the 16-byte path for aligned operands whose K is a multiple of 32 (every
// GPT-2 shape), so that its K steps test nothing else. The tiles are declared here, once for both.
template <int WARPS_M, int WARPS_N, int WM, int WN, int STAGES, class TOut>
DEVICE void matmul_tc(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                      int kb, int ke, int gelu_act, int per, int stride) {
    constexpr int BM = WARPS_M * WM, BN = WARPS_N * WN;
    static_assert(WN / 8 % 2 == 0, "W fragments come in pairs of n-tiles");
    constexpr bool SWIZZLED = BM == 128;  // the measured 64 × 64 kernel keeps its padded layout
    __shared__ Tile<BM, SWIZZLED> a_tile[STAGES];
    __shared__ Tile<BN, SWIZZLED> w_tile[STAGES];
    bool vec = K % BK == 0 && ((unsigned long long)in & 15) == 0 && ((unsigned long long)w & 15) == 0;
    if (vec)
        matmul_tc<WARPS_M, WARPS_N, WM, WN, STAGES, true>(a_tile, w_tile, out, in, w, bias, M, N, K, kb, ke, gelu_act,
                                                          per, stride);
    else
        matmul_tc<WARPS_M, WARPS_N, WM, WN, STAGES, false>(a_tile, w_tile, out, in, w, bias, M, N, K, kb, ke,
                                                           gelu_act, per, stride);
}

// The block tiles, each within the 48 KB of static shared memory: 64 × 64 (4 warps of 32 × 32, 4 stages, 40 KB) for
// outputs with few blocks; 128 × 128 (8 warps of 64 × 32, half the traffic per FLOP) for many, in 3 stages (exactly
// 48 KB), or 2 with f32 out: at 3 that kernel needs 155 registers a thread, one 256-thread block per SM.
template <int BM, int BN, class TOut>
DEVICE void matmul_block(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                         int kb, int ke, int gelu_act, int per, int stride) {
    static_assert(BM == BN && (BM == 64 || BM == 128), "the tiles of MATMUL_TILES");
    if constexpr (BM == 64)
        matmul_tc<2, 2, 32, 32, 4>(out, in, w, bias, M, N, K, kb, ke, gelu_act, per, stride);
    else
        matmul_tc<2, 4, 64, 32, sizeof(TOut) == 4 ? 2 : 3>(out, in, w, bias, M, N, K, kb, ke, gelu_act, per, stride);
}
#endif

// Few rows (decode rows, RMT-R's 16 memory rows), where a 64-row tile would mostly multiply zeros: a warp computes
// ROWS_COLS output columns for up to 16 rows, its lanes striding K 8 elements at a time, so W, the only large
// operand, is read once in 16-byte loads and each of its elements feeds up to 16 FMAs. SIMT in both builds; the
// rows come from L1 (16 × K is small). Grid (ceil(N / 8), ceil(M / 16), shares of K), 128 threads.
#define ROWS_M 16
#define ROWS_COLS 2  // output columns per warp: 4 warps, 8 columns per block

// x = p[0..8): with FULL one 16-byte load (bf16; p 16-byte aligned), else element by element, zero from `valid` on.
template <bool FULL>
DEVICE void load8(const float* p, int valid, float x[8]) {
#pragma unroll
    for (int e = 0; e < 8; e++) x[e] = FULL || e < valid ? p[e] : 0.0f;
}
template <bool FULL>
DEVICE void load8(const bf16* p, int valid, float x[8]) {
    bf16x8 v = {};
    if (FULL) {
        v = *(const bf16x8*)p;
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++)
            if (e < valid) v.w[e / 2] |= (u32)p[e].bits << (16 * (e % 2));
    }
#pragma unroll
    for (int e = 0; e < 4; e++) {
        x[2 * e] = __uint_as_float(v.w[e] << 16);
        x[2 * e + 1] = __uint_as_float(v.w[e] & 0xffff0000u);
    }
}

// acc[j · 16 + r] += in[m0 + r][k .. k + 8) · w[n0 + j][k .. k + 8) for the 16 rows and 2 columns of a warp. Rows
// past `rows` and columns past N re-read the last one (in bounds; their sums are never written), so that no branch
// separates the 18 loads: they all go out before the first FMA waits (with a branch per row, each row's load
// waited for the previous row's FMAs, one memory latency per row).
template <bool FULL>
DEVICE void row_products(float* acc, const floatX* in, const floatX* w, int m0, int rows, int n0, int N, int K, int k,
                         int valid) {
    float wv[ROWS_COLS][8];
#pragma unroll
    for (int j = 0; j < ROWS_COLS; j++) load8<FULL>(w + (long)(n0 + j < N ? n0 + j : N - 1) * K + k, valid, wv[j]);
#pragma unroll
    for (int r = 0; r < ROWS_M; r++) {
        float a[8];
        load8<FULL>(in + (long)(m0 + (r < rows ? r : rows - 1)) * K + k, valid, a);
#pragma unroll
        for (int j = 0; j < ROWS_COLS; j++)
#pragma unroll
            for (int e = 0; e < 8; e++) acc[j * ROWS_M + r] += a[e] * wv[j][e];
    }
}

// One round of a warp's reduce-scatter of 2·HALF values per lane: a lane swaps half of them with lane ^ HALF and
// adds the other half, keeping the upper half when its HALF bit is set. After rounds 16, 8, 4, 2, 1 (31 shuffles,
// against 160 for 32 warp sums), lane L holds the warp's sum of value L. Written per round so that every index is a
// compile-time constant (the values stay in registers).
template <int HALF>
DEVICE void reduce_scatter_round(float* v, int lane) {
    bool upper = lane & HALF;
#pragma unroll
    for (int i = 0; i < HALF; i++) {
        float send = upper ? v[i] : v[i + HALF], keep = upper ? v[i + HALF] : v[i];
        v[i] = keep + __shfl_xor_sync(FULL_MASK, send, HALF);
    }
}

template <class TOut>
DEVICE void matmul_rows(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K, int kb,
                        int ke, int gelu_act, int per, int stride) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    int m0 = blockIdx.y * ROWS_M, rows = M - m0 < ROWS_M ? M - m0 : ROWS_M;
    int n0 = (blockIdx.x * warps + warp) * ROWS_COLS;
    bool vec = K % 8 == 0 && ((unsigned long long)in & 15) == 0 && ((unsigned long long)w & 15) == 0;
    float acc[ROWS_COLS * ROWS_M] = {};  // acc[j · 16 + r]: column n0 + j, row m0 + r
    for (int k = kb + 8 * lane; k < ke; k += 8 * WARP) {
        int valid = ke - k < 8 ? ke - k : 8;
        if (vec && valid == 8)
            row_products<true>(acc, in, w, m0, rows, n0, N, K, k, valid);
        else
            row_products<false>(acc, in, w, m0, rows, n0, N, K, k, valid);
    }
    // the warp's sums, reduce-scattered: lane L ends with output L, column L / 16, row L % 16
    static_assert(ROWS_COLS * ROWS_M == WARP, "one output per lane");
    reduce_scatter_round<16>(acc, lane);
    reduce_scatter_round<8>(acc, lane);
    reduce_scatter_round<4>(acc, lane);
    reduce_scatter_round<2>(acc, lane);
    reduce_scatter_round<1>(acc, lane);
    epilogue(out, bias, gelu_act, M, N, m0 + lane % ROWS_M, n0 + lane / ROWS_M, acc[0], per, stride);
}

// The block tile of BM × BN outputs: 16 × 8 is the few-rows kernel, the others the 2-D tiles above.
template <int BM, int BN, class TOut>
DEVICE void block_tile(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K, int kb,
                       int ke, int gelu_act, int per, int stride) {
    if constexpr (BM == ROWS_M)
        matmul_rows(out, in, w, bias, M, N, K, kb, ke, gelu_act, per, stride);
    else
        matmul_block<BM, BN>(out, in, w, bias, M, N, K, kb, ke, gelu_act, per, stride);
}

// Activations out, one kernel per block tile (rows × columns of outputs): grid (ceil(N / columns), ceil(M / rows)),
// 128 threads (256 for 128 × 128, and for the 64 × 64 and 128 × 128 tiles of the f32 build). The host picks the
// tile per shape.
KERNEL void matmul_16x8(floatX* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                        int gelu_act, int per, int stride) {
    block_tile<16, 8>(out, in, w, bias, M, N, K, 0, K, gelu_act, per, stride);
}
KERNEL void matmul(floatX* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                   int gelu_act, int per, int stride) {
    block_tile<64, 64>(out, in, w, bias, M, N, K, 0, K, gelu_act, per, stride);
}
KERNEL void matmul_128x128(floatX* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                           int gelu_act, int per, int stride) {
    block_tile<128, 128>(out, in, w, bias, M, N, K, 0, K, gelu_act, per, stride);
}

// f32 out, K split over gridDim.z (no GELU then): the projections before a residual add (the shares summed by
// residual_layernorm), the logits of answer rows, and RMT-R's retrieval scores and v1 rows.
template <int BM, int BN>
DEVICE void matmul_f32_split(float* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                             int gelu_act) {
    int kb, ke;
    k_split(K, kb, ke);
    const floatX* share_bias = blockIdx.z == 0 ? bias : nullptr;
    block_tile<BM, BN>(out + blockIdx.z * (long)M * N, in, w, share_bias, M, N, K, kb, ke, gelu_act, M, 0);
}
KERNEL void matmul_f32_16x8(float* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                            int gelu_act) {
    matmul_f32_split<16, 8>(out, in, w, bias, M, N, K, gelu_act);
}
KERNEL void matmul_f32(float* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                       int gelu_act) {
    matmul_f32_split<64, 64>(out, in, w, bias, M, N, K, gelu_act);
}
KERNEL void matmul_f32_128x128(float* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N,
                               int K, int gelu_act) {
    matmul_f32_split<128, 128>(out, in, w, bias, M, N, K, gelu_act);
}
