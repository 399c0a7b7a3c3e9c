// Segment input: token rows get wte[token] + wpe[pos], memory rows their given embedding + wpe[pos]; and f32
// rows from the host converted to the storage type for a matmul.
#include "common.cuh"

// x[r] for r < rows, one thread per element. ids[r] >= 0 is a token; ids[r] < 0 takes row -ids[r]-1 of `mem`.
// Positions restart in every stream of `per_stream` rows: pos = pos0 + r % per_stream. With `step` (a device
// counter, may be null) the ids are those of segment *step of a chunk uploaded at once: ids + *step · rows.
KERNEL void embed(float* x, const int* ids, const int* step, const float* mem, const floatX* wte,
                  const floatX* wpe, int rows, int per_stream, int pos0, int C) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * C) return;
    int r = (int)(i / C), c = (int)(i % C);
    int id = ids[(step ? (long)*step * rows : 0) + r];
    float e = id >= 0 ? to_float(wte[(long)id * C + c]) : mem[(long)(-id - 1) * C + c];
    x[i] = e + to_float(wpe[(long)(pos0 + r % per_stream) * C + c]);
}

// out = in in the storage type (RMT-R v1 projects stored states and queries that arrive as f32).
KERNEL void to_storage(floatX* out, const float* in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) store(&out[i], in[i]);
}

// A memory state as the session's RMT-R store keeps it (f32, or with `bf16_store` rounded to bf16 and back), so a
// device-side chain derives its retrieval cache from exactly the rows a restore would read.
KERNEL void stored_state(float* out, const float* in, int n, int bf16_store) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = bf16_store ? to_float(to_bf16(in[i])) : in[i];
}
