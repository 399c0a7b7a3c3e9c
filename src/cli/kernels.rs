//! `rmt-fast kernels`: the CUDA kernels compiled ahead of time, with ptxas's report.

use std::path::PathBuf;

use anyhow::{ensure, Context};
use rmt_fast::backend::cuda::{nvrtc, Precision};

/// Compiles every kernel for each of `archs` in both precisions into `output` (default: the kernel cache).
pub fn run(archs: &[String], output: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = output.or_else(nvrtc::cache_dir).context("no kernel cache folder: give -o")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("| arch | precision | kernel | registers | spill stores (B) | spill loads (B) | stack (B) |");
    println!("|---|---|---|---|---|---|---|");
    let mut spills = 0;
    for arch in archs {
        for precision in [Precision::Bf16, Precision::F32] {
            let compiled = nvrtc::compile(arch, precision)?;
            let file = nvrtc::cubin_file(&dir, arch, precision);
            rmt_fast::model::weights::write_atomically(&file, &compiled.cubin)?;
            for k in compiled.usage() {
                println!(
                    "| {arch} | {precision:?} | {} | {} | {} | {} | {} |",
                    k.name, k.registers, k.spill_store_bytes, k.spill_load_bytes, k.stack_bytes
                );
                spills += k.spill_store_bytes + k.spill_load_bytes;
            }
            eprintln!("wrote {}", file.display());
        }
    }
    ensure!(spills == 0, "some kernels spill registers (see the table)");
    Ok(())
}
