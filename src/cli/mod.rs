//! The `rmt-fast` commands, one module each; shared helpers here.

pub mod babilong;
pub mod convert;
pub mod demo;
pub mod infer;
pub mod info;
pub mod init;
pub mod kernels;
pub mod tokenize;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rmt_fast::Model;

/// The model `demo`, `infer`, `ask` and `babilong eval` use when `--model` is not given (relative to the crate root).
/// It holds the small ARMT trained here on qa1 (see models/README.md).
pub const DEFAULT_MODEL: &str = "models/default.safetensors";

/// Loads `--model`, or the bundled default.
pub fn load_model(model: Option<&Path>) -> anyhow::Result<Model> {
    let path = match model {
        Some(p) => p.to_path_buf(),
        None => {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL);
            if !p.exists() {
                bail!("no --model given and this build has no bundled default model ({} is missing)", p.display());
            }
            p
        }
    };
    Model::load(&path).with_context(|| format!("loading model {}", path.display()))
}

/// Says on stderr when a stream of `segments` segments is longer than `model` was trained on; returns the warning
/// for JSON output.
pub fn warn_past_training(model: &Model, segments: u64) -> Option<String> {
    let warning = model.config.length_warning(segments);
    if let Some(w) = &warning {
        eprintln!("warning: {w}");
    }
    warning
}

/// Where to run segment steps.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DeviceArg {
    /// CUDA (bf16) when a GPU, its driver and NVRTC are present, else the CPU.
    Auto,
    /// The CPU backend (fast kernels).
    Cpu,
    /// The exact f32 CPU reference (the oracle; slower).
    CpuReference,
    /// The CUDA backend, bf16 storage (tensor cores).
    Cuda,
    /// The CUDA backend in its f32 checking mode.
    CudaF32,
}

/// An engine for `model` on `--device`; `auto` says on stderr (unless `quiet`) when it falls back to the CPU.
pub fn engine(arg: DeviceArg, model: rmt_fast::Model, quiet: bool) -> anyhow::Result<rmt_fast::Engine> {
    use rmt_fast::backend::cuda::{supports, unavailable, Precision};
    use rmt_fast::{Device, Engine};
    let cuda = |model, precision| Engine::cuda(model, precision).context("--device cuda");
    match arg {
        DeviceArg::Cpu => Ok(Engine::new(model, Device::Cpu)),
        DeviceArg::CpuReference => Ok(Engine::new(model, Device::CpuReference)),
        DeviceArg::Cuda => cuda(model, Precision::Bf16),
        DeviceArg::CudaF32 => cuda(model, Precision::F32),
        DeviceArg::Auto => match unavailable().or_else(|| supports(&model.config).err().map(|e| e.to_string())) {
            None => cuda(model, Precision::Bf16),
            Some(why) => {
                if !quiet {
                    eprintln!("note: running on the CPU: {why}");
                }
                Ok(Engine::new(model, Device::Cpu))
            }
        },
    }
}

/// RMT-R store options shared by `infer` and `ask`.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// Element type of the RMT-R store of past memory states (bf16 halves its size; values are rounded).
    #[arg(long, default_value = "f32")]
    pub store_dtype: rmt_fast::store::StoreDtype,
    /// RAM for the RMT-R store, in MiB; beyond it the store spills to a memory-mapped file in the temp directory.
    #[arg(long, default_value_t = 2048)]
    pub store_budget_mib: usize,
}

impl StoreArgs {
    pub fn config(&self) -> rmt_fast::store::StoreConfig {
        rmt_fast::store::StoreConfig {
            dtype: self.store_dtype,
            ram_budget: self.store_budget_mib << 20,
            spill_dir: std::env::temp_dir(),
        }
    }
}

/// Sets the worker threads (GEMM and attention) for the whole process.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(t) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("setting --threads")?;
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal (hidden in pipes and with `quiet`).
pub fn progress(total: u64, unit: &str, quiet: bool) -> ProgressBar {
    let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} {{per_sec}} ETA {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Human-readable bytes.
pub fn human_bytes(b: u64) -> String {
    let mib = b as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// Paths given on the command line, for messages.
pub fn show(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
