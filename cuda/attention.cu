// Causal self-attention over [mem | segment | mem], flash style: queries, keys and values are read straight from
// the packed QKV rows (no permute), keys stream through shared memory in tiles, and the softmax is online, so
// the T×T scores never exist. Decode is the same kernel with one query row at position q0.
#include "common.cuh"

#define QROWS 32      // query rows per block: 4 warps × 8 rows
#define KTILE 32      // keys per shared tile, one per lane
#define MAX_HS 64     // head size ≤ 64 (every GPT-2 size); head size is a multiple of 32

// qkv: [B][T_cap][3C] (q | k | v, head h at h·hs in each); queries are positions q0 .. q0+nq of each stream,
// keys positions 0 ..= the query's. out: [B][nq][C]. Grid (ceil(nq / 32), heads, B), 128 threads.
KERNEL void attention(floatX* out, const floatX* qkv, int nq, int q0, int T_cap, int C, int hs) {
    __shared__ float qs[QROWS][MAX_HS];
    __shared__ float ks[KTILE][MAX_HS + 1];
    __shared__ float vs[KTILE][MAX_HS];
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    int h = blockIdx.y, stream = blockIdx.z, i0 = blockIdx.x * QROWS;
    const floatX* base = qkv + (long)stream * T_cap * 3 * C;
    float scale = rsqrtf((float)hs);
    int rows = nq - i0 < QROWS ? nq - i0 : QROWS;
    for (int e = threadIdx.x; e < rows * hs; e += blockDim.x)
        qs[e / hs][e % hs] = to_float(base[(long)(q0 + i0 + e / hs) * 3 * C + h * hs + e % hs]) * scale;

    const int per_warp = QROWS / 4, cols = hs / WARP;
    float m[per_warp], l[per_warp], acc[per_warp][MAX_HS / WARP];
#pragma unroll
    for (int r = 0; r < per_warp; r++) {
        m[r] = NEG_INF;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < MAX_HS / WARP; c++) acc[r][c] = 0.0f;
    }
    int last = q0 + i0 + rows - 1;  // the block's last query position: keys beyond it are never needed
    for (int k0 = 0; k0 <= last; k0 += KTILE) {
        __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
        for (int e = threadIdx.x; e < KTILE * hs; e += blockDim.x) {
            int j = e / hs, d = e % hs;
            bool in = k0 + j <= last;
            const floatX* row = base + (long)(k0 + j) * 3 * C + h * hs + d;
            ks[j][d] = in ? to_float(row[C]) : 0.0f;
            vs[j][d] = in ? to_float(row[2 * C]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < per_warp; r++) {
            int qi = warp * per_warp + r, pos = q0 + i0 + qi;
            if (qi >= rows || k0 > pos) continue;  // uniform across the warp
            float s = 0.0f;
            for (int d = 0; d < hs; d++) s += qs[qi][d] * ks[lane][d];
            if (k0 + lane > pos) s = NEG_INF;
            float m_new = fmaxf(m[r], warp_max(s));
            float p = __expf(s - m_new), corr = __expf(m[r] - m_new);
            l[r] = l[r] * corr + warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < MAX_HS / WARP; c++) acc[r][c] *= corr;
            for (int j = 0; j < KTILE; j++) {
                float pj = __shfl_sync(FULL_MASK, p, j);
#pragma unroll
                for (int c = 0; c < MAX_HS / WARP; c++)
                    if (c < cols) acc[r][c] += pj * vs[j][lane + WARP * c];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < per_warp; r++) {
        int qi = warp * per_warp + r;
        if (qi >= rows) continue;
        floatX* o = out + ((long)stream * nq + i0 + qi) * C + h * hs;
#pragma unroll
        for (int c = 0; c < MAX_HS / WARP; c++)
            if (c < cols) store(&o[lane + WARP * c], acc[r][c] / l[r]);
    }
}
