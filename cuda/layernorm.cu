// LayerNorm over rows, one warp per row with f32 statistics; also fused with the residual add before it, and the
// f32 variant that writes the memory rows out of the last block (ln_f).
#include "common.cuh"

// A row of up to LN_MAX_C values in registers, a warp's lane holding columns lane, lane + 32, …: all its loads are
// in flight at once (a loop over C would wait on each).
#define LN_MAX_C 1600  // GPT-2 XL's width
#define LN_COLS (LN_MAX_C / WARP)

template <class T>
DEVICE void load_row(float (&v)[LN_COLS], const T* x, int C) {
    int lane = threadIdx.x % WARP;
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) v[e] = lane + WARP * e < C ? to_float(x[lane + WARP * e]) : 0.0f;
}

// out = (v - mean) / sqrt(var + eps) * w + b for one row of C held by one warp, statistics in f32.
template <class TOut>
DEVICE void layernorm_row(TOut* out, const float (&v)[LN_COLS], const floatX* w, const floatX* b, int C, float eps) {
    int lane = threadIdx.x % WARP;
    float sum = 0.0f;
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) sum += v[e];
    float mean = warp_sum(sum) / C;
    float sq = 0.0f;
#pragma unroll
    for (int e = 0; e < LN_COLS; e++)
        if (lane + WARP * e < C) sq += (v[e] - mean) * (v[e] - mean);
    float rstd = rsqrtf(warp_sum(sq) / C + eps);
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) {
        int c = lane + WARP * e;
        if (c < C) store(&out[c], (v[e] - mean) * rstd * to_float(w[c]) + to_float(b[c]));
    }
}

DEVICE int warp_row() { return blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP; }

// out = LN(x): a block's ln_1 before the first residual add, and ln_f of an answer row.
KERNEL void layernorm(floatX* out, const float* x, const floatX* w, const floatX* b, int rows, int C, float eps) {
    int r = warp_row();
    if (r >= rows) return;
    float v[LN_COLS];
    load_row(v, x + (long)r * C, C);
    layernorm_row(out + (long)r * C, v, w, b, C, eps);
}

// x += delta (a sublayer's projection), then out = LN(x) for the next sublayer. out may be null: the add alone.
KERNEL void residual_layernorm(float* x, const floatX* delta, floatX* out, const floatX* w, const floatX* b,
                               int rows, int C, float eps) {
    int r = warp_row();
    if (r >= rows) return;
    float v[LN_COLS], dv[LN_COLS];
    float* xr = x + (long)r * C;
    load_row(v, xr, C);
    load_row(dv, delta + (long)r * C, C);
    int lane = threadIdx.x % WARP;
#pragma unroll
    for (int e = 0; e < LN_COLS; e++) {
        v[e] += dv[e];
        if (lane + WARP * e < C) xr[lane + WARP * e] = v[e];
    }
    if (out) layernorm_row(out + (long)r * C, v, w, b, C, eps);
}

// The memory write-out: out (f32) = ln_f of the last `per` rows of each stream of `stride` rows in x. With
// `step` (may be null), the segment counter of a device-side chain of segments advances: embed reads it next.
KERNEL void layernorm_tail(float* out, const float* x, const floatX* w, const floatX* b, int* step, int rows,
                           int per, int stride, int C, float eps) {
    int r = warp_row();
    if (step && r == 0 && threadIdx.x == 0) *step += 1;  // no other block reads it in this launch
    if (r >= rows) return;
    long src = (long)(r / per) * stride + (stride - per) + r % per;
    float v[LN_COLS];
    load_row(v, x + src * C, C);
    layernorm_row(out + (long)r * C, v, w, b, C, eps);
}
