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
