//! Exact f32 building blocks of the CPU reference: GEMM (through the `gemm` crate), LayerNorm, GELU, softmax.

use gemm::Parallelism;

use super::pair;

use crate::model::weights::{LayerNorm, Layout, Linear};

/// A weight matrix seen as the right-hand side of `x · W`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    /// The values.
    pub w: &'a [f32],
    /// Rows of the right-hand side (input width).
    pub n_in: usize,
    /// Columns (output width).
    pub n_out: usize,
    /// Storage order of `w`.
    pub layout: Layout,
}

impl Linear {
    /// This layer's weight as a GEMM operand.
    pub fn mat(&self) -> MatRef<'_> {
        MatRef { w: &self.w, n_in: self.n_in, n_out: self.n_out, layout: self.layout }
    }
}

/// `gemm`'s own threads for a GEMM of `macs` multiply-adds: only from [`THREADED_MIN_MACS`] on. Below it its
/// hand-offs cost more than they save on 2 cores (the bundled 4 × 128 shape ran 1.6× slower threaded:
/// bench/results/2026-11-25-cpu-fast-kernels.md); mid-size GEMMs take two cores through [`pair`] instead.
fn parallelism(macs: usize) -> Parallelism {
    if macs > THREADED_MIN_MACS && pair::may_split() {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    }
}

/// Below this a GEMM is not worth a second core (the hand-off, and the left operand packed twice).
const PAIR_MIN_MACS: usize = 1 << 20;
/// Above this `gemm`'s own threads take the whole GEMM.
const THREADED_MIN_MACS: usize = 1 << 25;

/// Where a matrix lives in a slice: element (i, j) at `offset + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    /// Index of element (0, 0).
    pub offset: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl Strided {
    /// A row-major matrix of `cols` columns starting at `offset`.
    pub fn rows(offset: usize, cols: usize) -> Self {
        Strided { offset, rs: cols, cs: 1 }
    }

    fn fits(&self, rows: usize, cols: usize, len: usize) -> bool {
        rows == 0 || cols == 0 || self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs < len
    }
}

/// `dst[m × n] (+)= lhs[m × k] · rhs[k × n]` over strided views; `accumulate` adds to `dst`, else overwrites.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    d: Strided,
    accumulate: bool,
    lhs: &[f32],
    a: Strided,
    rhs: &[f32],
    b: Strided,
) {
    assert!(d.fits(m, n, dst.len()) && a.fits(m, k, lhs.len()) && b.fits(k, n, rhs.len()), "gemm view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    let macs = m * n * k;
    let half = n / 2 / 8 * 8; // the left half's columns: whole 8-column panels
    if half > 0 && (PAIR_MIN_MACS..=THREADED_MIN_MACS).contains(&macs) && pair::may_split() {
        // SAFETY: the assert above bounds every index of both halves' views
        unsafe { gemm_pair((m, n, k), half, dst.as_mut_ptr(), d, accumulate, lhs.as_ptr(), a, rhs.as_ptr(), b) }
    } else {
        // SAFETY: the assert above bounds every index gemm touches in each of the three views.
        unsafe {
            gemm_raw((m, n, k), dst.as_mut_ptr(), d, accumulate, lhs.as_ptr(), a, rhs.as_ptr(), b, parallelism(macs))
        }
    }
}

/// `gemm_raw` as two column halves on two cores (columns `..half` here, the rest on [`pair`]'s helper): disjoint
/// outputs, each element computed as the whole GEMM computes it.
///
/// # Safety
/// As [`gemm_raw`], for the whole `m × n × k` views.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_pair(
    (m, n, k): (usize, usize, usize),
    half: usize,
    dst: *mut f32,
    d: Strided,
    accumulate: bool,
    lhs: *const f32,
    a: Strided,
    rhs: *const f32,
    b: Strided,
) {
    let ptrs = (SendPtr(dst), SendPtr(lhs.cast_mut()), SendPtr(rhs.cast_mut()));
    let (db, bb) = (shifted(d, half), shifted(b, half));
    let right = move || {
        let (dst, lhs, rhs) = ptrs;
        // SAFETY: within the caller's views; the left half writes other columns of dst
        unsafe { gemm_raw((m, n - half, k), dst.0, db, accumulate, lhs.0, a, rhs.0, bb, Parallelism::None) }
    };
    // SAFETY: as above, for the left half
    let left = || unsafe { gemm_raw((m, half, k), dst, d, accumulate, lhs, a, rhs, b, Parallelism::None) };
    pair::join(left, right);
}

