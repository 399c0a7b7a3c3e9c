// ARMT's associative memory (RMT-SPEC §3.1), exact f32 like the CPU reference (src/backend/cpu/associative.rs): the
// read before every block, and the delta-rule write of a segment's memory rows after it. One layer's state is
// A (dk × C, row-major) then z (dk), f32; dk = 2·ν·dm with the DPFP key map's ν = 3. Several independent streams
// run in one launch: `state` is the first stream's state of the layer, each further stream's `stride` floats on.
#include "common.cuh"

#define ASSOC_THREADS 128
#define ASSOC_MAX_DM 64   // the key maps' widths the shared buffers hold (src/backend/cuda/step.rs checks it)
#define DPFP_NU 3

// Sums the K chunks' shares of row `r`'s key map (associative_map's `partial`: `chunks` × `rows` × dm) into shared
// `us`, in chunk order; `us` is complete after the barrier.
DEVICE void gather_map(float* us, const float* partial, int chunks, int rows, int r, int dm) {
    for (int o = threadIdx.x; o < dm; o += ASSOC_THREADS) {
        float u = 0.0f;
        for (int k = 0; k < chunks; k++) u += partial[((long)k * rows + r) * dm + o];
        us[o] = u;
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
#define TILE_K 32  // a step of K: half the barriers and L2 round trips of 16, 12 KB of shared memory at RI = 2

// Four floats in one 16-byte shared-memory load.
struct alignas(16) f32x4 {
    float v[4];
};

// acc += a·b for one tile of 8·RI rows × TILE_COLS columns at (r0, c0), the f32 SIMT matmul of the maps, the read
// and the write: a is rows × K (row `r` at a + r·lda), b is K × N (row `k` at b + k·ldb), or with OUT_IN N × K
// (a weight's [out, in] layout; row `c` at b + c·ldb). A K chunk of wider matrices is a pointer offset with their
// widths as lda and ldb. K goes in steps of TILE_K through shared memory; 128 threads, each holding RI × 4 outputs
// (tile_outputs says where). Outside the matrices the tile reads zeros.
//
// Each thread's 4 columns are adjacent and a's rows run along k, so the inner loop reads shared memory 16 bytes at
// a time: RI + 4 loads per 4 k feed 16·RI FMAs (with scalar loads, 6 a k fed 8: run 19's profile of
// associative_read had as many load and index instructions as FMAs). The next K step's elements are loaded into
// registers while this one is multiplied, so a step waits on L2 once, not twice.
template <int RI, bool OUT_IN>
DEVICE void tile_product(float (&acc)[RI][4], const float* a, long lda, int rows, const float* b, long ldb, int K,
                         int N, int r0, int c0) {
    constexpr int A_LOADS = 8 * RI * TILE_K / 128, B_LOADS = TILE_COLS * TILE_K / 128;
    __shared__ f32x4 as[8 * RI][TILE_K / 4];
    __shared__ f32x4 bs[TILE_K][TILE_COLS / 4 + 1];  // +1 (16 bytes): OUT_IN's stores spread over the banks
    int t = threadIdx.x, tr = t / 16, tc = t % 16;
    // A thread stages a's elements (row t / 32 + 4i, column t % 32) and b's (k, c): along c, (t / 64 + 2i, t % 64);
    // with OUT_IN 8 k × 4 c a warp, k fastest, (8·(t / 32) + t % 8, t % 32 / 8 + 4i): each of 4 rows of b gives a
    // 32-byte sector, and the stores hit 32 distinct banks. Load i of a step is then a fixed pointer plus i times a
    // fixed stride, and only its row or its column moves with i (an address worked out per load: 181–207 registers).
    int a_r = t / 32, a_k = t % 32;
    int b_k = OUT_IN ? 8 * (t / 32) + t % 8 : t / 64, b_c = OUT_IN ? t % 32 / 8 : t % 64;
    const float* a_at = a + (long)(r0 + a_r) * lda + a_k;
    const float* b_at = OUT_IN ? b + (long)(c0 + b_c) * ldb + b_k : b + (long)b_k * ldb + c0 + b_c;
    long a_step = 4 * lda, b_step = OUT_IN ? 4 * ldb : 2 * ldb;  // from load i to i + 1
    float a_staged[A_LOADS], b_staged[B_LOADS];
    auto fetch = [&](int k0) {
        const float* p = a_at + k0;
#pragma unroll
        for (int i = 0; i < A_LOADS; i++, p += a_step)
            a_staged[i] = r0 + a_r + 4 * i < rows && k0 + a_k < K ? *p : 0.0f;
        p = OUT_IN ? b_at + k0 : b_at + (long)k0 * ldb;
#pragma unroll
        for (int i = 0; i < B_LOADS; i++, p += b_step) {
            bool inside = OUT_IN ? k0 + b_k < K && c0 + b_c + 4 * i < N : k0 + b_k + 2 * i < K && c0 + b_c < N;
            b_staged[i] = inside ? *p : 0.0f;
        }
    };
    fetch(0);
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
#pragma unroll
        for (int i = 0; i < A_LOADS; i++) as[a_r + 4 * i][a_k / 4].v[a_k % 4] = a_staged[i];
#pragma unroll
        for (int i = 0; i < B_LOADS; i++) {
            int k = OUT_IN ? b_k : b_k + 2 * i, c = OUT_IN ? b_c + 4 * i : b_c;
            bs[k][c / 4].v[c % 4] = b_staged[i];
        }
        __syncthreads();
        if (k0 + TILE_K < K) fetch(k0 + TILE_K);
#pragma unroll
        for (int k4 = 0; k4 < TILE_K / 4; k4++) {
            f32x4 ar[RI];
#pragma unroll
            for (int i = 0; i < RI; i++) ar[i] = as[tr + 8 * i][k4];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                f32x4 br = bs[4 * k4 + q][tc];
#pragma unroll
                for (int i = 0; i < RI; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] += ar[i].v[q] * br.v[j];
            }
        }
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
        for (int j = 0; j < 4; j++) out(i, j, r0 + tr + 8 * i, c0 + 4 * tc + j);
}

// Launches (CHUNK: K_CHUNK columns of the maps' and the delta's K; S: streams):
//   associative_map: grid (⌈n / 16⌉, S, ⌈C / CHUNK⌉), 128 threads;
//   associative_query, associative_key: grid (rows) and (m, S), ASSOC_THREADS threads;
//   associative_read: grid (⌈per / 16⌉, ⌈C / 64⌉, S), 128 threads;
//   associative_delta_part: grid (⌈m / 16⌉, ⌈C / 64⌉, S · (⌈C / CHUNK⌉ + ⌈dk / CHUNK⌉)), 128 threads;
//   associative_delta: grid (⌈S · m · C / 256⌉), 256 threads.
// The products are split along K (a block per K_CHUNK, their shares summed in chunk order by the next kernel): a
// layer's maps and write have 16 to 528 rows, too few row tiles to fill a GPU, and a block that walked all of K
// would run its tile's instructions one after another (run 17's profile: the write's 12 blocks took 66 µs).
#define K_CHUNK 64

DEVICE int k_chunks(int K) { return (K + K_CHUNK - 1) / K_CHUNK; }
DEVICE int chunk_len(int K, int k0) { return K - k0 < K_CHUNK ? K - k0 : K_CHUNK; }  // the chunk at k0

// One K chunk's share of a key map u = x·Wᵀ (W: dm × C, dm ≤ 64) for `n` rows of each stream of `per` rows of x,
// those after its first `skip`: partial[chunk][s·n + r][o]. Tiles of 16 rows.
KERNEL void associative_map(float* partial, const float* x, const float* w, int per, int skip, int n, int C, int dm) {
    int s = blockIdx.y, k0 = blockIdx.z * K_CHUNK, r0 = blockIdx.x * 16;
    float acc[2][4] = {};
    tile_product<2, true>(acc, x + ((long)s * per + skip) * C + k0, C, n, w + k0, C, chunk_len(C, k0), dm, r0, 0);
    float* out = partial + ((long)blockIdx.z * gridDim.y + s) * n * dm;
    tile_outputs<2>(r0, 0, [&](int i, int j, int r, int c) {
        if (r < n && c < dm) out[(long)r * dm + c] = acc[i][j];
    });
}

// The read's first half, per row of x (streams of `per` rows): its query q = φ / (φ·z + eps) into `query` (dk per
// row), with φ = DPFP(u) of its query map u (associative_map's `chunks` shares) and z of the row's stream. Fuses
// the map's sum, DPFP and the denominator.
KERNEL void associative_query(float* query, const float* partial, int chunks, const float* state, int stride,
                              int rows, int per, int C, int dm, float eps) {
    __shared__ float us[ASSOC_MAX_DM];
    __shared__ float phi[2 * DPFP_NU * ASSOC_MAX_DM];
    int r = blockIdx.x;
    if (r >= rows) return;
    int dk = 2 * DPFP_NU * dm;
    const float* z = state + (long)(r / per) * stride + (long)dk * C;
    gather_map(us, partial, chunks, rows, r, dm);
    float den = block_reduce<ASSOC_THREADS, false>(dpfp(phi, us, z, dm)) + eps;
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) query[(long)r * dk + p] = phi[p] / den;
}

