// ARMT's associative memory (RMT-SPEC §3.1), exact f32 like the CPU reference (src/backend/cpu/associative.rs): the
// read before every block, and the delta-rule write of a segment's memory rows after it. One layer's state is
// A (dk × C, row-major) then z (dk), f32; dk = 2·ν·dm with the DPFP key map's ν = 3. Several independent streams
// run in one launch: `state` is the first stream's state of the layer, each further stream's `stride` floats on.
#include "common.cuh"

#define ASSOC_THREADS 128
#define ASSOC_MAX_C 1600  // GPT-2 XL's width
#define ASSOC_MAX_DM 64   // the key maps' widths the shared buffers hold (src/backend/cuda/step.rs checks it)
#define DPFP_NU 3

// Loads row `x` (C wide) into shared `xs`, then its key map's output u = x·Wᵀ (W: dm × C) into shared `us`.
DEVICE void key_map(float* xs, float* us, const float* x, const float* w, int C, int dm) {
    for (int c = threadIdx.x; c < C; c += ASSOC_THREADS) xs[c] = x[c];
    __syncthreads();
    // warp `warp` has outputs warp + WARPS·o, its lanes over C; all of them in one pass over xs, so that a lane has
    // one load per output in flight at once rather than one output's loads after another's
    constexpr int WARPS = ASSOC_THREADS / WARP, OUTS = ASSOC_MAX_DM / WARPS;
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    float s[OUTS] = {};
    for (int c = lane; c < C; c += WARP) {
        float xc = xs[c];
#pragma unroll
        for (int o = 0; o < OUTS; o++)
            if (warp + WARPS * o < dm) s[o] += xc * w[(long)(warp + WARPS * o) * C + c];
    }
#pragma unroll
    for (int o = 0; o < OUTS; o++) {
        float sum = warp_sum(s[o]);
        if (lane == 0 && warp + WARPS * o < dm) us[warp + WARPS * o] = sum;
    }
    __syncthreads();
}

// DPFP of u (dm wide) into shared `phi` (dk = 2·ν·dm): with x = [relu(u), relu(−u)] (n = 2·dm),
// φ[j·n + i] = x[i] · x[(i − (j + 1)) mod n], torch's roll. Returns this thread's share of φ·z; `phi` is complete
// after the caller's next barrier.
DEVICE float dpfp(float* phi, const float* us, const float* z, int dm) {
    int n = 2 * dm;
    float dot = 0.0f;
    for (int p = threadIdx.x; p < DPFP_NU * n; p += ASSOC_THREADS) {
        int j = p / n, i = p % n, k = (i + n - (j + 1)) % n;
        float a = i < dm ? fmaxf(us[i], 0.0f) : fmaxf(-us[i - dm], 0.0f);
        float b = k < dm ? fmaxf(us[k], 0.0f) : fmaxf(-us[k - dm], 0.0f);
        phi[p] = a * b;
        dot += phi[p] * z[p];
    }
    return dot;
}

#define TILE_COLS 64
#define TILE_K 32  // a step of K: half the barriers and L2 round trips of 16, 10 KB of shared memory at RI = 4

