//! The `rmt-fast` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rmt_fast::{Config, FileDtype, Model};

#[derive(Parser)]
#[command(
    name = "rmt-fast",
    version,
    about = "Recurrent Memory Transformer inference on a GPT-2 backbone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a randomly initialised model of any shape (GPT-2 init), for tests and benchmarks.
    Init {
        /// Model config JSON: n_layer, n_head, n_embd, vocab_size, n_positions, memory {kind, num_mem_tokens,
        /// segment_size, retrieval}, eos_token_id, gen_token_id.
        #[arg(long)]
        config: PathBuf,
        /// Seed: the same seed and config give the same file, byte for byte.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where to write the safetensors model.
        #[arg(short, long)]
        output: PathBuf,
        /// Stored element type: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: FileDtype,
    },
}

fn init(config: PathBuf, seed: u64, output: PathBuf, dtype: FileDtype) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let cfg = Config::from_json(&text).with_context(|| format!("in {}", config.display()))?;
    let model = Model::random(cfg, seed)?;
    model.save(&output, dtype)?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            config,
            seed,
            output,
            dtype,
        } => init(config, seed, output, dtype),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
