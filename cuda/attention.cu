// Causal self-attention over [mem | segment | mem], flash style: queries, keys and values are read straight from
// the packed QKV rows (no permute), keys stream through shared memory in tiles, and the softmax is online, so
// the T×T scores never exist. Decode is the same kernel with one query row at position q0.
// bf16 builds run both products on tensor cores (mma.sync m16n8k16, FlashAttention-2's register layout: a warp
// owns 16 query rows, and the scores' accumulator fragments become the A operand of P·V without leaving
// registers); the f32 checking build runs a SIMT kernel.
#include "common.cuh"

#define QROWS 64   // query rows per block: 4 warps × 16 rows
#define MAX_HS 64  // head size ≤ 64 (every GPT-2 size); head size is a multiple of 32

// qkv: [B][T_cap][3C] (q | k | v, head h at h·hs in each); queries are positions q0 .. q0+nq of each stream,
// keys positions 0 ..= the query's. out: [B][nq][C]. Grid (ceil(nq / 64), heads, B · splits), 128 threads.
// With splits > 1 (a few streams, where the query blocks alone leave SMs idle) each block takes split_keys keys
// of its rows (a multiple of 64) and writes into `partial` what attention_merge combines, flash-decoding style:
// partial[B][splits][nq][heads][hs + 2] = (Σ e^(s − m) v, m, Σ e^(s − m)). With splits = 1, out directly.

// Where the partial result of (stream, split, row, head) starts.
DEVICE long partial_at(int stream, int split, int splits, int row, int nq, int h, int C, int hs) {
    return ((((long)stream * splits + split) * nq + row) * (C / hs) + h) * (hs + 2);
}
#ifdef RMT_F32
#define KTILE 32  // keys per shared tile, one per lane

KERNEL void attention(floatX* out, float* partial, const floatX* qkv, int nq, int q0, int T_cap, int C, int hs,
                      int splits, int split_keys) {
    __shared__ float qs[QROWS][MAX_HS];
    __shared__ float ks[KTILE][MAX_HS + 1];
    __shared__ float vs[KTILE][MAX_HS];
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    int h = blockIdx.y, stream = blockIdx.z / splits, split = blockIdx.z % splits, i0 = blockIdx.x * QROWS;
    const floatX* base = qkv + (long)stream * T_cap * 3 * C;
    float scale = rsqrtf((float)hs);
    int rows = nq - i0 < QROWS ? nq - i0 : QROWS;
    int k_begin = split * split_keys, block_last = q0 + i0 + rows - 1;
    if (k_begin > block_last) return;  // no keys of this split reach these rows (uniform across the block)
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
    // the last key this block needs: its last query position, or the end of its split
    int last = block_last < k_begin + split_keys - 1 ? block_last : k_begin + split_keys - 1;
    for (int k0 = k_begin; k0 <= last; k0 += KTILE) {
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
        if (splits == 1) {
            floatX* o = out + ((long)stream * nq + i0 + qi) * C + h * hs;
#pragma unroll
            for (int c = 0; c < MAX_HS / WARP; c++)
                if (c < cols) store(&o[lane + WARP * c], acc[r][c] / l[r]);
        } else {
            float* p = partial + partial_at(stream, split, splits, i0 + qi, nq, h, C, hs);
#pragma unroll
            for (int c = 0; c < MAX_HS / WARP; c++)
                if (c < cols) p[lane + WARP * c] = acc[r][c];
            if (lane == 0) {
                p[hs] = m[r];
                p[hs + 1] = l[r];
            }
        }
    }
}
#else
#define KT 64  // keys per shared tile

// A tile of keys or values, rows padded by 8 bf16 so that a warp's fragment loads fall in distinct banks.
struct alignas(16) KvTile {
    bf16 v[KT][MAX_HS + 8];
};

// Rows of a query fragment: element d of the warp's query row r (zero past the block's rows).
DEVICE u32 query_pair(const bf16* q, int r, int rows, int d, int C) {
    return r < rows ? pack_bf16(q[(long)r * 3 * C + d], q[(long)r * 3 * C + d + 1]) : 0u;
}