// acc += a·b for one tile of 8·RI rows × TILE_COLS columns at (r0, c0), the f32 SIMT matmul of the read and the
// write: a is rows × K (row-major), b is K × N (row-major), or with OUT_IN N × K (a weight's [out, in] layout).
// K goes in steps of TILE_K through shared memory; 128 threads, each holding RI × 4 outputs (tile_outputs says
// where). Outside the matrices the tile reads zeros.
template <int RI, bool OUT_IN>
DEVICE void tile_product(float (&acc)[RI][4], const float* a, int rows, const float* b, int K, int N, int r0,
                         int c0) {
    __shared__ float as[8 * RI][TILE_K];
    __shared__ float bs[TILE_K][TILE_COLS + 1];  // +1: OUT_IN's stores walk k across the lanes
    int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        for (int e = threadIdx.x; e < 8 * RI * TILE_K; e += 128) {
            int r = e / TILE_K, k = e % TILE_K;
            as[r][k] = r0 + r < rows && k0 + k < K ? a[(long)(r0 + r) * K + k0 + k] : 0.0f;
        }
        for (int e = threadIdx.x; e < TILE_K * TILE_COLS; e += 128) {
            // consecutive threads read consecutive addresses of b in either layout
            int k = OUT_IN ? e % TILE_K : e / TILE_COLS, c = OUT_IN ? e / TILE_K : e % TILE_COLS;
            bool inside = k0 + k < K && c0 + c < N;
            bs[k][c] = !inside ? 0.0f : OUT_IN ? b[(long)(c0 + c) * K + k0 + k] : b[(long)(k0 + k) * N + c0 + c];
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE_K; k++)
#pragma unroll
            for (int i = 0; i < RI; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += as[tr + 8 * i][k] * bs[k][tc + 16 * j];
        __syncthreads();
    }
}

// Calls out(i, j, r, c) for each of this thread's outputs acc[i][j] of tile_product's tile at (r0, c0): row r,
// column c (not bounds-checked).
template <int RI, typename Out>
DEVICE void tile_outputs(int r0, int c0, Out out) {
    int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < RI; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) out(i, j, r0 + tr + 8 * i, c0 + tc + 16 * j);
}

// Launches: associative_query, associative_key: grid (rows) and (m, streams), ASSOC_THREADS threads;
// associative_read, associative_delta: grid (⌈per / 32⌉, ⌈C / 64⌉, streams) and (⌈m / 16⌉, ⌈C / 64⌉, streams),
// 128 threads.

// The read's first half, per row of x (streams of `per` rows): its query q = φ / (φ·z + eps) into `query` (dk per
// row), with φ = DPFP(x·W_qᵀ) and z of the row's stream. Fuses the query map, the key map and the denominator.
KERNEL void associative_query(float* query, const float* x, const float* wq, const float* state, int stride,
                              int rows, int per, int C, int dm, float eps) {
    __shared__ float xs[ASSOC_MAX_C];
    __shared__ float us[ASSOC_MAX_DM];
    __shared__ float phi[2 * DPFP_NU * ASSOC_MAX_DM];
    int r = blockIdx.x;
    if (r >= rows) return;
    int dk = 2 * DPFP_NU * dm;
    const float* z = state + (long)(r / per) * stride + (long)dk * C;
    key_map(xs, us, x + (long)r * C, wq, C, dm);
    float den = block_reduce<ASSOC_THREADS, false>(dpfp(phi, us, z, dm)) + eps;
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) query[(long)r * dk + p] = phi[p] / den;
}

// The read's second half: x += query·A for each stream's rows and its A, in tiles of 32 rows (A read from memory
// once per 32 rows; a block per row would read it once per row).
KERNEL void associative_read(float* x, const float* query, const float* state, int stride, int per, int C, int dk) {
    int s = blockIdx.z, r0 = blockIdx.x * 32, c0 = blockIdx.y * TILE_COLS;
    long first = (long)s * per;  // the stream's first row
    float acc[4][4] = {};
    tile_product<4, false>(acc, query + first * dk, per, state + (long)s * stride, dk, C, r0, c0);
    tile_outputs<4>(r0, c0, [&](int i, int j, int r, int c) {
        if (r < per && c < C) x[(first + r) * C + c] += acc[i][j];
    });
}

