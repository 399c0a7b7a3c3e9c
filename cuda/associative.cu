// ARMT's associative memory (RMT-SPEC §3.1), exact f32 like the CPU reference (src/backend/cpu/associative.rs): the
// read before every block, and the delta-rule write of a segment's memory rows after it. One layer's state is
// A (dk × C, row-major) then z (dk), f32; dk = 2·ν·dm with the DPFP key map's ν = 3. Several independent streams
// run in one launch: `state` is the first stream's state of the layer, each further stream's `stride` floats on.
#include "common.cuh"

#define ASSOC_THREADS 128
#define ASSOC_MAX_C 1600  // GPT-2 XL's width
#define ASSOC_MAX_DM 64   // the key maps' widths the shared buffers hold (src/backend/cuda/step.rs checks it)
#define DPFP_NU 3

// out = xs·Wᵀ for the row in shared `xs` (C wide; W: n × C, [out, in]) into shared `out`: a warp per output, its
// lanes over C. `out` is complete after the caller's next barrier.
DEVICE void row_times(float* out, const float* xs, const float* w, int C, int n) {
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    for (int i = warp; i < n; i += ASSOC_THREADS / WARP) {
        float s = 0.0f;
        for (int c = lane; c < C; c += WARP) s += xs[c] * w[(long)i * C + c];
        s = warp_sum(s);
        if (lane == 0) out[i] = s;
    }
}

