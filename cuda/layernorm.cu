// LayerNorm over rows, a block of 128 threads per row with f32 statistics; also fused with the residual add
// before it, and the f32 variant that writes the memory rows out of the last block (ln_f).
#include "common.cuh"

// A row of up to LN_MAX_C values in registers, thread i holding columns i, i + 128, …: all its loads are in flight
// at once (a loop over C would wait on each), and a row's 4 warps keep more loads in flight per SM than one.
#define LN_THREADS 128
#define LN_MAX_C 1600  // GPT-2 XL's width
#define LN_COLS ((LN_MAX_C + LN_THREADS - 1) / LN_THREADS)

template <class T>
DEVICE void load_row(float (&v)[LN_COLS], const T* x, int C) {
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) {
        int c = threadIdx.x + LN_THREADS * e;
        v[e] = c < C ? to_float(x[c]) : 0.0f;
    }
}

// out = (v - mean) / sqrt(var + eps) * w + b for one row of C held by the block, statistics in f32.
template <class TOut>
DEVICE void layernorm_row(TOut* out, const float (&v)[LN_COLS], const floatX* w, const floatX* b, int C, float eps) {
    float wv[LN_COLS], bv[LN_COLS];
    load_row(wv, w, C);  // in flight while the statistics are reduced
    load_row(bv, b, C);
    float sum = 0.0f;
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) sum += v[e];
    float mean = block_reduce<LN_THREADS, false>(sum) / C;
    float sq = 0.0f;
#pragma unroll
    for (int e = 0; e < LN_COLS; e++)
        if (threadIdx.x + LN_THREADS * e < C) sq += (v[e] - mean) * (v[e] - mean);
    float rstd = rsqrtf(block_reduce<LN_THREADS, false>(sq) / C + eps);
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) {
        int c = threadIdx.x + LN_THREADS * e;
        if (c < C) store(&out[c], (v[e] - mean) * rstd * wv[e] + bv[e]);
    }
}

// Launches: grid (rows), 128 threads.

// out = LN(x): a block's ln_1 before the first residual add, and ln_f of an answer row.
KERNEL void layernorm(floatX* out, const float* x, const floatX* w, const floatX* b, int rows, int C, float eps) {
    int r = blockIdx.x;
    if (r >= rows) return;
    float v[LN_COLS];
    load_row(v, x + (long)r * C, C);
    layernorm_row(out + (long)r * C, v, w, b, C, eps);
}

#define LN_PARTS 3  // the shares of the one-stream step's projections

// x += the `parts` f32 shares of a sublayer's projection (matmul_f32's split-K partial sums, rows × C apart,
// added in order), then out = LN(x) for the next sublayer. out may be null: the add alone.
KERNEL void residual_layernorm(float* x, const float* delta, int parts, floatX* out, const floatX* w,
                               const floatX* b, int rows, int C, float eps) {
    int r = blockIdx.x;
    if (r >= rows) return;
    float v[LN_COLS];
    float* xr = x + (long)r * C;
    load_row(v, xr, C);
    // the shares LN_PARTS at a time, all their loads in flight together (one share at a time waited out a memory
    // latency per share), added in order
    for (int p0 = 0; p0 < parts; p0 += LN_PARTS) {
        float dv[LN_PARTS][LN_COLS];
#pragma unroll
        for (int j = 0; j < LN_PARTS; j++)
            if (p0 + j < parts) load_row(dv[j], delta + ((long)(p0 + j) * rows + r) * C, C);
#pragma unroll
        for (int j = 0; j < LN_PARTS; j++)
            if (p0 + j < parts)
#pragma unroll
                for (int e = 0; e < LN_COLS; e++) v[e] += dv[j][e];
    }
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) {
        int c = threadIdx.x + LN_THREADS * e;
        if (c < C) xr[c] = v[e];
    }
    if (out) layernorm_row(out + (long)r * C, v, w, b, C, eps);
}

// The memory write-out: out (f32) = ln_f of the last `per` rows of each stream of `stride` rows in x. With
// `step` (may be null), the segment counter of a device-side chain of segments advances: embed reads it next.
KERNEL void layernorm_tail(float* out, const float* x, const floatX* w, const floatX* b, int* step, int rows,
                           int per, int stride, int C, float eps) {
    int r = blockIdx.x;
    if (step && r == 0 && threadIdx.x == 0) *step += 1;  // no other block reads it in this launch
    if (r >= rows) return;
    long src = (long)(r / per) * stride + (stride - per) + r % per;
    float v[LN_COLS];
    load_row(v, x + src * C, C);
    layernorm_row(out + (long)r * C, v, w, b, C, eps);
}
