//! Run-time compilation of `cuda/*.cu` with NVRTC, to a CUBIN for one architecture, with ptxas's per-kernel
//! register and spill report; compiled CUBINs are cached on disk by a hash of everything that shapes them
//! (`rmt-fast kernels` fills the cache ahead of time, e.g. for a GPU machine without NVRTC).
//! NVRTC is the system's (a CUDA toolkit) or the pinned wheel `scripts/install-nvrtc.sh` installs.

use std::ffi::CString;
use std::path::PathBuf;

use cudarc::nvrtc::{result, sys};

use super::device::Precision;
use crate::backend::CUDA_SOURCES;
use crate::error::{Error, Result};

/// The one program NVRTC compiles: `common.cuh`, then every kernel file with its include of it dropped (NVRTC
/// is given no include path, so no header can be missed on the GPU machine).
fn program_source() -> String {
    let common = CUDA_SOURCES.iter().find(|(name, _)| *name == "common.cuh").map(|(_, src)| *src).unwrap_or("");
    let mut src = String::from(common);
    for (name, text) in CUDA_SOURCES.iter().filter(|(name, _)| name.ends_with(".cu")) {
        src.push_str(&format!("\n// ---- {name}\n"));
        for line in text.lines().filter(|l| l.trim() != "#include \"common.cuh\"") {
            src.push_str(line);
            src.push('\n');
        }
    }
    src
}

/// The names of every kernel (`KERNEL void name(`, or `KERNEL_BOUNDED(threads, blocks) void name(`) in the sources.
pub fn kernel_names() -> Vec<&'static str> {
    CUDA_SOURCES
        .iter()
        .flat_map(|(_, text)| text.lines())
        .filter_map(|l| l.trim_start().strip_prefix("KERNEL")?.split_once("void ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}

/// Where `scripts/install-nvrtc.sh` puts NVRTC's libraries (`RMT_NVRTC_DIR` overrides).
fn wheel_lib_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("RMT_NVRTC_DIR") {
        Some(d) => PathBuf::from(d),
        None => cache_base()?.join("rmt-fast").join("nvrtc-13.0.88"),
    };
    Some(dir.join("nvidia").join("cu13").join("lib"))
}

/// Loads the wheel's NVRTC by absolute path, its builtins first, so that cudarc's later lookup by name finds
/// them already loaded (the dynamic loader matches loaded libraries by soname): no LD_LIBRARY_PATH needed.
#[cfg(unix)]
fn preload_wheel() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(lib) = wheel_lib_dir() else { return };
        for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
            let Ok(path) = CString::new(lib.join(name).into_os_string().into_encoded_bytes()) else { return };
            // SAFETY: a plain dlopen of a file path; a missing file returns null
            if unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null() {
                return;
            }
        }
    });
}

#[cfg(not(unix))]
fn preload_wheel() {}

/// Whether NVRTC (libnvrtc) can be loaded: the system's, or the one `scripts/install-nvrtc.sh` installed.
pub fn available() -> bool {
    preload_wheel();
    // SAFETY: only probes for the shared library
    unsafe { sys::is_culib_present() }
}

/// ptxas's report for one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelUsage {
    /// The kernel.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes spilled to local memory (stores); CI requires 0.
    pub spill_store_bytes: u32,
    /// Bytes read back from spills; CI requires 0.
    pub spill_load_bytes: u32,
    /// Stack frame bytes.
    pub stack_bytes: u32,
}

/// A compiled program.
pub struct Compiled {
    /// The device code, loadable with `cuModuleLoadData`.
    pub cubin: Vec<u8>,
    /// NVRTC's log, with ptxas's `-v` report.
    pub log: String,
}

