// A CPU emulation of the CUDA execution model, enough to run cuda/*.cu unchanged as C++ (ENGINEERING §4).
//
// Each thread of a block is a fiber (ucontext) on one OS thread; blocks run one after another, so `__shared__`
// can simply be a function-local static. A fiber runs until it reaches a barrier, then the scheduler runs the
// others. A barrier is released only when every thread it concerns waits at the same call site:
//   __syncthreads: every thread of the block;  __syncwarp, shuffles, mma: the 32 lanes of the warp.
// Anything else — a thread that returns while others wait, lanes at different sites, a deadlock — is reported
// as divergence and the launch fails, where a GPU would hang or silently compute garbage.
// Warp-collective operations exchange values through per-lane slots (two, used in turn, so one barrier each);
// mma_16x8x16 gathers the fragments of the whole warp and computes each lane's outputs in the PTX ISA's layout for
// mma.m16n8k16 (see common.cuh), and ldmatrix_x4 hands each lane its words of four 8×8 matrices from the rows the
// lanes point at. cp.async copies land at the latest moment the PTX ISA allows (the thread's covering
// cp.async.wait_group).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

struct Lane {  // what a lane offers to a warp-collective operation
    float value;
    unsigned a[4], b[2];
    const unsigned short* row;  // ldmatrix: the row this lane points at
};

struct Copy {  // one cp.async of 16 bytes; src null: zero-fill
    void* dst;
    const void* src;
};

struct Thread {
    ucontext_t ctx;
    dim3 idx;
    State state = RUNNABLE;
    int site = 0;  // the barrier's source line
    Lane lanes[2];            // warp-collective operations use the two in turn (see next_slot)
    unsigned collectives = 0;  // warp-collective operations so far
    std::vector<Copy> open;                 // cp.async issued since the last commit
    std::vector<std::vector<Copy>> groups;  // committed groups, oldest first, not yet waited for
};

struct Run {
    ucontext_t scheduler;
    std::vector<Thread> threads;
    std::vector<std::vector<char>> stacks;
    Thread* cur = nullptr;
    dim3 block_idx, block_dim, grid_dim;
    std::function<void()> body;
    std::string error;
};

inline Run run;

inline Thread& self() { return *run.cur; }
inline unsigned flat(const dim3& i) { return i.x + run.block_dim.x * (i.y + run.block_dim.y * i.z); }
inline unsigned lane_id() { return flat(self().idx) % 32; }
inline Thread& lane_thread(unsigned warp, unsigned lane) { return run.threads[warp * 32 + lane]; }

inline void wait(State s, int site) {
    self().state = s;
    self().site = site;
    swapcontext(&self().ctx, &run.scheduler);
}

inline void syncthreads(int site) { wait(AT_BLOCK_BARRIER, site); }
inline void syncwarp(int site) { wait(AT_WARP_BARRIER, site); }

inline void check_mask(unsigned mask) {
    if (mask != 0xffffffffu && run.error.empty()) run.error = "only full-warp masks are emulated";
}

// The slot this lane offers its operands in, for its next warp-collective operation. One barrier per operation
// suffices: consecutive operations use alternate slots, and a lane writes this slot again only after the next
// operation's barrier, which every lane of the warp reaches after reading this one.
inline unsigned next_slot() { return self().collectives++ % 2; }

inline float shfl(unsigned mask, float v, unsigned src, int site) {
    check_mask(mask);
    unsigned slot = next_slot();
    self().lanes[slot].value = v;
    syncwarp(site);
    unsigned warp = flat(self().idx) / 32;
    return lane_thread(warp, src % 32).lanes[slot].value;
}

inline float bf16_bits(unsigned reg, int high) { unsigned u = (high ? reg >> 16 : reg & 0xffffu) << 16; float f; memcpy(&f, &u, 4); return f; }