/// A pointer into one of `gemm_strided`'s slices, to cross to the helper thread with the right half.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: `gemm_strided` bounds both halves' views and they write disjoint columns of `dst`.
unsafe impl Send for SendPtr {}

/// View `s` from its column `j` on.
fn shifted(s: Strided, j: usize) -> Strided {
    Strided { offset: s.offset + j * s.cs, ..s }
}

/// `gemm::gemm` over three strided views (`dst (+)= lhs · rhs`).
///
/// # Safety
/// Every element of the three `m × n × k` views must lie within its allocation, and `dst`'s view must not be
/// written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    d: Strided,
    accumulate: bool,
    lhs: *const f32,
    a: Strided,
    rhs: *const f32,
    b: Strided,
    parallelism: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.add(d.offset),
        d.cs as isize,
        d.rs as isize,
        accumulate,
        lhs.add(a.offset),
        a.cs as isize,
        a.rs as isize,
        rhs.add(b.offset),
        b.cs as isize,
        b.rs as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        parallelism,
    )
}

/// `out[rows × n_out] (+)= x[rows × n_in] · W (+ bias)`; with `accumulate` the product is added to `out`
/// (residual connections), otherwise `out` is overwritten.
pub fn matmul(x: &[f32], rows: usize, m: MatRef<'_>, bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    let (k, n) = (m.n_in, m.n_out);
    assert!(out.len() >= rows * n);
    for row in out[..rows * n].chunks_exact_mut(n) {
        match (accumulate, bias) {
            (false, Some(b)) => row.copy_from_slice(b),
            (false, None) => row.fill(0.0),
            (true, Some(b)) => row.iter_mut().zip(b).for_each(|(o, b)| *o += b),
            (true, None) => {}
        }
    }
    let w = match m.layout {
        Layout::InOut => Strided::rows(0, n),
        Layout::OutIn => Strided { offset: 0, rs: 1, cs: k },
    };
    gemm_strided((rows, n, k), out, Strided::rows(0, n), true, x, Strided::rows(0, k), m.w, w);
}

/// LayerNorm of each `d`-wide row of `x` into `out` (biased variance, as torch).
pub fn layer_norm(x: &[f32], ln: &LayerNorm, eps: f32, out: &mut [f32]) {
    let d = ln.w.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(&ln.w).zip(&ln.b) {
            *o = ((v as f64 - mean) * inv) as f32 * w + b;
        }
    }
}

/// GPT-2's `gelu_new`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), in place.
pub fn gelu_new(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// Softmax of a row in place (max-subtracted).
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-core split gives every element the bits the whole GEMM gives it, on the bundled model's shapes
    /// (row- and column-major right operands, strided like attention's heads, with and without accumulation).
    #[test]
    fn split_gemm_equals_the_whole_bit_for_bit() {
        let fill = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0).collect()
        };
        for (m, n, k, cs) in
            [(160, 512, 128, 1), (160, 128, 512, 1), (160, 384, 128, 1), (160, 256, 32, 128), (100, 72, 300, 1)]
        {
            let (lhs, rhs) = (fill(m * k, 1), fill(k * n * cs, 2));
            let (a, b) =
                (Strided::rows(0, k), if cs == 1 { Strided::rows(0, n) } else { Strided { offset: 3, rs: 1, cs } });
            let half = n / 2 / 8 * 8;
            assert!(half > 0, "a shape that splits");
            for accumulate in [false, true] {
                let (mut split, mut whole) = (fill(m * n, 3), fill(m * n, 3));
                let d = Strided::rows(0, n);
                assert!(d.fits(m, n, split.len()) && a.fits(m, k, lhs.len()) && b.fits(k, n, rhs.len()));
                // SAFETY: the views fit (asserted above)
                unsafe {
                    gemm_pair((m, n, k), half, split.as_mut_ptr(), d, accumulate, lhs.as_ptr(), a, rhs.as_ptr(), b);
                    let p = Parallelism::None;
                    gemm_raw((m, n, k), whole.as_mut_ptr(), d, accumulate, lhs.as_ptr(), a, rhs.as_ptr(), b, p);
                }
                let same = split.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}×{n}×{k} (column stride {cs}, accumulate {accumulate})");
            }
        }
    }
}
