//! The real device: [`Device`] over cudarc (driver API, one stream), with the kernels compiled by NVRTC for the
//! GPU's architecture. Every driver call is guarded so that a machine without a driver gets an error, not the
//! panic `CudaContext::new` raises when libcuda is missing (ENGINEERING §2).

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::device::{Device, KernelArg, Precision};
use super::nvrtc;
use crate::error::{Error, Result};

fn driver_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("{what}: {e:?}"))
}

/// Why no CUDA device can be used here, or `None` when one can. (NVRTC is needed later, and only when the
/// kernels for the GPU's architecture are not in the cache.)
pub fn unavailable() -> Option<String> {
    // SAFETY: only probes for the shared library
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("no CUDA driver (libcuda.so) on this machine".into());
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => None,
        Ok(_) => Some("the CUDA driver reports no GPU".into()),
        Err(e) => Some(format!("the CUDA driver failed to initialise: {e:?}")),
    }
}

/// GPU `ordinal` with the kernels loaded.
pub struct Gpu {
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    precision: Precision,
    name: String,
    arch: String,
}

impl Gpu {
    /// Opens GPU `ordinal` and compiles (or loads from the cache) the kernels for its architecture.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self> {
        if let Some(why) = unavailable() {
            return Err(Error::Device(why));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| driver_error("opening the GPU", e))?;
        // one stream, ordered launches: per-buffer event tracking would only add work to every launch
        // SAFETY: called before any allocation or second stream
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(|e| driver_error("compute capability", e))?;
        if major < 8 {
            return Err(Error::Device(format!(
                "compute capability {major}.{minor}: the kernels need 8.0 (Ampere) or newer"
            )));
        }
        let arch = if (major, minor) == (9, 0) { "sm_90a".to_string() } else { format!("sm_{major}{minor}") };
        let cubin = nvrtc::cubin(&arch, precision)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| driver_error("loading the kernels", e))?;
        let functions = nvrtc::kernel_names()
            .into_iter()
            .map(|n| Ok((n, module.load_function(n).map_err(|e| driver_error(n, e))?)))
            .collect::<Result<_>>()?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        // a stream of its own: the legacy default stream cannot be captured into a graph
        let stream = ctx.new_stream().map_err(|e| driver_error("creating a stream", e))?;
        Ok(Gpu { stream, functions, precision, name, arch })
    }

    /// The GPU's name and the architecture the kernels were built for.
    pub fn describe(&self) -> String {
        format!("{} ({}, {:?})", self.name, self.arch, self.precision)
    }
}

/// A captured segment step.
pub struct GpuGraph(CudaGraph);

// SAFETY: a graph is launched only by the step that owns it (`&mut self`), never from two threads at once; CUDA
// allows an executable graph to be launched from any thread.
unsafe impl Send for GpuGraph {}

impl Device for Gpu {
    type Buffer = CudaSlice<u8>;
    type Graph = GpuGraph;

    fn precision(&self) -> Precision {
        self.precision
    }

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        self.stream.alloc_zeros(bytes.max(1)).map_err(|e| driver_error("allocating device memory", e))
    }

    fn address(&self, buf: &CudaSlice<u8>) -> u64 {
        buf.device_ptr(&self.stream).0
    }

    fn upload(&self, buf: &mut CudaSlice<u8>, offset: usize, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut dst = buf.slice_mut(offset..offset + bytes.len());
        self.stream.memcpy_htod(bytes, &mut dst).map_err(|e| driver_error("upload", e))
    }

    fn download(&self, buf: &CudaSlice<u8>, offset: usize, out: &mut [u8]) -> Result<()> {
        let src = buf.slice(offset..offset + out.len());
        self.stream.memcpy_dtoh(&src, out).map_err(|e| driver_error("download", e))?;
        self.stream.synchronize().map_err(|e| driver_error("a kernel", e))
    }

    fn copy(
        &self,
        (src, at): (&CudaSlice<u8>, usize),
        (dst, to): (&mut CudaSlice<u8>, usize),
        bytes: usize,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let from = src.slice(at..at + bytes);
        let mut to = dst.slice_mut(to..to + bytes);
        self.stream.memcpy_dtod(&from, &mut to).map_err(|e| driver_error("device copy", e))
    }

    fn launch(&self, name: &str, grid: [u32; 3], block: [u32; 3], args: &[KernelArg]) -> Result<()> {
        let f = self.functions.get(name).ok_or_else(|| Error::Device(format!("no kernel named {name}")))?;
        let mut launch = self.stream.launch_builder(f);
        for a in args {
            match a {
                KernelArg::Ptr(p) => launch.arg(p),
                KernelArg::I32(i) => launch.arg(i),
                KernelArg::F32(x) => launch.arg(x),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (block[0], block[1], block[2]),
            shared_mem_bytes: 0,
        };
        // SAFETY: the step passes each kernel the arguments of its signature, checked under emulation
        unsafe { launch.launch(cfg) }.map(drop).map_err(|e| driver_error(name, e))
    }

    fn capture(&self, launches: &mut dyn FnMut() -> Result<()>) -> Result<GpuGraph> {
        let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        self.stream.begin_capture(mode).map_err(|e| driver_error("starting a graph capture", e))?;
        let recorded = launches();
        // the capture is ended whether or not recording failed, so the stream is usable again
        let graph = self.stream.end_capture(CUgraphInstantiate_flags(0));
        recorded?;
        match graph.map_err(|e| driver_error("instantiating the graph", e))? {
            Some(g) => Ok(GpuGraph(g)),
            None => Err(Error::Device("the graph capture recorded nothing".into())),
        }
    }

    fn replay(&self, graph: &GpuGraph) -> Result<()> {
        graph.0.launch().map_err(|e| driver_error("graph launch", e))
    }
}
