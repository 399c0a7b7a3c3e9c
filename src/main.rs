//! The `rmt-fast` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::DeviceArg;
use rmt_fast::stream::tokens::TokenDtype;
use rmt_fast::FileDtype;

#[derive(Parser)]
#[command(name = "rmt-fast", version, about = "Recurrent Memory Transformer inference on a GPT-2 backbone")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read token files segment by segment (memory-mapped, constant memory), answer questions, save the state.
    Infer {
        /// Token files, read as one stream in order (llm.c format, or raw .u16/.u32).
        #[arg(required = true)]
        tokens: Vec<PathBuf>,
        /// Model file [default: the bundled model].
        #[arg(long)]
        model: Option<PathBuf>,
        /// A question (plain text) to answer after reading; repeat for several.
        #[arg(long)]
        ask: Vec<String>,
        /// Write the session state here at the end (and at checkpoints, and on Ctrl-C / SIGTERM).
        #[arg(long)]
        state_out: Option<PathBuf>,
        /// Continue from a state file made by the same model from a prefix of the same stream.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Also write the state every N segments (atomically), so a killed run loses at most N segments.
        #[arg(long, value_name = "N")]
        checkpoint_every: Option<u64>,
        /// Most tokens generated per answer.
        #[arg(long, default_value_t = 10)]
        max_new_tokens: usize,
        /// Where segment steps run.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Token width of header-less files that are not named .u16/.u32.
        #[arg(long)]
        dtype: Option<TokenDtype>,
        /// Print one JSON object (answers, counts, timings) instead of text; no progress bar.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: cli::StoreArgs,
    },
    /// Answer questions from a saved state without re-reading the stream.
    Ask {
        /// State file written by `infer --state-out`.
        state: PathBuf,
        /// Questions (plain text).
        #[arg(required = true)]
        questions: Vec<String>,
        /// Model file that made the state [default: the bundled model].
        #[arg(long)]
        model: Option<PathBuf>,
        /// Most tokens generated per answer.
        #[arg(long, default_value_t = 10)]
        max_new_tokens: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: cli::StoreArgs,
    },
    /// Tokenize a UTF-8 text file with GPT-2's BPE into an llm.c token file (streaming, flat memory).
    Tokenize {
        /// Text file.
        input: PathBuf,
        /// Token file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Token width (u16 fits GPT-2's vocabulary).
        #[arg(long, default_value = "u16")]
        dtype: TokenDtype,
    },
    /// Print a token file as text.
    Detokenize {
        /// Token file.
        input: PathBuf,
        /// First token to print.
        #[arg(long, default_value_t = 0)]
        start: usize,
        /// Tokens to print [default: to the end].
        #[arg(long)]
        count: Option<usize>,
        /// Token width of header-less files that are not named .u16/.u32.
        #[arg(long)]
        dtype: Option<TokenDtype>,
    },
    /// What a model, state or token file holds.
    Info {
        /// The file.
        file: PathBuf,
        /// Token width of header-less token files that are not named .u16/.u32.
        #[arg(long)]
        dtype: Option<TokenDtype>,
    },
    /// Convert an RMT / RMT-R PyTorch checkpoint (the authors' pytorch_model.bin) to an rmt-fast model file.
    Convert {
        /// `torch.save` checkpoint (zip archive with a pickled state dict).
        input: PathBuf,
        /// Model file to write (tensors keep their dtype).
        #[arg(short, long)]
        output: PathBuf,
        /// Full model config JSON, for checkpoints that are not GPT-2's vocabulary; otherwise the shape is read
        /// from the tensors.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Tokens per segment (not recorded in checkpoints).
        #[arg(long, default_value_t = 512)]
        segment_size: usize,
        /// Attention heads [default: width / 64, as in every GPT-2 size].
        #[arg(long)]
        n_head: Option<usize>,
    },
    /// BABILong: generate the benchmark at any length.
    Babilong {
        #[command(subcommand)]
        command: BabilongCommand,
    },
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

