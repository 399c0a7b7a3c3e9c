// Kernels that break the rules on purpose, built only into the emulator: tests/cuda_emu.rs checks that each is
// reported (a test of the checker must be able to fail).
#include "common.cuh"

// Half the block reaches the barrier, the other half returns.
KERNEL void divergent_barrier(float* x) {
    if (threadIdx.x < 16) __syncthreads();
    x[threadIdx.x] = 1.0f;
}

// Lanes 0–15 return before a warp reduction the others enter.
KERNEL void divergent_shuffle(float* x) {
    if (threadIdx.x % WARP < 16) return;
    x[threadIdx.x] = warp_sum(1.0f);
}

// Writes one element past the end of its buffer.
KERNEL void write_past_end(float* x, int n) {
    if (threadIdx.x == 0) x[n] = 1.0f;
}

// A row address off the 16-byte grid: ldmatrix requires it aligned.
KERNEL void misaligned_ldmatrix(u32* out) {
    __shared__ struct alignas(16) { bf16 v[32][8]; } tile;
    u32 r[4];
    ldmatrix_x4(r, &tile.v[threadIdx.x % WARP][threadIdx.x % WARP == 5 ? 1 : 0]);
    out[threadIdx.x] = r[0];
}

// Not broken: what ldmatrix hands each lane, for the test to compare with the PTX ISA's layout. Element (i, c) of
// matrix j holds the bits 256·j + 8·i + c; out[4·lane + j] is register j, plain then transposed (out + 128).
KERNEL void ldmatrix_layout(u32* out) {
    __shared__ struct alignas(16) { bf16 v[32][8]; } tile;
    int lane = threadIdx.x % WARP;
    for (int c = 0; c < 8; c++) tile.v[lane][c].bits = (u16)(256 * (lane / 8) + 8 * (lane % 8) + c);
    __syncwarp();
    u32 r[4], rt[4];
    ldmatrix_x4(r, tile.v[lane]);
    ldmatrix_x4_trans(rt, tile.v[lane]);
    for (int j = 0; j < 4; j++) {
        out[4 * lane + j] = r[j];
        out[128 + 4 * lane + j] = rt[j];
    }
}

// 16 bytes through cp.async into shared memory and out again, with or without the wait that covers the copy: on
// a GPU the copy may not have landed without it, and the emulator makes sure it has not.
KERNEL void cp_async_roundtrip(u32* out, const u32* in, int wait) {
    __shared__ struct alignas(16) { u32 v[4]; } tile;
    if (threadIdx.x == 0) tile.v[0] = tile.v[1] = tile.v[2] = tile.v[3] = 0;
    __syncthreads();
    if (threadIdx.x == 0) {
        cp_async16(tile.v, in, true);
        cp_async_commit();
        if (wait) cp_async_wait(0);
    }
    __syncthreads();
    if (threadIdx.x < 4) out[threadIdx.x] = tile.v[threadIdx.x];
}
