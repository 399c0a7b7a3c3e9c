//! The `rmt-fast` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// Make one BABILong sample (1M tokens by default, built-in generators), read it, ask its question, and print
    /// the answer, the truth and tokens/s.
    Demo(cli::demo::DemoArgs),
    /// Read token files segment by segment (memory-mapped, constant memory), answer questions, save the state.
    Infer(cli::infer::InferArgs),
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
    /// Convert an RMT / RMT-R PyTorch checkpoint (the authors' pytorch_model.bin) to an rmt-fast model file, or an
    /// rmt-fast model file (.safetensors) to another dtype.
    Convert {
        /// `torch.save` checkpoint (zip archive with a pickled state dict), or an rmt-fast `.safetensors` model.
        input: PathBuf,
        /// Model file to write (tensors keep their dtype unless --dtype).
        #[arg(short, long)]
        output: PathBuf,
        /// Store the tensors as f32, bf16 or f16 (required for a .safetensors input).
        #[arg(long)]
        dtype: Option<FileDtype>,
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
    /// BABILong: generate the benchmark at any length, evaluate models, score predictions, plot results.
    Babilong {
        #[command(subcommand)]
        command: BabilongCommand,
    },
    /// Train an RMT or ARMT model with curriculum BPTT on BABILong samples made on the fly (config: JSON).
    Train {
        /// Training config (model, tasks, bAbI and haystack paths, stages, optimizer, validation).
        #[arg(long)]
        config: PathBuf,
        /// Output directory: checkpoint.safetensors, model_best.safetensors, log.jsonl.
        #[arg(short, long)]
        output: PathBuf,
        /// Continue from the output directory's checkpoint, exactly as if never stopped.
        #[arg(long)]
        resume: bool,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Plot validation accuracy against training steps from a run's log.jsonl (SVG), with a line per task for mixed
    /// runs; several logs are chained runs, drawn in order on one step axis.
    TrainCurve {
        /// The runs' log.jsonl files, in order.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Each run's config (one per log, in the same order), to label the stages by their segment counts.
        #[arg(long = "config")]
        configs: Vec<PathBuf>,
        /// SVG file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Figure title.
        #[arg(long, default_value = "Training")]
        title: String,
    },
    /// Compile the CUDA kernels with NVRTC (no GPU needed) into the kernel cache or a folder, and print ptxas's
    /// registers and spills per kernel: fills the cache ahead of time for a GPU machine without NVRTC.
    Kernels {
        /// GPU architectures (sm_80 = A100, sm_90a = H100).
        #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90a")]
        arch: Vec<String>,
        /// Folder to write the CUBINs to [default: the kernel cache, $RMT_KERNEL_CACHE or ~/.cache/rmt-fast/kernels].
        #[arg(short, long)]
        output: Option<PathBuf>,
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
    /// Generate samples: JSONL (HF `RMT-team/babilong` fields + task, length, seed, facts, fact positions, supporting
    /// facts) and a pre-tokenized twin per task and length, streaming (a 10M-token sample at flat memory).
    Gen(cli::babilong::GenArgs),
    /// Run a model over generated data; exact-match accuracy per task × length (Markdown, CSV, JSON).
    Eval(cli::babilong::EvalArgs),
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
    /// Split results by the needle's depth (where the answer's last supporting fact lies in the context): a
    /// table per task of depth bands × lengths (Markdown, printed too) and its heatmap (SVG).
    Depth {
        /// A results JSON file (from `eval` or `merge`).
        results: PathBuf,
        /// The `babilong gen` directories it was evaluated on (one or more, one per set).
        #[arg(long, required = true, num_args = 1..)]
        data: Vec<PathBuf>,
        /// How many equal depth bands.
        #[arg(long, default_value_t = 5)]
        bands: usize,
        /// Write PREFIX.md and PREFIX.svg.
        #[arg(short, long)]
        output: PathBuf,
        /// Figure title.
        #[arg(long, default_value = "BABILong by needle depth")]
        title: String,
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
    let done = |r: anyhow::Result<()>| r.map(|()| 0);
    match command {
        Command::Demo(a) => done(cli::demo::run(a)),
        Command::Infer(a) => cli::infer::infer(a),
        Command::Ask { state, questions, model, max_new_tokens, json, store } => {
            done(cli::infer::ask(&state, model.as_deref(), &questions, max_new_tokens, json, &store.config()))
        }
        Command::Tokenize { input, output, dtype } => {
            let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
            done(cli::tokenize::tokenize(&input, &output, dtype, quiet))
        }
        Command::Detokenize { input, start, count, dtype } => {
            done(cli::tokenize::detokenize(&input, dtype, start, count))
        }
        Command::Convert { input, output, config, segment_size, n_head, dtype } => {
            done(cli::convert::run(&input, &output, config.as_deref(), segment_size, n_head, dtype))
        }
        Command::Babilong { command } => done(match command {
            BabilongCommand::Gen(a) => cli::babilong::gen(a),
            BabilongCommand::Eval(a) => cli::babilong::eval(a),
            BabilongCommand::Merge { results, output } => cli::babilong::merge(&results, &output),
            BabilongCommand::Score { predictions, output } => cli::babilong::score(&predictions, output),
            BabilongCommand::Depth { results, data, bands, output, title } => {
                cli::babilong::depth(&results, &data, bands, &output, &title)
            }
            BabilongCommand::Plot { results, output, title } => cli::babilong::plot(&results, &output, &title),
        }),
        Command::Train { config, output, resume, threads } => cli::train::run(&config, &output, resume, threads),
        Command::TrainCurve { logs, configs, output, title } => {
            done(cli::train::curve(&logs, &configs, &output, &title))
        }
        Command::Info { file, dtype } => done(cli::info::run(&file, dtype)),
        Command::Init { config, seed, output, dtype } => done(cli::init::run(&config, seed, &output, dtype)),
        Command::Kernels { arch, output } => done(cli::kernels::run(&arch, output)),
    }
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns a closed pipe (`rmt-fast detokenize f.bin | head`) into a panic in
    // println!; a command-line tool should end quietly as cat does.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse().command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
