// Shared by every kernel: the storage type, bf16 conversion, warp reductions and the few wrapped intrinsics.
//
// Kernels are plain CUDA C++ so that the same source also compiles as C++ against cuda/emu/emu.h (the CPU
// emulation the tests run them under). Everything that is not plain C++ is wrapped here: inline PTX only appears
// behind `#ifdef __CUDACC__`, with the emulator's version of the same operation in emu.h (or, where it is plain
// C++, in the `#else` branch: the bf16 rounding).
// NVRTC has no <cstdint> and no INFINITY, hence the own typedefs and the bit-pattern constant.
#pragma once

#ifdef __CUDACC__
#define KERNEL extern "C" __global__
// A kernel whose registers ptxas caps so that `blocks` blocks of `threads` fit on an SM at once.
#define KERNEL_BOUNDED(threads, blocks) extern "C" __global__ __launch_bounds__(threads, blocks)
#define DEVICE __device__ __forceinline__
#else
#define KERNEL inline
#define KERNEL_BOUNDED(threads, blocks) inline
#define DEVICE inline
#endif

typedef unsigned int u32;
typedef unsigned short u16;

// bf16 storage without cuda_bf16.h (NVRTC then needs no include path): the high half of an f32.
struct bf16 { u16 bits; };

DEVICE float to_float(float x) { return x; }
DEVICE float to_float(bf16 x) { return __uint_as_float(((u32)x.bits) << 16); }

// Round to nearest even, as __float2bfloat16 does; NaN stays NaN. On the GPU one cvt per value or pair (sm_80+): the
// bit arithmetic, which the emulator runs, is 5 integer instructions a value, and attention rounds 64 values per key
// tile (its P split into hi + lo).
DEVICE u16 round_bf16(float x) {
#ifdef __CUDACC__
    u16 b;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(x));
    return b;
#else
    u32 u = __float_as_uint(x);
    u32 rounded = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) : u + 0x7fffu + ((u >> 16) & 1u);
    return (u16)(rounded >> 16);
#endif
}
// Two values rounded and packed, lo in the low half (the mma operand format).
DEVICE u32 round_bf16_pair(float lo, float hi) {
#ifdef __CUDACC__
    u32 b;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(b) : "f"(hi), "f"(lo));  // the first source goes to the high half
    return b;
#else
    return (u32)round_bf16(lo) | ((u32)round_bf16(hi) << 16);
#endif
}

DEVICE void store(float* p, float x) { *p = x; }
DEVICE void store(bf16* p, float x) { p->bits = round_bf16(x); }

// Two adjacent values in one store: 4 bytes (bf16, p 4-byte aligned) or 8 (f32, p 8-byte aligned).
DEVICE void store_pair(bf16* p, float lo, float hi) { *(u32*)p = round_bf16_pair(lo, hi); }
struct alignas(8) f32x2 {
    float lo, hi;
};
DEVICE void store_pair(float* p, float lo, float hi) { *(f32x2*)p = f32x2{lo, hi}; }

// The storage type of weights and activations: bf16, or f32 for checking (RMT_F32 defined).
#ifdef RMT_F32
typedef float floatX;
#else
typedef bf16 floatX;
#endif

#define NEG_INF __int_as_float(0xff800000)
#define WARP 32
#define FULL_MASK 0xffffffffu

DEVICE float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

DEVICE float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// v summed (or, with MAX, maxed) over the block's THREADS threads, returned to all of them. Every thread of the
// block must call it (two barriers).
template <int THREADS, bool MAX>
DEVICE float block_reduce(float v) {
    __shared__ float warps[THREADS / WARP];
    v = MAX ? warp_max(v) : warp_sum(v);
    if (threadIdx.x % WARP == 0) warps[threadIdx.x / WARP] = v;
    __syncthreads();
    float r = warps[0];
#pragma unroll
    for (int i = 1; i < THREADS / WARP; i++) r = MAX ? fmaxf(r, warps[i]) : r + warps[i];
    __syncthreads();  // `warps` is written again by the next reduction
    return r;
}

// 2^x, approximate (2 ulp) with denormal results flushed to 0: one ex2 instruction. __expf(x) is ex2 of x·log2 e plus
// the range fix-ups a non-flushing ex2 needs; a softmax whose scores are kept in base 2 needs neither.
DEVICE float fast_exp2(float x) {
#ifdef __CUDACC__
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    return exp2f(x);
#endif
}

// GPT-2's gelu_new (tanh approximation), in f32.
DEVICE float gelu(float x) {
    const float s = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(s * (x + 0.044715f * x * x * x)));
}

DEVICE bf16 to_bf16(float x) { return bf16{round_bf16(x)}; }

// 8 bf16: one 128-bit load or store.
struct alignas(16) bf16x8 {
    u32 w[4];
};

// Two bf16 packed in one 32-bit register, the lower index in the low half (the mma operand format).
DEVICE u32 pack_bf16(bf16 lo, bf16 hi) { return (u32)lo.bits | ((u32)hi.bits << 16); }
DEVICE u32 pack_bf16(float lo, float hi) { return round_bf16_pair(lo, hi); }


// D = A·B + C for one warp: A 16×16 bf16 (row), B 16×8 bf16 (col), C/D 16×8 f32, in the PTX ISA's fragment
// layout for mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   a[0]: A[g][2t..2t+1]   a[1]: A[g+8][2t..2t+1]   a[2]: A[g][2t+8..2t+9]   a[3]: A[g+8][2t+8..2t+9]
//   b[0]: B[2t..2t+1][g]   b[1]: B[2t+8..2t+9][g]
//   d[0..1]: D[g][2t..2t+1]   d[2..3]: D[g+8][2t..2t+1]
#ifdef __CUDACC__
DEVICE void mma_16x8x16(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// A shared-memory address as ldmatrix and cp.async take it: 32 bits of the shared state space, converted from a
// generic pointer once (`smem`) and then advanced by byte offsets, so that a kernel's main loop does no 64-bit
// pointer arithmetic for shared memory. (In the emulator, a plain byte pointer.)
typedef u32 smem_t;
DEVICE smem_t smem(const void* p) {
    unsigned long long s;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(s) : "l"(p));
    return (smem_t)s;
}

// Four 8×8 b16 matrices from shared memory into one register each, a warp at a time (ldmatrix.m8n8.x4): lane
// 8j + i passes the address of row i of matrix j (16-byte aligned); register j of lane t receives row t/4,
// columns 2(t%4) and 2(t%4)+1 of matrix j: an mma A fragment (x4) or two B fragments. `_trans` gives the
// transpose: rows 2(t%4) and 2(t%4)+1 of column t/4, the B fragment of a row-major K × N tile.
DEVICE void ldmatrix_x4(u32 r[4], smem_t row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(row));
}
DEVICE void ldmatrix_x4(u32 r[4], const bf16* row) { ldmatrix_x4(r, smem(row)); }
DEVICE void ldmatrix_x4_trans(u32 r[4], const bf16* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem(row)));
}

// 16 bytes global → shared without passing through registers (sm_80+), zero-filled when !valid (src is then not
// read, but must still be a mapped address). Copies land any time before the cp_async_wait that covers them.
DEVICE void cp_async16(smem_t dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
DEVICE void cp_async16(void* dst, const void* src, bool valid) { cp_async16(smem(dst), src, valid); }
// Closes the group of copies issued since the last commit.
DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most n of this thread's committed groups are still in flight (n: a compile-time constant).
#define cp_async_wait(n) asm volatile("cp.async.wait_group %0;\n" ::"n"(n))
#endif