// The read's second half: x += query·A for each stream's rows and its A, in tiles of 16 rows (A read from L2
// once per tile; a block per row would read it once per row).
KERNEL void associative_read(float* x, const float* query, const float* state, int stride, int per, int C, int dk) {
    int s = blockIdx.z, r0 = blockIdx.x * 16, c0 = blockIdx.y * TILE_COLS;
    long first = (long)s * per;  // the stream's first row
    float acc[2][4] = {};
    tile_product<2, false>(acc, query + first * dk, dk, per, state + (long)s * stride, C, dk, C, r0, c0);
    tile_outputs<2>(r0, c0, [&](int i, int j, int r, int c) {
        if (r < per && c < C) x[(first + r) * C + c] += acc[i][j];
    });
}

// The write's first step, per memory row M (the last `m` rows of each stream of `per` rows in x), against the
// stream's state before the write, scaled by the model's `decay` λ (1 for none; the state itself is scaled in
// associative_update): its key k = DPFP(u), u its key map (associative_map's `chunks` shares), into `keys`, and
// into `gates` (3 per row) the normaliser weight γ = clip(1 − λk·z / (‖k‖² + eps), 0, 1), the gate s·β with
// β = σ(M·w_b + b_b) and the gain s = max(1, λk·z / (‖k‖² + eps)) if `replacing` (else 1), and the old value's
// denominator λk·z + eps; rows numbered over all streams (each stream's m after the one before's). Fuses the map's
// sum, DPFP and the gates.
KERNEL void associative_key(float* keys, float* gates, const float* partial, int chunks, const float* x,
                            const float* wb, const float* bb, const float* state, int stride, int m, int per, int C,
                            int dm, float eps, int replacing, float decay) {
    __shared__ float us[ASSOC_MAX_DM];
    __shared__ float phi[2 * DPFP_NU * ASSOC_MAX_DM];
    int s = blockIdx.y, j = blockIdx.x, r = s * m + j;
    if (j >= m) return;
    int dk = 2 * DPFP_NU * dm;
    const float* z = state + (long)s * stride + (long)dk * C;
    const float* row = x + ((long)s * per + per - m + j) * C;
    gather_map(us, partial, chunks, gridDim.y * m, r, dm);
    float kz = decay * block_reduce<ASSOC_THREADS, false>(dpfp(phi, us, z, dm));
    float kk = 0.0f, mb = 0.0f;
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) kk += phi[p] * phi[p];
    for (int c = threadIdx.x; c < C; c += ASSOC_THREADS) mb += row[c] * wb[c];
    kk = block_reduce<ASSOC_THREADS, false>(kk);
    mb = block_reduce<ASSOC_THREADS, false>(mb);
    if (threadIdx.x == 0) {
        float coverage = kz / (kk + eps);
        gates[3 * r] = fminf(fmaxf(1.0f - coverage, 0.0f), 1.0f);
        gates[3 * r + 1] = (replacing ? fmaxf(coverage, 1.0f) : 1.0f) * (1.0f / (1.0f + expf(-(mb + bb[0]))));
        gates[3 * r + 2] = kz + eps;
    }
    for (int p = threadIdx.x; p < dk; p += ASSOC_THREADS) keys[(long)r * dk + p] = phi[p];
}