// One lane's share of D += A·B for mma.m16n8k16.row.col.f32.bf16.bf16.f32 (layouts in common.cuh).
inline void mma(float d[4], const unsigned a[4], const unsigned b[2], int site) {
    unsigned slot = next_slot();
    memcpy(self().lanes[slot].a, a, sizeof self().lanes[slot].a);
    memcpy(self().lanes[slot].b, b, sizeof self().lanes[slot].b);
    syncwarp(site);
    unsigned warp = flat(self().idx) / 32;
    auto A = [&](int row, int col) {  // A[row][col] from the lane that holds it
        int g = row % 8, t = (col % 8) / 2, reg = (row >= 8) + 2 * (col >= 8);
        return bf16_bits(lane_thread(warp, 4 * g + t).lanes[slot].a[reg], col % 2);
    };
    auto B = [&](int k, int col) {
        int t = (k % 8) / 2, reg = k >= 8;
        return bf16_bits(lane_thread(warp, 4 * col + t).lanes[slot].b[reg], k % 2);
    };
    int g = lane_id() / 4, t = lane_id() % 4;
    for (int e = 0; e < 4; e++) {
        int row = g + 8 * (e / 2), col = 2 * t + e % 2;
        float acc = d[e];
        for (int k = 0; k < 16; k++) acc += A(row, k) * B(k, col);
        d[e] = acc;
    }
}

// One lane's share of ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lane 8j + i points at row i of 8×8
// matrix j (8 contiguous b16, 16-byte aligned); register j of lane t gets the pair (row t/4, cols 2(t%4), +1) of
// matrix j, or with `trans` the pair (rows 2(t%4), +1; col t/4), the lower index in the low half.
inline void load_matrices(unsigned r[4], const void* row, bool trans, int site) {
    if (((unsigned long long)row & 15) != 0 && run.error.empty()) run.error = "ldmatrix: a row address is not 16-byte aligned";
    unsigned slot = next_slot();
    self().lanes[slot].row = (const unsigned short*)row;
    syncwarp(site);
    unsigned warp = flat(self().idx) / 32, t = lane_id();
    auto at = [&](int j, int i, int c) -> unsigned {  // element (i, c) of matrix j
        const unsigned short* p = lane_thread(warp, 8 * j + i).lanes[slot].row;
        return p ? p[c] : 0u;
    };
    for (int j = 0; j < 4; j++) {
        unsigned lo = trans ? at(j, 2 * (t % 4), t / 4) : at(j, t / 4, 2 * (t % 4));
        unsigned hi = trans ? at(j, 2 * (t % 4) + 1, t / 4) : at(j, t / 4, 2 * (t % 4) + 1);
        r[j] = lo | (hi << 16);
    }
}

// cp.async is asynchronous on a GPU: the copy may land any time before the thread's cp.async.wait_group. The
// emulator makes the copies as late as that allows, at the wait, so a kernel that reads shared memory before it
// waits reads stale data and fails its test.
inline void cp_async16(void* dst, const void* src, bool valid) {
    if ((((unsigned long long)dst | (unsigned long long)src) & 15) != 0 && run.error.empty())
        run.error = "cp.async: an address is not 16-byte aligned";
    self().open.push_back({dst, valid ? src : nullptr});
}

inline void cp_async_commit() {
    self().groups.push_back(std::move(self().open));
    self().open.clear();
}

// cp.async.wait_group n: this thread's copies done but for its n most recent groups.
inline void cp_async_wait_group(size_t n) {
    auto& groups = self().groups;
    while (groups.size() > n) {
        for (const Copy& c : groups.front()) {
            if (c.src) memcpy(c.dst, c.src, 16);
            else memset(c.dst, 0, 16);
        }
        groups.erase(groups.begin());
    }
}

inline void fiber_main() {
    run.body();
    self().state = DONE;
    swapcontext(&self().ctx, &run.scheduler);
}

// Releases the barriers whose threads have all arrived; false when nothing can move (divergence or deadlock).
inline bool release() {
    unsigned n = run.threads.size();
    bool released = false;
    for (unsigned w = 0; w * 32 < n; w++) {
        unsigned lanes = n - w * 32 < 32 ? n - w * 32 : 32;
        Thread& first = lane_thread(w, 0);
        bool all = true;
        for (unsigned l = 0; l < lanes; l++) {
            Thread& t = lane_thread(w, l);
            all = all && t.state == AT_WARP_BARRIER && t.site == first.site;
        }
        if (all) {
            for (unsigned l = 0; l < lanes; l++) lane_thread(w, l).state = RUNNABLE;
            released = true;
        }
    }
    if (released) return true;
    bool all_block = true;
    for (auto& t : run.threads) all_block = all_block && t.state == AT_BLOCK_BARRIER && t.site == run.threads[0].site;
    if (all_block) {
        for (auto& t : run.threads) t.state = RUNNABLE;
        return true;
    }
    return false;
}