// Starts filling the tiles with the keys and values of positions [k0, k0 + 64) ∩ [0, last] (zero beyond): a fixed
// number of 16-byte chunks per thread (HS a constant), so the loop unrolls and a chunk's row and dims are shifts.
// VEC: cp.async of 16 bytes (rows 16-byte aligned), else element by element (stored at once).
template <int HS, bool VEC>
DEVICE void load_kv(KvTile& ks, KvTile& vs, const bf16* base, int k0, int last, int C) {
    constexpr int PER_ROW = HS / 8, CHUNKS = KT * PER_ROW / 128;  // 128 threads
    static_assert(KT * PER_ROW % 128 == 0, "chunks split evenly over the threads");
    const bf16* tile = base + (long)k0 * 3 * C;
#pragma unroll
    for (int c = 0; c < CHUNKS; c++) {
        int i = threadIdx.x + 128 * c, j = i / PER_ROW, d = i % PER_ROW * 8;
        bool in = k0 + j <= last;
        const bf16* src = (in ? tile + (long)j * 3 * C : base) + d;
        if (VEC) {
            cp_async16(&ks.v[j][d], src + C, in);
            cp_async16(&vs.v[j][d], src + 2 * C, in);
        } else {
            bf16x8 k = {}, v = {};
#pragma unroll
            for (int e = 0; e < 8; e++)
                if (in) {
                    k.w[e / 2] |= (u32)src[C + e].bits << (16 * (e % 2));
                    v.w[e / 2] |= (u32)src[2 * C + e].bits << (16 * (e % 2));
                }
            *(bf16x8*)&ks.v[j][d] = k;
            *(bf16x8*)&vs.v[j][d] = v;
        }
    }
}

// (x0, x1) ≈ hi + lo, each a packed bf16 pair: hi the rounded values, lo what rounding left (to ~2⁻¹⁷ relative).
DEVICE void split_bf16(float x0, float x1, u32& hi, u32& lo) {
    hi = pack_bf16(x0, x1);
    lo = pack_bf16(x0 - __uint_as_float(hi << 16), x1 - __uint_as_float(hi & 0xffff0000u));
}

// The kernel for head size HS (a compile-time constant, so that every fragment loop has a fixed count), with VEC
// as in load_kv. Scores are kept in base 2 (scaled by log2 e along with 1/√hs, so each exponential is one ex2);
// the partials' m goes out in natural units, as attention_merge reads it.
template <int HS, bool VEC>
DEVICE void attention_tc(KvTile (&k_tiles)[2], KvTile (&v_tiles)[2], floatX* out, float* partial, const floatX* qkv,
                         int nq, int q0, int T_cap, int C, int splits, int split_keys) {
    constexpr int KC = HS / 16, DN = HS / 8;  // 16-dim A fragments of Q; 8-dim output fragments
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, t = lane % 4;
    int h = blockIdx.y, stream = blockIdx.z / splits, split = blockIdx.z % splits, i0 = blockIdx.x * QROWS;
    const bf16* base = qkv + (long)stream * T_cap * 3 * C + h * HS;
    const float scale = rsqrtf((float)HS) * 1.4426950408889634f;  // 1/√hs · log2 e
    int rows = nq - i0 < QROWS ? nq - i0 : QROWS;
    int k_begin = split * split_keys, block_last = q0 + i0 + rows - 1;
    if (k_begin > block_last) return;  // no keys of this split reach these rows (uniform across the block)
    // the last key this block needs: its last query position, or the end of its split
    int last = block_last < k_begin + split_keys - 1 ? block_last : k_begin + split_keys - 1;
    int w0 = warp * 16, pos = q0 + i0 + w0 + g;           // this thread's rows: w0 + g and w0 + g + 8
    bool active = w0 < rows;                              // uniform across the warp
    int warp_first = pos - g, warp_last = warp_first + 15 < last ? warp_first + 15 : last;

    // the warp's 16 query rows as A fragments, one per 16 dims
    u32 qa[KC][4];
    const bf16* q = base + (long)(q0 + i0 + w0) * 3 * C;
#pragma unroll
    for (int kc = 0; kc < KC; kc++) {
        int d = kc * 16 + 2 * t;
        qa[kc][0] = query_pair(q, g, rows - w0, d, C);
        qa[kc][1] = query_pair(q, g + 8, rows - w0, d, C);
        qa[kc][2] = query_pair(q, g, rows - w0, d + 8, C);
        qa[kc][3] = query_pair(q, g + 8, rows - w0, d + 8, C);
    }
    float o[DN][4] = {}, m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
    load_kv<HS, VEC>(k_tiles[0], v_tiles[0], base, k_begin, last, C);
    cp_async_commit();
    for (int k0 = k_begin, buf = 0; k0 <= last; k0 += KT, buf ^= 1) {
        cp_async_wait(0);  // this thread's copies of this tile have landed (the next is not issued yet)
        __syncthreads();   // everyone's have; and the other buffer's tile is consumed
        if (k0 + KT <= last) load_kv<HS, VEC>(k_tiles[buf ^ 1], v_tiles[buf ^ 1], base, k0 + KT, last, C);
        cp_async_commit();
        const KvTile &ks = k_tiles[buf], &vs = v_tiles[buf];
        if (!active || k0 > warp_last) continue;
        // S = Q·Kᵀ over 64 keys: 8 fragments of 16 rows × 8 keys
        float s[KT / 8][4] = {}, mx[2] = {m[0], m[1]};
#pragma unroll
        for (int jp = 0; jp < KT / 16; jp++)  // two fragments of 8 keys per ldmatrix: dims kc·16 and kc·16 + 8
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                u32 r[4];
                ldmatrix_x4(r, &ks.v[16 * jp + lane % 8 + 8 * (lane / 16)][kc * 16 + 8 * (lane / 8 % 2)]);
                u32 b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
                mma_16x8x16(s[2 * jp], qa[kc], b0);
                mma_16x8x16(s[2 * jp + 1], qa[kc], b1);
            }
        // scaled; causally masked only in the tile that holds the diagonal of the warp's rows (uniform per warp)
        bool diagonal = k0 + KT - 1 > warp_first;
#pragma unroll
        for (int j = 0; j < KT / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[j][e] *= scale;
                if (diagonal && k0 + 8 * j + 2 * t + e % 2 > pos + 8 * (e / 2)) s[j][e] = NEG_INF;
                mx[e / 2] = fmaxf(mx[e / 2], s[j][e]);
            }
        }
        // online softmax: a row's values are spread over the 4 threads of a quad
        float corr[2], ref[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
            // a row with no key in this split (its position is before the split's first key) keeps m = −∞ and
            // zeros: the exponents subtract 0 instead of −∞, so its partial result (never merged) has no NaN
            ref[r] = mx[r] == NEG_INF ? 0.0f : mx[r];
            corr[r] = fast_exp2(m[r] - ref[r]);
            m[r] = mx[r];
            l[r] *= corr[r];  // this thread's share of the row sum; the quad's shares are added at the end
        }
