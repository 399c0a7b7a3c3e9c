//! rmt-fast's CUDA kernels (`cuda/*.cu`), run on the CPU under an emulation of the CUDA execution model
//! (`cuda/emu/emu.h`): blocks one after another, the threads of a block as fibers, barriers and warp-collective
//! operations (shuffles, `mma.sync`) that detect divergence. For tests only: it checks kernel logic, not speed.
//!
//! Pointers are host addresses: a kernel reads and writes the caller's memory directly.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Mutex;

/// Which build of the kernels: `floatX` = bf16 (tensor-core matmul) or f32 (the checking build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Bf16,
    F32,
}

/// One kernel argument, as `cuLaunchKernel` takes it.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A pointer (a host address here).
    Ptr(u64),
    I32(i32),
    F32(f32),
}

/// The two builds' launch entry points (cuda/emu/module.cpp), one signature.
macro_rules! entries {
    ($($name:ident),*) => {
        extern "C" {
            $(fn $name(
                name: *const c_char,
                signature: *const c_char,
                grid: *const u32,
                block: *const u32,
                params: *mut *mut c_void,
                err: *mut c_char,
                err_len: usize,
            ) -> i32;)*
        }
    };
}
entries!(emu_launch_f32, emu_launch_bf16);

/// The emulator is one global machine: launches take turns.
static MACHINE: Mutex<()> = Mutex::new(());

/// Runs kernel `name` of the `precision` build over `grid` × `block` threads.
///
/// Errors: no such kernel, arguments that do not match its parameters, more than 1024 threads per block, and
/// divergence (a barrier or warp operation not reached by every thread it concerns, or a deadlock).
///
/// # Safety
/// Every pointer argument must be valid for everything the kernel reads and writes through it.
pub unsafe fn launch(
    precision: Precision,
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    args: &[Arg],
) -> Result<(), String> {
    let mut values: Vec<u64> = args
        .iter()
        .map(|a| match *a {
            Arg::Ptr(p) => p,
            Arg::I32(i) => i as u32 as u64,
            Arg::F32(f) => f.to_bits() as u64,
        })
        .collect();
    // each parameter points at its value; little-endian, so the low bytes are the i32 / f32
    let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
    let signature: String = args
        .iter()
        .map(|a| match a {
            Arg::Ptr(_) => 'p',
            Arg::I32(_) => 'i',
            Arg::F32(_) => 'f',
        })
        .collect();
    let (name_c, sig_c) = (CString::new(name).unwrap(), CString::new(signature).unwrap());
    let mut err = vec![0 as c_char; 4096];
    let _turn = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let entry = match precision {
        Precision::F32 => emu_launch_f32,
        Precision::Bf16 => emu_launch_bf16,
    };
    let rc = entry(
        name_c.as_ptr(),
        sig_c.as_ptr(),
        grid.as_ptr(),
        block.as_ptr(),
        params.as_mut_ptr(),
        err.as_mut_ptr(),
        err.len(),
    );
    if rc == 0 {
        Ok(())
    } else {
        Err(CStr::from_ptr(err.as_ptr()).to_string_lossy().into_owned())
    }
}
