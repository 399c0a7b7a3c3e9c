//! Exact f32 building blocks of the CPU reference: GEMM (through the `gemm` crate), LayerNorm, GELU, softmax.

use gemm::Parallelism;

use crate::model::weights::{LayerNorm, Layout, Linear};

/// A weight matrix seen as the right-hand side of `x · W`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub w: &'a [f32],
    pub n_in: usize,
    pub n_out: usize,
    pub layout: Layout,
}

impl Linear {
    pub(crate) fn mat(&self) -> MatRef<'_> {
        MatRef {
            w: &self.w,
            n_in: self.n_in,
            n_out: self.n_out,
            layout: self.layout,
        }
    }
}

fn parallelism(rows: usize, m: MatRef<'_>) -> Parallelism {
    let threads = rayon::current_num_threads();
    // below ~1 MFLOP the thread hand-off costs more than it saves
    if threads > 1 && rows * m.n_in * m.n_out > 1 << 19 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `out[rows × n_out] (+)= x[rows × n_in] · W (+ bias)`; with `accumulate` the product is added to `out`
/// (residual connections), otherwise `out` is overwritten.
pub fn matmul(
    x: &[f32],
    rows: usize,
    m: MatRef<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    accumulate: bool,
) {
    let (k, n) = (m.n_in, m.n_out);
    assert!(x.len() >= rows * k && out.len() >= rows * n && m.w.len() == k * n);
    for row in out[..rows * n].chunks_exact_mut(n) {
        match (accumulate, bias) {
            (false, Some(b)) => row.copy_from_slice(b),
            (false, None) => row.fill(0.0),
            (true, Some(b)) => row.iter_mut().zip(b).for_each(|(o, b)| *o += b),
            (true, None) => {}
        }
    }
    let (rhs_cs, rhs_rs) = match m.layout {
        Layout::InOut => (1, n as isize),
        Layout::OutIn => (k as isize, 1),
    };
    // SAFETY: the asserts above bound every index gemm touches: lhs rows×k (row stride k), rhs k×n with the
    // strides of its layout inside w (len k·n), dst rows×n (row stride n).
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            m.w.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism(rows, m),
        )
    }
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
