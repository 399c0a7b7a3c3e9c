// RMT-R retrieval: single-head attention of the m current memory rows over every stored state, flash-decoding
// style. Keys and values live on the device (v2: one cache of ln_kv(state), W_k folded into the query and W_v
// applied after the sum, ENGINE-NOTES §8; v1: its gelu keys and values). The scores q·kᵀ come from the
// tensor-core matmul (matmul_f32); pass 1 splits the stored rows into chunks and writes each chunk's (max, sum,
// weighted values); pass 2 merges the chunks.
#include "common.cuh"

#define QG 16  // queries per pass: the accumulators a thread holds
#define JT 64  // stored rows whose weights share a shared-memory tile
#define RETRIEVAL_THREADS 128  // retrieval_partial's blocks

// partial: [m][chunks][d + 2] = (max score, Σ exp, Σ exp·value[d]) over the rows of chunk c. scores: [m][n] f32,
// q·k from the tensor-core matmul (scaled here). Grid (chunks, ceil(d / 128)), 128 threads: per pass of 16
// queries, each warp finds the chunk's max and sum of 4 of them, then each thread owns one dim and accumulates the
// weighted values of all 16 queries (one value load feeds 16 FMAs; the weights are broadcast from shared memory).
KERNEL void retrieval_partial(float* partial, const float* scores, const floatX* values, int n, int m, int d,
                              int chunk, float scale) {
    __shared__ float mx[QG], p[JT][QG];
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = RETRIEVAL_THREADS / WARP;
    int c = blockIdx.x, chunks = gridDim.x, e = blockIdx.y * RETRIEVAL_THREADS + threadIdx.x;
    int j0 = c * chunk, j1 = j0 + chunk < n ? j0 + chunk : n;
    constexpr int PER_WARP = QG / (RETRIEVAL_THREADS / WARP);  // queries warp, warp + 4, …
    for (int g0 = 0; g0 < m; g0 += QG) {
        int gm = m - g0 < QG ? m - g0 : QG;
        // each warp's queries' max and sum over the chunk in one online-softmax pass, the loads of all its queries
        // in flight together (a pass per query and per statistic waited on each load in turn)
        float v[PER_WARP], l[PER_WARP];
#pragma unroll
        for (int k = 0; k < PER_WARP; k++) v[k] = NEG_INF, l[k] = 0.0f;
        for (int j = j0 + lane; j < j1; j += WARP) {
            float x[PER_WARP];
#pragma unroll
            for (int k = 0; k < PER_WARP; k++) {
                int qi = warp + warps * k;
                x[k] = qi < gm ? scores[(long)(g0 + qi) * n + j] * scale : NEG_INF;
            }
#pragma unroll
            for (int k = 0; k < PER_WARP; k++) {
                if (x[k] > v[k]) {  // a new max: the sum so far rescaled
                    l[k] = l[k] * __expf(v[k] - x[k]) + 1.0f;
                    v[k] = x[k];
                } else if (x[k] != NEG_INF) {
                    l[k] += __expf(x[k] - v[k]);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < PER_WARP; k++) {
            int qi = warp + warps * k;
            float v_all = warp_max(v[k]);
            float l_all = warp_sum(v[k] == NEG_INF ? 0.0f : l[k] * __expf(v[k] - v_all));  // a lane with no row: 0
            if (lane == 0 && qi < gm) {
                mx[qi] = v_all;
                if (blockIdx.y == 0) {
                    partial[((long)(g0 + qi) * chunks + c) * (d + 2)] = v_all;
                    partial[((long)(g0 + qi) * chunks + c) * (d + 2) + 1] = l_all;
                }
            }
        }
        float acc[QG] = {};
        for (int t0 = j0; t0 < j1; t0 += JT) {
            __syncthreads();  // mx is written; the previous tile's weights are consumed
#pragma unroll
            for (int k = 0; k < JT * QG / RETRIEVAL_THREADS; k++) {  // 8 loads in flight
                int i = threadIdx.x + RETRIEVAL_THREADS * k, jj = i % JT, qi = i / JT, j = t0 + jj;
                p[jj][qi] = j < j1 && qi < gm ? __expf(scores[(long)(g0 + qi) * n + j] * scale - mx[qi]) : 0.0f;
            }
            __syncthreads();
            int rows = j1 - t0 < JT ? j1 - t0 : JT;
            if (e < d) {
#pragma unroll 8
                for (int jj = 0; jj < rows; jj++) {
                    float v = to_float(values[(long)(t0 + jj) * d + e]);
#pragma unroll
                    for (int qi = 0; qi < QG; qi++) acc[qi] += p[jj][qi] * v;
                }
            }
        }
        if (e < d)
            for (int qi = 0; qi < gm; qi++) partial[((long)(g0 + qi) * chunks + c) * (d + 2) + 2 + e] = acc[qi];
        __syncthreads();  // mx and p are rewritten by the next pass
    }
}

// out[qi] = Σ_c w_c · values_c / Σ_c w_c · sum_c with w_c = e^(max_c − M), M the largest max_c. Grid (m, ⌈d / 32⌉),
// MERGE_THREADS threads: the block finds M and the denominator together (each thread a stride of chunks) and keeps
// the weights in shared memory; then each warp sums its share of the chunks (groups of 8, every 8th group: 8 loads
// in flight) for the block's 32 dims, a lane each, and the warps' sums are added. A block per 128 dims that walked
// every chunk in turn took 36 µs at 255 chunks (run 17's profile): one latency after another.
#define MERGE_MAX_CHUNKS 256  // step.rs's MAX_CHUNKS
#define MERGE_THREADS 256     // step.rs's MERGE_THREADS
KERNEL void retrieval_merge(floatX* out, const float* partial, int chunks, int d) {
    constexpr int WARPS = MERGE_THREADS / WARP, GROUP = 8;
    __shared__ float w[MERGE_MAX_CHUNKS], sums[WARPS][WARP];
    const float* p = partial + (long)blockIdx.x * chunks * (d + 2);
    float mx = NEG_INF;
    for (int c = threadIdx.x; c < chunks; c += MERGE_THREADS) mx = fmaxf(mx, p[(long)c * (d + 2)]);
    mx = block_reduce<MERGE_THREADS, true>(mx);
    float l = 0.0f;
    for (int c = threadIdx.x; c < chunks; c += MERGE_THREADS) {
        w[c] = __expf(p[(long)c * (d + 2)] - mx);
        l += w[c] * p[(long)c * (d + 2) + 1];
    }
    l = block_reduce<MERGE_THREADS, false>(l);  // its barriers also publish w
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, e = blockIdx.y * WARP + lane;
    float v = 0.0f;
    if (e < d)
        for (int c0 = warp * GROUP; c0 < chunks; c0 += WARPS * GROUP) {
            float pv[GROUP];
#pragma unroll
            for (int j = 0; j < GROUP; j++) pv[j] = c0 + j < chunks ? p[(long)(c0 + j) * (d + 2) + 2 + e] : 0.0f;
#pragma unroll
            for (int j = 0; j < GROUP; j++)
                if (c0 + j < chunks) v += w[c0 + j] * pv[j];
        }
    sums[warp][lane] = v;
    __syncthreads();
    if (warp > 0 || e >= d) return;
#pragma unroll
    for (int k = 1; k < WARPS; k++) v += sums[k][lane];
    store(&out[(long)blockIdx.x * d + e], v / l);
}
