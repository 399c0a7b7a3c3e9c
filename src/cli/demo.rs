//! `rmt-fast demo`: the main job in one command. Makes one BABILong sample of any length with the built-in bAbI
//! generators and a background (synthetic prose by default, or books), streams it straight into a session (no file,
//! flat memory), asks its question as plain text, and prints the answer, the truth and the reading speed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rmt_fast::babilong::generate::generate;
use rmt_fast::babilong::haystack::Haystack;
use rmt_fast::babilong::sample::{build, parse_length};
use rmt_fast::rng::Rng;
use rmt_fast::stream::tokenizer::Tokenizer;

use super::DeviceArg;

/// `demo` options.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Model file [default: the bundled model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// bAbI task of the built-in generators: qa1 … qa5.
    #[arg(long, default_value = "qa1")]
    pub task: String,
    /// Context length in GPT-2 tokens (0k = the facts alone, 4k, 128k, 1M, 10M or a count).
    #[arg(long, default_value = "1M")]
    pub length: String,
    /// Seed of the sample (facts, their places, the background).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Background books: text files or directories of .txt [default: built-in synthetic prose].
    #[arg(long)]
    pub haystack: Vec<PathBuf>,
    /// Where segment steps run.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
}

/// Runs the demo; the exit status is 0 whether or not the model answers right (the answer is the output).
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let model = super::load_model(a.model.as_deref())?;
    let engine = super::engine(a.device, model, quiet)?;
    let task = rmt_fast::babilong::babi::task_number(&a.task)?;
    let length = parse_length(&a.length)?;
    let haystack = if a.haystack.is_empty() { Haystack::Synthetic } else { Haystack::books(&a.haystack)? };
    let mut rng = Rng::new(a.seed);
    let sample = generate(task, 1, &mut rng)?.remove(0);
    let mut sampler = haystack.sampler(rng.next_u64());
    let mut session = engine.session();
    let pb = super::progress(length as u64, "tokens", quiet);
    let t0 = Instant::now();
    let layout = build(&sample, length, false, &mut sampler, &mut rng, &mut |tokens| {
        pb.inc(tokens.len() as u64);
        session.read(tokens)
    })
    .context("building and reading the sample")?;
    pb.finish_and_clear();
    let question = Tokenizer::gpt2().decode(&layout.question)?;
    let answer = session.ask(&layout.question, 10)?;
    let seconds = t0.elapsed().as_secs_f64();
    let predicted = Tokenizer::gpt2().decode(&answer.tokens)?.trim().to_string();
    let tokens = layout.context_tokens;
    println!("{} sample of {tokens} tokens; its facts, at these tokens (* the answer rests on it):", a.task);
    let width = tokens.to_string().len();
    for (i, (f, at)) in sample.facts.iter().zip(&layout.fact_positions).enumerate() {
        let mark = if sample.supporting.contains(&i) { '*' } else { ' ' };
        println!("  {mark} {at:>width$}  {f}");
    }
    println!("question: {}", question.trim());
    println!("answer:   {predicted}");
    println!("truth:    {} ({})", sample.answer, if predicted == sample.answer { "right" } else { "wrong" });
    println!(
        "read {tokens} tokens in {seconds:.1} s: {:.0} tokens/s, including making the sample",
        tokens as f64 / seconds
    );
    super::warn_past_training(session.model(), session.state().segments);
    Ok(())
}