inline std::string describe() {
    std::string s;
    for (auto& t : run.threads) {
        const char* what[] = {"runnable", "__syncthreads", "warp-sync", "returned"};
        s += "\n  thread " + std::to_string(flat(t.idx)) + ": " + what[t.state];
        if (t.state == AT_BLOCK_BARRIER || t.state == AT_WARP_BARRIER) s += " at line " + std::to_string(t.site);
    }
    return s;
}

inline bool run_block() {
    unsigned n = run.block_dim.x * run.block_dim.y * run.block_dim.z;
    run.threads.assign(n, Thread());
    if (run.stacks.size() < n) run.stacks.resize(n, std::vector<char>(64 * 1024));
    for (unsigned i = 0; i < n; i++) {
        Thread& t = run.threads[i];
        t.idx = dim3(i % run.block_dim.x, (i / run.block_dim.x) % run.block_dim.y,
                     i / (run.block_dim.x * run.block_dim.y));
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = run.stacks[i].data();
        t.ctx.uc_stack.ss_size = run.stacks[i].size();
        t.ctx.uc_link = nullptr;
        makecontext(&t.ctx, fiber_main, 0);
    }
    for (;;) {
        bool ran = false;
        for (auto& t : run.threads) {
            if (t.state != RUNNABLE) continue;
            run.cur = &t;
            swapcontext(&run.scheduler, &t.ctx);
            ran = true;
        }
        if (!run.error.empty()) return false;
        bool done = true;
        for (auto& t : run.threads) done = done && t.state == DONE;
        if (done) return true;
        if (!ran && !release()) {
            run.error = "divergent barrier or deadlock in block (" + std::to_string(run.block_idx.x) + "," +
                        std::to_string(run.block_idx.y) + "," + std::to_string(run.block_idx.z) + "):" + describe();
            return false;
        }
    }
}

// Runs `body` for every thread of every block; returns the error, empty when the launch was clean.
inline std::string launch(dim3 grid, dim3 block, std::function<void()> body) {
    run.body = std::move(body);
    run.error.clear();
    run.grid_dim = grid;
    run.block_dim = block;
    if (block.x * block.y * block.z > 1024) return "more than 1024 threads per block";
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                run.block_idx = dim3(x, y, z);
                if (!run_block()) return run.error;
            }
    return "";
}

// Kernel registry: a kernel's parameter signature ('p' pointer, 'i' int, 'f' float) and a thunk that calls it
// with cuLaunchKernel-style arguments (an array of pointers to each argument's value).
template <class T> constexpr char code() {
    if constexpr (std::is_pointer_v<T>) return 'p';
    else if constexpr (std::is_same_v<T, int>) return 'i';
    else if constexpr (std::is_same_v<T, float>) return 'f';
    else return '?';
}

template <class... A> std::string signature(void (*)(A...)) { return std::string{code<A>()...}; }

template <class... A, size_t... I> void call(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_reference_t<A>*>(p[I])...);
}
template <class... A> void call(void (*f)(A...), void** p) { call(f, p, std::index_sequence_for<A...>{}); }

struct Kernel {
    const char* name;
    std::string signature;
    std::function<void(void**)> run;
};

}  // namespace emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define threadIdx (emu::self().idx)
#define blockIdx (emu::run.block_idx)
#define blockDim (emu::run.block_dim)
#define gridDim (emu::run.grid_dim)
#define __syncthreads() emu::syncthreads(__LINE__)
#define __syncwarp() emu::syncwarp(__LINE__)
#define __shfl_xor_sync(mask, v, m) emu::shfl(mask, v, emu::lane_id() ^ (m), __LINE__)
#define __shfl_sync(mask, v, src) emu::shfl(mask, v, src, __LINE__)
#define mma_16x8x16(d, a, b) emu::mma(d, a, b, __LINE__)
// common.cuh's shared-memory addresses: byte pointers here, so that offsets added to them address the same bytes.
typedef char* smem_t;
inline smem_t smem(const void* p) { return (char*)p; }
#define ldmatrix_x4(r, row) emu::load_matrices(r, row, false, __LINE__)
#define cp_async16(dst, src, valid) emu::cp_async16(dst, src, valid)
#define cp_async_commit() emu::cp_async_commit()
#define cp_async_wait(n) emu::cp_async_wait_group(n)
#define ldmatrix_x4_trans(r, row) emu::load_matrices(r, row, true, __LINE__)

inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
