//! The choice of element-wise kernels of a CPU step: the exact reference or the fast ones. GEMMs are shared.

use super::{fast, ops};
use crate::model::weights::LayerNorm;

/// Which element-wise kernels a CPU step uses; the GEMMs and the attention are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Exact f32: libm `tanh`, LayerNorm statistics in f64. The oracle.
    Reference,
    /// Vectorised: polynomial `tanh` and `exp`, f32 LayerNorm (within a few ulps of the reference).
    Fast,
}

impl Kernels {
    pub(super) fn layer_norm(self, x: &[f32], ln: &LayerNorm, eps: f32, out: &mut [f32]) {
        match self {
            Kernels::Reference => ops::layer_norm(x, ln, eps, out),
            Kernels::Fast => fast::layer_norm_rows(x, &ln.w, &ln.b, eps, out),
        }
    }

    pub(super) fn gelu(self, x: &mut [f32]) {
        match self {
            Kernels::Reference => ops::gelu_new(x),
            Kernels::Fast => fast::gelu_new(x),
        }
    }

    pub(super) fn softmax(self, row: &mut [f32]) {
        match self {
            Kernels::Reference => ops::softmax(row),
            Kernels::Fast => fast::softmax(row),
        }
    }
}
