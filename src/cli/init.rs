//! `rmt-fast init`: a randomly initialised model of any shape.

use std::path::Path;

use anyhow::Context;
use rmt_fast::{Config, FileDtype, Model};

pub fn run(config: &Path, seed: u64, output: &Path, dtype: FileDtype) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg = Config::from_json(&text).with_context(|| format!("in {}", config.display()))?;
    let model = Model::random(cfg, seed)?;
    model.save(output, dtype)?;
    let c = &model.config;
    println!(
        "wrote {}: {:?} {} layers × {} wide, {} heads, vocab {}, {} parameters ({dtype:?})",
        output.display(),
        c.memory.kind,
        c.n_layer,
        c.n_embd,
        c.n_head,
        c.vocab_size,
        model.parameter_count()
    );
    Ok(())
}