// Loads row `x` (C wide) into shared `xs`, then its key map's output u = x·Wᵀ (W: dm × C) into shared `us`.
DEVICE void key_map(float* xs, float* us, const float* x, const float* w, int C, int dm) {
    for (int c = threadIdx.x; c < C; c += ASSOC_THREADS) xs[c] = x[c];
    __syncthreads();
    row_times(us, xs, w, C, dm);
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

// Column c of φ·A (A: dk × C), for the φ in shared memory.
DEVICE float phi_times_state(const float* phi, const float* a, int c, int dk, int C) {
    float s = 0.0f;
    for (int p = 0; p < dk; p++) s += phi[p] * a[(long)p * C + c];
    return s;
}

// Launches: grid (rows), ASSOC_THREADS threads; associative_delta: grid (m, streams).

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

#define READ_ROWS 32
#define READ_COLS 64
#define READ_K 16

// Launches: grid (⌈per / READ_ROWS⌉, ⌈C / READ_COLS⌉, streams), 128 threads.

// The read's second half: x += query·A for each stream's rows and its A, a SIMT f32 matmul in tiles of 32 rows ×
// 64 columns (A read from memory once per 32 rows; a block per row would read it once per row), K in steps of 16
// through shared memory, each thread holding 4 × 4 outputs.
KERNEL void associative_read(float* x, const float* query, const float* state, int stride, int per, int C, int dk) {
    __shared__ float qs[READ_ROWS][READ_K];
    __shared__ float as[READ_K][READ_COLS];
    int s = blockIdx.z, r0 = blockIdx.x * READ_ROWS, c0 = blockIdx.y * READ_COLS;
    const float* a = state + (long)s * stride;
    long first = (long)s * per;  // the stream's first row
    int tr = threadIdx.x / 16, tc = threadIdx.x % 16;  // rows tr + 8i, columns tc + 16j
    float acc[4][4] = {};
    for (int k0 = 0; k0 < dk; k0 += READ_K) {
        for (int e = threadIdx.x; e < READ_ROWS * READ_K; e += 128) {
            int r = e / READ_K, k = e % READ_K;
            qs[r][k] = r0 + r < per && k0 + k < dk ? query[(first + r0 + r) * dk + k0 + k] : 0.0f;
        }
        for (int e = threadIdx.x; e < READ_K * READ_COLS; e += 128) {
            int k = e / READ_COLS, c = e % READ_COLS;
            as[k][c] = k0 + k < dk && c0 + c < C ? a[(long)(k0 + k) * C + c0 + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < READ_K; k++)
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += qs[tr + 8 * i][k] * as[k][tc + 16 * j];
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int r = r0 + tr + 8 * i, c = c0 + tc + 16 * j;
            if (r < per && c < C) x[(first + r) * C + c] += acc[i][j];
        }
}

// The write's first half, per memory row M (the last `m` rows of each stream of `per` rows in x): its key
// k = DPFP(M·W_kᵀ) into `keys`, the normaliser weight γ = clip(1 − k·z / (‖k‖² + eps), 0, 1) into `gamma`, and the
// delta β (M·W_vᵀ − k·A / (k·z + eps)) with β = σ(M·w_b + b_b) into `delta` (each stream's m rows after the one
// before's), all against the stream's state before the write (associative_update applies them). Fuses the three
// maps, DPFP, the old value's product and the gates.
KERNEL void associative_delta(float* keys, float* delta, float* gamma, const float* x, const float* wk,
                              const float* wv, const float* wb, const float* bb, const float* state, int stride,
                              int m, int per, int C, int dm, float eps) {
    __shared__ float xs[ASSOC_MAX_C];
    __shared__ float vs[ASSOC_MAX_C];
    __shared__ float us[ASSOC_MAX_DM];
    __shared__ float phi[2 * DPFP_NU * ASSOC_MAX_DM];
    int s = blockIdx.y, j = blockIdx.x, r = s * m + j;  // r: the row among all streams' memory rows
    if (j >= m) return;
    int dk = 2 * DPFP_NU * dm;
    const float *a = state + (long)s * stride, *z = a + (long)dk * C;
    key_map(xs, us, x + ((long)s * per + per - m + j) * C, wk, C, dm);
    float kz = block_reduce<ASSOC_THREADS, false>(dpfp(phi, us, z, dm));
    float kk = 0.0f, mb = 0.0f;
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) kk += phi[p] * phi[p];
    for (int c = threadIdx.x; c < C; c += ASSOC_THREADS) mb += xs[c] * wb[c];
    kk = block_reduce<ASSOC_THREADS, false>(kk);
    float beta = 1.0f / (1.0f + expf(-(block_reduce<ASSOC_THREADS, false>(mb) + bb[0])));
    float den = kz + eps;
    if (threadIdx.x == 0) gamma[r] = fminf(fmaxf(1.0f - kz / (kk + eps), 0.0f), 1.0f);
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) keys[(long)r * dk + p] = phi[p];
    row_times(vs, xs, wv, C, C);  // v = M·W_vᵀ
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += ASSOC_THREADS)
        delta[(long)r * C + c] = beta * (vs[c] - phi_times_state(phi, a, c, dk, C) / den);
}

// Launches: grid (⌈dk·(C + 1) / 256⌉, streams), 256 threads.

// The write's second half, per stream: A += Σ_j kⱼᵀ·deltaⱼ and z += Σ_j γⱼ·kⱼ over its m memory rows, added in row
// order as the CPU reference adds them. A thread per state value. With `step` (may be null; the last layer's update
// of a write step), the segment counter of a device-side chain of segments advances: embed reads it next.
KERNEL void associative_update(float* state, const float* keys, const float* delta, const float* gamma, int* step,
                               int stride, int m, int C, int dk) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (step && idx == 0 && blockIdx.y == 0) *step += 1;  // no other thread reads it in this launch
    state += (long)blockIdx.y * stride;
    keys += (long)blockIdx.y * m * dk;
    delta += (long)blockIdx.y * m * C;
    gamma += blockIdx.y * m;
    if (idx < (long)dk * C) {
        long p = idx / C, c = idx % C;
        float v = state[idx];
        for (int j = 0; j < m; j++) v += keys[(long)j * dk + p] * delta[(long)j * C + c];
        state[idx] = v;
    } else if (idx < (long)dk * (C + 1)) {
        long p = idx - (long)dk * C;
        float v = state[idx];
        for (int j = 0; j < m; j++) v += gamma[j] * keys[(long)j * dk + p];
        state[idx] = v;
    }
}
