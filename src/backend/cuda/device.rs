//! The launch seam under the CUDA step: buffers, copies and kernel launches by name, in the shape of the CUDA
//! driver API. The GPU implements it with cudarc ([`super::Gpu`]); the tests implement it with the CPU emulation
//! of CUDA (`cuda/emu`), so the step's whole orchestration — every launch, grid and argument list — runs and is
//! checked on machines without a GPU.

use crate::error::Result;

/// The storage type of weights and activations on the device; accumulation is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// bf16 storage, tensor-core matmuls: the fast mode.
    Bf16,
    /// f32 storage and SIMT matmuls: the checking mode, within 1e-5 of the CPU reference.
    F32,
}

impl Precision {
    /// Bytes per stored element.
    pub fn bytes(self) -> usize {
        match self {
            Precision::Bf16 => 2,
            Precision::F32 => 4,
        }
    }

    /// `values` in this storage type, as bytes (bf16 rounds to nearest even, as the kernels' `store` does).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Precision::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Precision::Bf16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        }
    }
}

/// One kernel argument, passed by value as `cuLaunchKernel` takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A device address (0 for a null pointer).
    Ptr(u64),
    /// A C `int`.
    I32(i32),
    /// A C `float`.
    F32(f32),
}

/// A device that runs the kernels of `cuda/*.cu` built for one [`Precision`].
pub trait Device: Send + Sync {
    /// Device memory (freed on drop).
    type Buffer: Send + Sync;
    /// A recorded sequence of launches, replayed as one (a CUDA graph).
    type Graph: Send;
    /// The storage precision the kernels were built for.
    fn precision(&self) -> Precision;
    /// `bytes` of zeroed device memory.
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer>;
    /// The buffer's device address, for kernel arguments.
    fn address(&self, buf: &Self::Buffer) -> u64;
    /// Copies `bytes` into `buf` at byte `offset`.
    fn upload(&self, buf: &mut Self::Buffer, offset: usize, bytes: &[u8]) -> Result<()>;
    /// Copies `out.len()` bytes from byte `offset` of `buf` (waits for the launches before it).
    fn download(&self, buf: &Self::Buffer, offset: usize, out: &mut [u8]) -> Result<()>;
    /// Copies `bytes` from byte `src_offset` of `src` to byte `dst_offset` of `dst`, in order with the launches.
    fn copy(&self, src: (&Self::Buffer, usize), dst: (&mut Self::Buffer, usize), bytes: usize) -> Result<()>;
    /// Launches kernel `name` over `grid` blocks of `block` threads.
    fn launch(&self, name: &str, grid: [u32; 3], block: [u32; 3], args: &[KernelArg]) -> Result<()>;
    /// Records the launches `launches` makes into a graph instead of running them. Arguments are captured by
    /// value, so whatever changes between replays must live in device memory.
    fn capture(&self, launches: &mut dyn FnMut() -> Result<()>) -> Result<Self::Graph>;
    /// Runs a captured graph, in order after everything launched before.
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
}
