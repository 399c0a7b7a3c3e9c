// out = in · Wᵀ + bias, optionally GELU, with f32 accumulation: every linear layer of the step. Bias and GELU
// are fused in the epilogue. W is [N, K] (each output's weights contiguous), the "col" operand of mma.
// bf16 builds run a tensor-core kernel (mma.sync m16n8k16); the f32 checking build a SIMT kernel.
#include "common.cuh"

#define BM 64
#define BN 64

// Output row of input row r: row (r / per) * stride + r % per, so a batch of streams can land in a
// cache laid out with a fixed stride per stream (per = rows, stride = 0 for a plain matrix).
DEVICE long out_row(int r, int per, int stride) { return (long)(r / per) * stride + r % per; }

template <class TOut>
DEVICE void epilogue(TOut* out, const floatX* bias, int gelu_act, int M, int N, int r, int n, float acc, int per,
                     int stride) {
    if (r >= M || n >= N) return;
    if (bias) acc += to_float(bias[n]);
    if (gelu_act) acc = gelu(acc);
    store(&out[out_row(r, per, stride) * N + n], acc);
}

#ifdef RMT_F32
// SIMT: 256 threads, each 4×4 outputs strided by 16 so that shared-memory reads broadcast or hit distinct banks.
#define BK 16
template <class TOut>
DEVICE void matmul_tile(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                        int gelu_act, int per, int stride) {
    __shared__ float as[BK][BM + 1];
    __shared__ float ws[BK][BN + 1];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int i = threadIdx.x; i < BM * BK; i += blockDim.x) {
            int r = i / BK, k = i % BK;
            as[k][r] = (m0 + r < M && k0 + k < K) ? to_float(in[(long)(m0 + r) * K + k0 + k]) : 0.0f;
            ws[k][r] = (n0 + r < N && k0 + k < K) ? to_float(w[(long)(n0 + r) * K + k0 + k]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; k++)
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += as[k][ty + 16 * i] * ws[k][tx + 16 * j];
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            epilogue(out, bias, gelu_act, M, N, m0 + ty + 16 * i, n0 + tx + 16 * j, acc[i][j], per, stride);
}
#else
// Tensor cores: 128 threads = 2×2 warps, each warp a 32×32 tile = 2×4 mma tiles of 16×8, K in steps of 32.
// A 4-stage cp.async pipeline: the tiles of the next three K steps are in flight while the tensor cores work on
// this one, one barrier per step. Rows of the shared tiles are padded by 8 bf16 (80 bytes: 16-byte aligned, and
// the 8 rows an ldmatrix phase reads fall in distinct banks).
#define BK 32
#define STAGES 4
#define CHUNKS (BM * BK / 8 / 128)  // 16-byte chunks of a tile per thread

struct alignas(16) Tile {
    bf16 v[BM][BK + 8];
};

// Starts filling `tile` with rows [r0, r0 + 64) × columns [k0, k0 + 32) of a row-major [rows, K] matrix, zero
// outside it: cp.async of 16 bytes when every row start is 16-byte aligned (`vec`), else element by element
// (stored at once).
DEVICE void load_tile(Tile& tile, const bf16* src, int r0, int rows, int k0, int K, bool vec) {
#pragma unroll
    for (int c = 0; c < CHUNKS; c++) {
        int i = threadIdx.x + c * 128, r = i / (BK / 8), k = (i % (BK / 8)) * 8;
        bool in = r0 + r < rows && k0 + k < K;
        if (vec) {
            cp_async16(&tile.v[r][k], in ? src + (long)(r0 + r) * K + k0 + k : src, in);
        } else {
            bf16x8 v = {};
#pragma unroll
            for (int e = 0; e < 8; e++)
                if (r0 + r < rows && k0 + k + e < K)
                    v.w[e / 2] |= (u32)src[(long)(r0 + r) * K + k0 + k + e].bits << (16 * (e % 2));
            *(bf16x8*)&tile.v[r][k] = v;
        }
    }
}

template <class TOut>
DEVICE void matmul_tile(TOut* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                        int gelu_act, int per, int stride) {
    __shared__ Tile a_tile[STAGES], w_tile[STAGES];
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    int g = lane / 4, t = lane % 4;
    int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    bool vec = K % 8 == 0 && ((unsigned long long)in & 15) == 0 && ((unsigned long long)w & 15) == 0;
    float acc[2][4][4] = {};
    int steps = (K + BK - 1) / BK;
    // one group committed per step, empty or not, so that "all but the last STAGES - 2" always means "step kt"
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < steps) {
            load_tile(a_tile[s], in, m0, M, s * BK, K, vec);
            load_tile(w_tile[s], w, n0, N, s * BK, K, vec);
        }
        cp_async_commit();
    }
    for (int kt = 0; kt < steps; kt++) {
        cp_async_wait(STAGES - 2);  // this thread's copies of step kt have landed
        __syncthreads();            // everyone's have; and step kt - 1's buffer is no longer read
        int next = kt + STAGES - 1;
        if (next < steps) {
            load_tile(a_tile[next % STAGES], in, m0, M, next * BK, K, vec);
            load_tile(w_tile[next % STAGES], w, n0, N, next * BK, K, vec);
        }
        cp_async_commit();
        bf16(*as)[BK + 8] = a_tile[kt % STAGES].v;
        bf16(*ws)[BK + 8] = w_tile[kt % STAGES].v;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            // ldmatrix: lane l points at row l % 8 of matrix l / 8. A's four matrices are its 16×16 tile's
            // quadrants (rows +8 second, columns +8 third); W's are two n-tiles of 8 rows × k and k + 8.
            u32 a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
                ldmatrix_x4(a[mi], &as[wm + 16 * mi + lane % 8 + 8 * (lane / 8 % 2)][kk + 8 * (lane / 16)]);
#pragma unroll
            for (int np = 0; np < 2; np++) {
                u32 r[4];
                ldmatrix_x4(r, &ws[wn + 16 * np + lane % 8 + 8 * (lane / 16)][kk + 8 * (lane / 8 % 2)]);
                b[2 * np][0] = r[0];
                b[2 * np][1] = r[1];
                b[2 * np + 1][0] = r[2];
                b[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++) mma_16x8x16(acc[mi][ni], a[mi], b[ni]);
        }
    }
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int r = m0 + wm + 16 * mi + g + 8 * (e / 2), n = n0 + wn + 8 * ni + 2 * t + e % 2;
                epilogue(out, bias, gelu_act, M, N, r, n, acc[mi][ni][e], per, stride);
            }
}
#endif

// Activations out: grid (ceil(N / 64), ceil(M / 64)).
KERNEL void matmul(floatX* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                   int gelu_act, int per, int stride) {
    matmul_tile(out, in, w, bias, M, N, K, gelu_act, per, stride);
}

// f32 out: the logits of answer rows, and RMT-R v1's retrieved rows.
KERNEL void matmul_f32(float* out, const floatX* in, const floatX* w, const floatX* bias, int M, int N, int K,
                       int gelu_act) {
    matmul_tile(out, in, w, bias, M, N, K, gelu_act, M, 0);
}