impl Compiled {
    /// Registers, spills and stack of every kernel, from the ptxas report.
    pub fn usage(&self) -> Vec<KernelUsage> {
        let mut out: Vec<KernelUsage> = Vec::new();
        let number_before = |line: &str, unit: &str| -> u32 {
            let at = line.find(unit).unwrap_or(0);
            line[..at].split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        for line in self.log.lines() {
            if let Some(rest) = line.split("Function properties for ").nth(1) {
                let name = rest.trim().to_string();
                out.push(KernelUsage { name, registers: 0, spill_store_bytes: 0, spill_load_bytes: 0, stack_bytes: 0 });
            } else if let Some(k) = out.last_mut() {
                if line.contains("spill stores") {
                    k.stack_bytes = number_before(line, "bytes stack frame");
                    k.spill_store_bytes = number_before(line, "bytes spill stores");
                    k.spill_load_bytes = number_before(line, "bytes spill loads");
                } else if line.contains("Used") && line.contains("registers") {
                    k.registers = number_before(line, "registers");
                }
            }
        }
        out
    }
}

fn options(arch: &str, precision: Precision) -> Vec<String> {
    let mut opts = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into(), "--ptxas-options=-v".into()];
    if precision == Precision::F32 {
        opts.push("-DRMT_F32".into());
    }
    opts
}

/// Compiles the kernels for `arch` (e.g. `sm_90a`) in `precision` to a CUBIN.
pub fn compile(arch: &str, precision: Precision) -> Result<Compiled> {
    if !available() {
        return Err(Error::Device("NVRTC (libnvrtc.so) was not found: see scripts/install-nvrtc.sh".into()));
    }
    let src = CString::new(program_source()).expect("sources have no NUL");
    let failed = |what: &str, e: result::NvrtcError| Error::Device(format!("NVRTC {what}: {e:?}"));
    let prog = result::create_program(&src, Some(c"rmt_fast.cu")).map_err(|e| failed("create", e))?;
    // SAFETY: prog is live until destroy_program below
    unsafe {
        let compiled = result::compile_program(prog, &options(arch, precision));
        let log = result::get_program_log(prog).map(|l| cstr_to_string(&l)).unwrap_or_default();
        let cubin = compiled.map_err(|e| Error::Device(format!("NVRTC compile for {arch} failed ({e:?}):\n{log}")));
        let cubin = cubin.and_then(|()| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| failed("CUBIN size", e))?;
            let mut bytes = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr().cast()).result().map_err(|e| failed("CUBIN", e))?;
            Ok(bytes)
        });
        let _ = result::destroy_program(prog);
        Ok(Compiled { cubin: cubin?, log })
    }
}

fn cstr_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// FNV-1a: a hash that stays the same across builds, for cache file names.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// `$XDG_CACHE_HOME`, or `~/.cache`.
fn cache_base() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
}

/// Where compiled CUBINs live: `$RMT_KERNEL_CACHE`, else `rmt-fast/kernels` in the user cache.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("RMT_KERNEL_CACHE") {
        Some(d) => Some(PathBuf::from(d)),
        None => Some(cache_base()?.join("rmt-fast").join("kernels")),
    }
}

/// The cache file of the CUBIN for `arch` and `precision`: named by a hash of the program and its options, so a
/// changed kernel is never served stale. (Which NVRTC compiled it does not matter: a CUBIN is machine code for
/// its architecture.)
pub fn cubin_file(dir: &std::path::Path, arch: &str, precision: Precision) -> PathBuf {
    let key = fnv1a(&[program_source().as_bytes(), options(arch, precision).join(" ").as_bytes()]);
    dir.join(format!("{key:016x}-{arch}-{precision:?}.cubin").to_lowercase())
}

/// The CUBIN for `arch` and `precision`, from the cache or compiled (and then cached; a cache that cannot be
/// written only costs a compile next time). With a cached CUBIN, NVRTC is not needed at all.
pub fn cubin(arch: &str, precision: Precision) -> Result<Vec<u8>> {
    let path = cache_dir().map(|d| cubin_file(&d, arch, precision));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(bytes);
    }
    let compiled = compile(arch, precision)?;
    if let Some(p) = &path {
        let _ = p.parent().map(std::fs::create_dir_all);
        let _ = crate::model::weights::write_atomically(p, &compiled.cubin);
    }
    Ok(compiled.cubin)
}
