//! The CUDA backend: hand-written kernels (`cuda/*.cu`, compiled at run time by NVRTC) behind the same
//! [`Step`](super::Step) as the CPU backend.
//!
//! - [`Device`]: the launch seam, implemented by [`Gpu`] (cudarc) and, in the tests, by the CPU emulation of
//!   CUDA in `cuda/emu`, so the step's orchestration is checked without a GPU.
//! - [`CudaModel`]: weights uploaded once (bf16, or f32 for checking); [`CudaStep`]: one stream's step.
//! - [`nvrtc`]: compilation for an architecture, ptxas's register and spill report, the on-disk CUBIN cache.

mod device;
mod gpu;
mod matmul_tile;
pub mod nvrtc;
mod step;
mod weights;

pub use device::{Device, KernelArg, Precision};
pub use gpu::{unavailable, Gpu};
pub use matmul_tile::{MatmulTile, MATMUL_TILES};
pub use step::{supports, supports_memory, CudaModel, CudaStep};