// The write's second step, one K chunk's share of each memory row's M·W_vᵀ − λk·A / (λk·z + eps) (the value
// map's chunks first, then the old value's; λ the `decay`) into partial[chunk][s·m + r][c] (rows numbered as
// associative_key numbers them), in tiles of 16 rows.
KERNEL void associative_delta_part(float* partial, const float* keys, const float* gates, const float* x,
                                   const float* wv, const float* state, int stride, int m, int per, int C, int dk,
                                   float decay) {
    int value_chunks = k_chunks(C), streams = gridDim.z / (value_chunks + k_chunks(dk));
    int s = blockIdx.z % streams, chunk = blockIdx.z / streams, r0 = blockIdx.x * 16, c0 = blockIdx.y * TILE_COLS;
    float acc[2][4] = {};
    bool value = chunk < value_chunks;
    if (value) {
        int k0 = chunk * K_CHUNK;
        const float* rows = x + ((long)s * per + per - m) * C + k0;
        tile_product<2, true>(acc, rows, C, m, wv + k0, C, chunk_len(C, k0), C, r0, c0);
    } else {
        int k0 = (chunk - value_chunks) * K_CHUNK;
        const float* a = state + (long)s * stride + (long)k0 * C;
        tile_product<2, false>(acc, keys + (long)s * m * dk + k0, dk, m, a, C, chunk_len(dk, k0), C, r0, c0);
    }
    float* out = partial + ((long)chunk * streams + s) * m * C;
    tile_outputs<2>(r0, c0, [&](int i, int j, int r, int c) {
        if (r < m && c < C)
            out[(long)r * C + c] = value ? acc[i][j] : -(decay * acc[i][j]) / gates[3 * (s * m + r) + 2];
    });
}