// The write's first step, per memory row M (the last `m` rows of each stream of `per` rows in x), against the
// stream's state before the write: its key k = DPFP(M·W_kᵀ) into `keys`, and into `gates` (3 per row) the
// normaliser weight γ = clip(1 − k·z / (‖k‖² + eps), 0, 1), the gate β = σ(M·w_b + b_b) and the old value's
// denominator k·z + eps; rows numbered over all streams (each stream's m after the one before's). Fuses the key
// map, DPFP and the gates.
KERNEL void associative_key(float* keys, float* gates, const float* x, const float* wk, const float* wb,
                            const float* bb, const float* state, int stride, int m, int per, int C, int dm,
                            float eps) {
    __shared__ float xs[ASSOC_MAX_C];
    __shared__ float us[ASSOC_MAX_DM];
    __shared__ float phi[2 * DPFP_NU * ASSOC_MAX_DM];
    int s = blockIdx.y, j = blockIdx.x, r = s * m + j;
    if (j >= m) return;
    int dk = 2 * DPFP_NU * dm;
    const float* z = state + (long)s * stride + (long)dk * C;
    key_map(xs, us, x + ((long)s * per + per - m + j) * C, wk, C, dm);
    float kz = block_reduce<ASSOC_THREADS, false>(dpfp(phi, us, z, dm));
    float kk = 0.0f, mb = 0.0f;
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) kk += phi[p] * phi[p];
    for (int c = threadIdx.x; c < C; c += ASSOC_THREADS) mb += xs[c] * wb[c];
    kk = block_reduce<ASSOC_THREADS, false>(kk);
    mb = block_reduce<ASSOC_THREADS, false>(mb);
    if (threadIdx.x == 0) {
        gates[3 * r] = fminf(fmaxf(1.0f - kz / (kk + eps), 0.0f), 1.0f);
        gates[3 * r + 1] = 1.0f / (1.0f + expf(-(mb + bb[0])));
        gates[3 * r + 2] = kz + eps;
    }
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) keys[(long)r * dk + p] = phi[p];
}

// The write's second step: each memory row's delta β (M·W_vᵀ − k·A / (k·z + eps)) into `delta` (rows numbered as
// associative_key numbers them), in tiles of 16 rows. Fuses the value map, the old value's product and the gate.
KERNEL void associative_delta(float* delta, const float* keys, const float* gates, const float* x, const float* wv,
                              const float* state, int stride, int m, int per, int C, int dk) {
    int s = blockIdx.z, r0 = blockIdx.x * 16, c0 = blockIdx.y * TILE_COLS;
    float value[2][4] = {}, old[2][4] = {};
    tile_product<2, true>(value, x + ((long)s * per + per - m) * C, m, wv, C, C, r0, c0);
    tile_product<2, false>(old, keys + (long)s * m * dk, m, state + (long)s * stride, dk, C, r0, c0);
    tile_outputs<2>(r0, c0, [&](int i, int j, int r, int c) {
        long row = (long)s * m + r;
        if (r < m && c < C) delta[row * C + c] = gates[3 * row + 1] * (value[i][j] - old[i][j] / gates[3 * row + 2]);
    });
}

// Launches: grid (⌈dk·(C + 1) / 256⌉, streams), 256 threads.

// The write's last step, per stream: A += Σ_j kⱼᵀ·deltaⱼ and z += Σ_j γⱼ·kⱼ over its m memory rows, added in row
// order as the CPU reference adds them. A thread per state value. With `step` (may be null; the last layer's update
// of a write step), the segment counter of a device-side chain of segments advances: embed reads it next.
KERNEL void associative_update(float* state, const float* keys, const float* delta, const float* gates, int* step,
                               int stride, int m, int C, int dk) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (step && idx == 0 && blockIdx.y == 0) *step += 1;  // no other thread reads it in this launch
    state += (long)blockIdx.y * stride;
    keys += (long)blockIdx.y * m * dk;
    delta += (long)blockIdx.y * m * C;
    gates += blockIdx.y * m * 3;
    if (idx < (long)dk * C) {
        long p = idx / C, c = idx % C;
        float v = state[idx];
        for (int j = 0; j < m; j++) v += keys[(long)j * dk + p] * delta[(long)j * C + c];
        state[idx] = v;
    } else if (idx < (long)dk * (C + 1)) {
        long p = idx - (long)dk * C;
        float v = state[idx];
        for (int j = 0; j < m; j++) v += gates[3 * j] * keys[(long)j * dk + p];
        state[idx] = v;
    }
}
