//! Exact f32 building blocks of the CPU reference: GEMM (through the `gemm` crate), LayerNorm, GELU, softmax.

use gemm::Parallelism;

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

fn parallelism(flops: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    // below ~32 MFLOP the thread hand-offs cost more than they save on 2 cores (the bundled 4 × 128 shape ran 1.6×
    // slower threaded: bench/results/2026-11-25-cpu-fast-kernels.md); inside a rayon task (samples or streams
    // already run in parallel) a nested split only adds hand-offs
    if threads > 1 && flops > 1 << 25 && rayon::current_thread_index().is_none() {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

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
    // SAFETY: the assert above bounds every index gemm touches in each of the three views.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.offset),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr().add(a.offset),
            a.cs as isize,
            a.rs as isize,
            rhs.as_ptr().add(b.offset),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism(m * n * k),
        )
    }
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