// The write's third step: each memory row's delta β·(its `chunks` shares summed in chunk order) into `delta`.
KERNEL void associative_delta(float* delta, const float* partial, int chunks, const float* gates, int rows, int C) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)rows * C) return;
    float v = 0.0f;
    for (int k = 0; k < chunks; k++) v += partial[k * (long)rows * C + idx];
    delta[idx] = gates[3 * (idx / C) + 1] * v;
}

// Launches: grid (⌈dk·(C + 1) / 256⌉, streams), 256 threads.

// The write's last step, per stream: A ← λA + Σ_j kⱼᵀ·deltaⱼ and z ← λz + Σ_j γⱼ·kⱼ over its m memory rows (λ the
// `decay`), added in row order as the CPU reference adds them. A thread per state value. With `step` (may be null;
// the last layer's update of a write step), the segment counter of a device-side chain of segments advances: embed
// reads it next.
KERNEL void associative_update(float* state, const float* keys, const float* delta, const float* gates, int* step,
                               int stride, int m, int C, int dk, float decay) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (step && idx == 0 && blockIdx.y == 0) *step += 1;  // no other thread reads it in this launch
    state += (long)blockIdx.y * stride;
    keys += (long)blockIdx.y * m * dk;
    delta += (long)blockIdx.y * m * C;
    gates += blockIdx.y * m * 3;
    if (idx < (long)dk * C) {
        long p = idx / C, c = idx % C;
        float v = decay * state[idx];
        for (int j = 0; j < m; j++) v += keys[(long)j * dk + p] * delta[(long)j * C + c];
        state[idx] = v;
    } else if (idx < (long)dk * (C + 1)) {
        long p = idx - (long)dk * C;
        float v = decay * state[idx];
        for (int j = 0; j < m; j++) v += gates[3 * j] * keys[(long)j * dk + p];
        state[idx] = v;
    }
}