#[derive(Subcommand)]
enum BabilongCommand {
    /// Generate samples: JSONL (HF `RMT-team/babilong` fields + task, length, seed, fact positions) and a
    /// pre-tokenized twin per task and length, streaming (a 10M-token sample at flat memory).
    Gen {
        /// Tasks, comma-separated (qa1–qa5 built in; qa1–qa20 with --babi).
        #[arg(long, default_value = "qa1")]
        tasks: String,
        /// Context lengths in GPT-2 tokens: 0k,1k,2k,4k,…,512k,1M,10M (decimal thousands) or counts.
        #[arg(long, default_value = "0k,4k")]
        lengths: String,
        /// Samples per task and length.
        #[arg(long, default_value_t = 100)]
        samples: usize,
        /// Seed: the same seed and inputs give the same files, byte for byte.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Background books: text files or directories of .txt [default: built-in synthetic prose].
        #[arg(long)]
        haystack: Vec<PathBuf>,
        /// bAbI task directory (e.g. tasks_1-20_v1-2/en-10k) [default: the built-in generators].
        #[arg(long)]
        babi: Option<PathBuf>,
        /// Which bAbI file to draw from with --babi.
        #[arg(long, default_value = "test", value_parser = cli::babilong::parse_split)]
        split: rmt_fast::babilong::babi::Split,
        /// Reserve 300 tokens for an LLM prompt template (the HF test sets' lengths).
        #[arg(long)]
        llm_prompt: bool,
        /// Output directory (one folder per task).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Run a model over generated data; exact-match accuracy per task × length (Markdown, CSV, JSON).
    Eval {
        /// Model file [default: the bundled model].
        #[arg(long)]
        model: Option<PathBuf>,
        /// Directory written by `babilong gen`.
        #[arg(long)]
        data: PathBuf,
        /// Evaluate only samples whose index is K modulo N (`K/N`), to split work across machines.
        #[arg(long, default_value = "0/1", value_parser = cli::babilong::parse_shard)]
        shard: (usize, usize),
        /// Most tokens generated per answer.
        #[arg(long, default_value_t = 10)]
        max_new_tokens: usize,
        /// Samples evaluated concurrently (independent sessions on the worker threads).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Write PREFIX.md, PREFIX.csv and PREFIX.json [default: DATA/results].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Also print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join shard results (JSON files from `eval`) into one.
    Merge {
        /// Results JSON files.
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Write PREFIX.md, PREFIX.csv and PREFIX.json.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Score an external predictions file (JSON Lines with task, target, output[, question, length]) with the
    /// LLM label-set metric of the BABILong benchmark.
    Score {
        /// Predictions file.
        #[arg(long)]
        predictions: PathBuf,
        /// Write PREFIX.md, PREFIX.csv and PREFIX.json [default: beside the predictions].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Plot results as SVG: the task × length heatmap for one file, accuracy vs length for several.
    Plot {
        /// Results JSON files (label = file stem).
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// SVG file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Figure title.
        #[arg(long, default_value = "BABILong")]
        title: String,
    },
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Infer {
            tokens,
            model,
            ask,
            state_out,
            resume,
            checkpoint_every,
            max_new_tokens,
            device,
            threads,
            dtype,
            json,
            store,
        } => cli::infer::infer(cli::infer::InferArgs {
            tokens,
            dtype,
            model,
            ask,
            state_out,
            resume,
            checkpoint_every,
            max_new_tokens,
            device,
            threads,
            json,
            store: store.config(),
        }),
        Command::Ask { state, questions, model, max_new_tokens, json, store } => {
            cli::infer::ask(&state, model.as_deref(), &questions, max_new_tokens, json, &store.config()).map(|()| 0)
        }
        Command::Tokenize { input, output, dtype } => {
            let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
            cli::tokenize::tokenize(&input, &output, dtype, quiet).map(|()| 0)
        }
        Command::Detokenize { input, start, count, dtype } => {
            cli::tokenize::detokenize(&input, dtype, start, count).map(|()| 0)
        }
        Command::Convert { input, output, config, segment_size, n_head } => {
            cli::convert::run(&input, &output, config.as_deref(), segment_size, n_head).map(|()| 0)
        }
        Command::Babilong {
            command: BabilongCommand::Gen { tasks, lengths, samples, seed, haystack, babi, split, llm_prompt, output },
        } => {
            let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
            cli::babilong::gen(cli::babilong::GenArgs {
                tasks,
                lengths,
                samples,
                seed,
                haystack,
                babi,
                split,
                llm_prompt,
                out: output,
                quiet,
            })
            .map(|()| 0)
        }
        Command::Babilong {
            command: BabilongCommand::Eval { model, data, shard, max_new_tokens, batch, threads, output, json },
        } => cli::babilong::eval(cli::babilong::EvalArgs {
            model,
            data,
            shard,
            max_new_tokens,
            batch,
            threads,
            output,
            json,
        })
        .map(|()| 0),
        Command::Babilong { command: BabilongCommand::Merge { results, output } } => {
            cli::babilong::merge(&results, &output).map(|()| 0)
        }
        Command::Babilong { command: BabilongCommand::Score { predictions, output } } => {
            cli::babilong::score(&predictions, output).map(|()| 0)
        }
        Command::Babilong { command: BabilongCommand::Plot { results, output, title } } => {
            cli::babilong::plot(&results, &output, &title).map(|()| 0)
        }
        Command::Info { file, dtype } => cli::info::run(&file, dtype).map(|()| 0),
        Command::Init { config, seed, output, dtype } => cli::init::run(&config, seed, &output, dtype).map(|()| 0),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
