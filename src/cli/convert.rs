//! `rmt-fast convert`: the authors' PyTorch checkpoints to rmt-fast model files, and model files to another dtype.

use std::path::Path;

use anyhow::Context;
use rmt_fast::convert::{import_pytorch, ConvertOptions};
use rmt_fast::model::weights::write_atomically;
use rmt_fast::{Config, FileDtype};

pub fn run(
    input: &Path,
    output: &Path,
    config: Option<&Path>,
    segment_size: usize,
    n_head: Option<usize>,
    dtype: Option<FileDtype>,
) -> anyhow::Result<()> {
    if input.extension().is_some_and(|e| e == "safetensors") {
        // an rmt-fast model file: re-store it in another dtype (bf16 halves it; values are rounded)
        let dtype = dtype.context("a .safetensors model converts to another dtype: give --dtype")?;
        let model = rmt_fast::Model::load(input).with_context(|| format!("loading {}", input.display()))?;
        model.save(output, dtype)?;
        println!("wrote {} ({dtype:?}, {} parameters)", output.display(), model.parameter_count());
        return Ok(());
    }
    let config = match config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(Config::from_json(&text).with_context(|| format!("in {}", p.display()))?)
        }
        None => None,
    };
    let c = import_pytorch(input, &ConvertOptions { config, segment_size, n_head })?;
    match dtype {
        Some(d) => c.model.save(output, d)?,
        None => write_atomically(output, &c.bytes)?,
    }
    let m = &c.model.config;
    println!(
        "wrote {}: {:?}, {} layers × {} wide, {} heads, {} memory tokens, segments of {}, {} parameters ({}{})",
        output.display(),
        m.memory.kind,
        m.n_layer,
        m.n_embd,
        m.n_head,
        m.memory.num_mem_tokens,
        m.memory.segment_size,
        c.model.parameter_count(),
        c.dtypes.join("+"),
        if c.tied_duplicate_head { "; stored lm_head equals wte: tied" } else { "" }
    );
    Ok(())
}