#pragma unroll
        for (int dn = 0; dn < DN; dn++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[dn][e] *= corr[e / 2];
#pragma unroll
        for (int j = 0; j < KT / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[j][e] = fast_exp2(s[j][e] - ref[e / 2]);
                l[e / 2] += s[j][e];
            }
        // O += P·V: two score fragments (16 keys) form one A fragment, P split as hi + lo in bf16 so that P·V
        // loses nothing to the rounding of P (two products; P·V is a small share of the step's work)
#pragma unroll
        for (int kc = 0; kc < KT / 16; kc++) {
            u32 hi[4], lo[4];
            split_bf16(s[2 * kc][0], s[2 * kc][1], hi[0], lo[0]);
            split_bf16(s[2 * kc][2], s[2 * kc][3], hi[1], lo[1]);
            split_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1], hi[2], lo[2]);
            split_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3], hi[3], lo[3]);
#pragma unroll
            for (int dp = 0; dp < HS / 16; dp++) {  // V is keys × dims: transposed loads, two dim fragments
                u32 r[4];
                ldmatrix_x4_trans(r, &vs.v[16 * kc + lane % 8 + 8 * (lane / 8 % 2)][16 * dp + 8 * (lane / 16)]);
                u32 b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
                mma_16x8x16(o[2 * dp], hi, b0);
                mma_16x8x16(o[2 * dp], lo, b0);
                mma_16x8x16(o[2 * dp + 1], hi, b1);
                mma_16x8x16(o[2 * dp + 1], lo, b1);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 2);
    }
    if (!active) return;
    // this thread's two rows (w0 + g, w0 + g + 8): where each goes is worked out once per row, not per element
    // (per element, that index arithmetic was most of the kernel's instructions)
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = w0 + g + 8 * r;
        if (row >= rows) continue;
        if (splits == 1) {
            floatX* dst = out + ((long)stream * nq + i0 + row) * C + h * HS;
            float inv = 1.0f / l[r];
#pragma unroll
            for (int dn = 0; dn < DN; dn++) store_pair(dst + 8 * dn + 2 * t, o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
        } else {
            float* p = partial + partial_at(stream, split, splits, i0 + row, nq, h, C, HS);
#pragma unroll
            for (int dn = 0; dn < DN; dn++) {
                p[8 * dn + 2 * t] = o[dn][2 * r];
                p[8 * dn + 2 * t + 1] = o[dn][2 * r + 1];
            }
            if (t == 0) {
                p[HS] = m[r] * 0.6931471805599453f;  // base 2 → natural units: ln 2
                p[HS + 1] = l[r];
            }
        }
    }
}

