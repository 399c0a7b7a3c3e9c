// RMT-R retrieval: single-head attention of the m current memory rows over every stored state, flash-decoding
// style. Keys and values live on the device (v2: one cache of ln_kv(state), W_k folded into the query and W_v
// applied after the sum, ENGINE-NOTES §8; v1: its gelu keys and values). Pass 1 splits the stored rows into
// chunks, one block each, and writes each chunk's (max, sum, weighted values); pass 2 merges the chunks.
#include "common.cuh"

#define MAX_D 1024

// partial: [m][chunks][d + 2] = (max score, Σ exp, Σ exp·value[d]) over the chunk's rows; scores are q·k·scale.
// Grid: chunks, 128 threads; a warp takes queries warp, warp+4, …, a lane dims lane, lane+32, ….
KERNEL void retrieval_partial(float* partial, const floatX* q, const floatX* keys, const floatX* values, int n,
                              int m, int d, int chunk, float scale) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    int c = blockIdx.x, chunks = gridDim.x;
    int j0 = c * chunk, j1 = j0 + chunk < n ? j0 + chunk : n;
    const int cols = d / WARP;
    for (int qi = warp; qi < m; qi += warps) {
        const floatX* qr = q + (long)qi * d;
        float mx = NEG_INF, l = 0.0f, acc[MAX_D / WARP];
#pragma unroll
        for (int e = 0; e < MAX_D / WARP; e++) acc[e] = 0.0f;
        for (int j = j0; j < j1; j++) {
            const floatX* kr = keys + (long)j * d;
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < MAX_D / WARP; e++)
                if (e < cols) s += to_float(qr[lane + WARP * e]) * to_float(kr[lane + WARP * e]);
            s = warp_sum(s) * scale;
            float m_new = fmaxf(mx, s), corr = __expf(mx - m_new), p = __expf(s - m_new);
            l = l * corr + p;
            mx = m_new;
            const floatX* vr = values + (long)j * d;
#pragma unroll
            for (int e = 0; e < MAX_D / WARP; e++)
                if (e < cols) acc[e] = acc[e] * corr + p * to_float(vr[lane + WARP * e]);
        }
        float* out = partial + ((long)qi * chunks + c) * (d + 2);
        if (lane == 0) {
            out[0] = mx;
            out[1] = l;
        }
#pragma unroll
        for (int e = 0; e < MAX_D / WARP; e++)
            if (e < cols) out[2 + lane + WARP * e] = acc[e];
    }
}

// out[qi] = Σ_c e^(max_c − M) · values_c / Σ_c e^(max_c − M) · sum_c. Grid m, 128 threads.
KERNEL void retrieval_merge(floatX* out, const float* partial, int chunks, int d) {
    const float* p = partial + (long)blockIdx.x * chunks * (d + 2);
    float mx = NEG_INF;
    for (int c = 0; c < chunks; c++) mx = fmaxf(mx, p[(long)c * (d + 2)]);
    float l = 0.0f;
    for (int c = 0; c < chunks; c++) l += __expf(p[(long)c * (d + 2)] - mx) * p[(long)c * (d + 2) + 1];
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float v = 0.0f;
        for (int c = 0; c < chunks; c++) v += __expf(p[(long)c * (d + 2)] - mx) * p[(long)c * (d + 2) + 2 + e];
        store(&out[(long)blockIdx.x * d + e], v / l);
    }
}
