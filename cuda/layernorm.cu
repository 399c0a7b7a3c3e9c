// LayerNorm over rows, one warp per row with f32 statistics; also fused with the residual add before it, and the
// f32 variant that writes the memory rows out of the last block (ln_f).
#include "common.cuh"

// out = (x - mean) / sqrt(var + eps) * w + b for one row of C, by one warp. Two passes over x: the row is in L1.
template <class TOut>
DEVICE void layernorm_row(TOut* out, const float* x, const floatX* w, const floatX* b, int C, float eps) {
    int lane = threadIdx.x % WARP;
    float sum = 0.0f;
    for (int c = lane; c < C; c += WARP) sum += x[c];
    float mean = warp_sum(sum) / C;
    float sq = 0.0f;
    for (int c = lane; c < C; c += WARP) sq += (x[c] - mean) * (x[c] - mean);
    float rstd = rsqrtf(warp_sum(sq) / C + eps);
    for (int c = lane; c < C; c += WARP) store(&out[c], (x[c] - mean) * rstd * to_float(w[c]) + to_float(b[c]));
}

DEVICE int warp_row() { return blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP; }

// out = LN(x): a block's ln_1 before the first residual add, and ln_f of an answer row.
KERNEL void layernorm(floatX* out, const float* x, const floatX* w, const floatX* b, int rows, int C, float eps) {
    int r = warp_row();
    if (r < rows) layernorm_row(out + (long)r * C, x + (long)r * C, w, b, C, eps);
}

// x += delta (a sublayer's projection), then out = LN(x) for the next sublayer. out may be null: the add alone.
KERNEL void residual_layernorm(float* x, const floatX* delta, floatX* out, const floatX* w, const floatX* b,
                               int rows, int C, float eps) {
    int r = warp_row();
    if (r >= rows) return;
    float* xr = x + (long)r * C;
    const floatX* dr = delta + (long)r * C;
    for (int c = threadIdx.x % WARP; c < C; c += WARP) xr[c] += to_float(dr[c]);
    __syncwarp();
    if (out) layernorm_row(out + (long)r * C, xr, w, b, C, eps);
}

// The memory write-out: out (f32) = ln_f of the last `per` rows of each stream of `stride` rows in x. With
// `step` (may be null), the segment counter of a device-side chain of segments advances: embed reads it next.
KERNEL void layernorm_tail(float* out, const float* x, const floatX* w, const floatX* b, int* step, int rows,
                           int per, int stride, int C, float eps) {
    int r = warp_row();
    if (step && r == 0 && threadIdx.x == 0) *step += 1;  // no other block reads it in this launch
    if (r >= rows) return;
    long src = (long)(r / per) * stride + (stride - per) + r % per;
    layernorm_row(out + (long)r * C, x + src * C, w, b, C, eps);
}