// Unrolled for a fixed HS, ptxas took 178 registers (2 blocks an SM); capped at 168, 3 blocks fit, with no spills (at
// 128, 4 blocks, it spills).
KERNEL_BOUNDED(128, 3) void attention(floatX* out, float* partial, const floatX* qkv, int nq, int q0, int T_cap, int C,
                                      int hs, int splits, int split_keys) {
    __shared__ KvTile k_tiles[2], v_tiles[2];  // double-buffered: the next tile streams in during this one
    bool vec = ((unsigned long long)qkv & 15) == 0 && C % 8 == 0;
    if (hs == 64 && vec)
        attention_tc<64, true>(k_tiles, v_tiles, out, partial, qkv, nq, q0, T_cap, C, splits, split_keys);
    else if (hs == 64)
        attention_tc<64, false>(k_tiles, v_tiles, out, partial, qkv, nq, q0, T_cap, C, splits, split_keys);
    else if (vec)
        attention_tc<32, true>(k_tiles, v_tiles, out, partial, qkv, nq, q0, T_cap, C, splits, split_keys);
    else
        attention_tc<32, false>(k_tiles, v_tiles, out, partial, qkv, nq, q0, T_cap, C, splits, split_keys);
}
#endif

// out = the splits of each row combined: Σ_s e^(m_s − M) o_s / Σ_s e^(m_s − M) l_s over the splits that hold keys
// of the row (M the largest m_s). Grid (nq, B, ceil(C / 256)), two adjacent outputs (of one head) per thread, so
// that each split's weight is worked out once for both; the splits are read MERGE_BATCH at a time with every load of
// a batch in flight at once (a loop over them would wait on each).
#define MERGE_BATCH 8
KERNEL void attention_merge(floatX* out, const float* partial, int nq, int q0, int C, int hs, int splits,
                            int split_keys) {
    int row = blockIdx.x, stream = blockIdx.y, e = 2 * (blockIdx.z * blockDim.x + threadIdx.x);
    if (e >= C) return;
    int h = e / hs, d = e % hs, used = (q0 + row) / split_keys + 1;
    // split 0's partial of this row and head, and the distance between splits (worked out once: the index
    // arithmetic per split, with its division, was most of this kernel's instructions)
    const float* first = partial + partial_at(stream, 0, splits, row, nq, h, C, hs);
    long split_stride = partial_at(0, 1, splits, 0, nq, 0, C, hs);
    float m = NEG_INF, l = 0.0f, o[2] = {0.0f, 0.0f};
    for (int s0 = 0; s0 < used; s0 += MERGE_BATCH) {
        float pm[MERGE_BATCH], pl[MERGE_BATCH];
        f32x2 po[MERGE_BATCH];
#pragma unroll
        for (int j = 0; j < MERGE_BATCH; j++) {
            const float* p = first + (s0 + j < used ? s0 + j : used - 1) * split_stride;
            pm[j] = s0 + j < used ? p[hs] : NEG_INF;
            pl[j] = p[hs + 1];
            po[j] = *(const f32x2*)(p + d);  // 8-byte aligned: hs + 2 and d are even
        }
        float mx = m;
#pragma unroll
        for (int j = 0; j < MERGE_BATCH; j++) mx = fmaxf(mx, pm[j]);
        // every used split holds a key of the row, so mx is finite; the first batch rescales zeros
        float corr = __expf(m - mx);
        l *= corr;
        o[0] *= corr;
        o[1] *= corr;
#pragma unroll
        for (int j = 0; j < MERGE_BATCH; j++) {
            float w = __expf(pm[j] - mx);
            l += w * pl[j];
            o[0] += w * po[j].lo;
            o[1] += w * po[j].hi;
        }
        m = mx;
    }
    store_pair(&out[((long)stream * nq + row) * C + e], o[0] / l, o[1] / l);
}
