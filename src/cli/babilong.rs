//! `rmt-fast babilong gen`: BABILong samples at any length, as JSONL (the HF `RMT-team/babilong` fields plus
//! ours) and a pre-tokenized twin (an llm.c token file of context + question + GEN per sample).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use rmt_fast::babilong::babi::{self, task_number, Split};
use rmt_fast::babilong::eval::{length_name, Results, Selection};
use rmt_fast::babilong::generate::generate;
use rmt_fast::babilong::haystack::Haystack;
use rmt_fast::babilong::sample::{build, parse_length};
use rmt_fast::rng::Rng;
use rmt_fast::stream::tokenizer::Tokenizer;
use rmt_fast::stream::tokens::{TokenDtype, TokenWriter};
use serde_json::json;

/// The GPT-2 `GEN` marker that ends every prompt (RMT-SPEC §1.1).
const GEN: u32 = 35353;

/// `rmt-fast babilong gen` arguments.
#[derive(clap::Args)]
pub struct GenArgs {
    /// Tasks, comma-separated (qa1–qa5 built in; qa1–qa20 with --babi).
    #[arg(long, default_value = "qa1")]
    pub tasks: String,
    /// Context lengths in GPT-2 tokens: 0k,1k,2k,4k,…,512k,1M,10M (decimal thousands) or counts.
    #[arg(long, default_value = "0k,4k")]
    pub lengths: String,
    /// Samples per task and length.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Seed: the same seed and inputs give the same files, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Background books: text files or directories of .txt [default: built-in synthetic prose].
    #[arg(long)]
    pub haystack: Vec<PathBuf>,
    /// bAbI task directory (e.g. tasks_1-20_v1-2/en-10k) [default: the built-in generators].
    #[arg(long)]
    pub babi: Option<PathBuf>,
    /// Which bAbI file to draw from with --babi.
    #[arg(long, default_value = "test", value_parser = parse_split)]
    pub split: Split,
    /// Reserve 300 tokens for an LLM prompt template (the HF test sets' lengths).
    #[arg(long)]
    pub llm_prompt: bool,
    /// Output directory (one folder per task).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// A seed for one (task, length, purpose), so each file is reproducible on its own.
fn derive(seed: u64, parts: &[u64]) -> u64 {
    let mut r = Rng::new(seed);
    parts.iter().fold(r.next_u64(), |h, &p| Rng::new(h ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64())
}

/// Writes JSON string content (without quotes) for UTF-8 text.
fn escape_into(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    let escaped = serde_json::to_string(text).expect("strings serialise");
    out.write_all(&escaped.as_bytes()[1..escaped.len() - 1])
}

pub fn gen(a: GenArgs) -> anyhow::Result<()> {
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let tasks = a
        .tasks
        .split(',')
        .map(|t| task_number(t.trim()).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lengths = a
        .lengths
        .split(',')
        .map(|l| parse_length(l.trim()).map(|n| (l.trim().to_string(), n)).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(a.samples > 0, "--samples must be at least 1");
    let haystack = if a.haystack.is_empty() {
        if !quiet {
            eprintln!("note: no --haystack given: background is the built-in SYNTHETIC prose grammar");
        }
        Haystack::Synthetic
    } else {
        Haystack::books(&a.haystack)?
    };
    let haystack_name = if a.haystack.is_empty() { "synthetic".to_string() } else { super::show(&a.haystack) };
    // the bAbI samples of each task: real files when given, else the built-in generators
    let sources = tasks
        .iter()
        .map(|&t| {
            let mut rng = Rng::new(derive(a.seed, &[t as u64, 0]));
            let samples = match &a.babi {
                Some(dir) => {
                    let mut all = babi::load(dir, t, a.split)?;
                    ensure!(
                        all.len() >= a.samples,
                        "qa{t} has {} samples, fewer than --samples {}",
                        all.len(),
                        a.samples
                    );
                    (0..a.samples).map(|_| all.swap_remove(rng.below(all.len() as u64) as usize)).collect()
                }
                None => generate(t, a.samples, &mut rng)?,
            };
            Ok((t, samples))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let total: u64 = lengths.iter().map(|(_, n)| *n as u64).sum::<u64>() * (a.samples * tasks.len()) as u64;
    let pb = super::progress(total, "tokens", quiet);
    let tok = Tokenizer::gpt2();
    for (task, samples) in &sources {
        let dir = a.output.join(format!("qa{task}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, length) in &lengths {
            let mut sampler = haystack.sampler(derive(a.seed, &[*task as u64, *length as u64, 1]));
            let mut rng = Rng::new(derive(a.seed, &[*task as u64, *length as u64, 2]));
            let jsonl_path = dir.join(format!("{name}.jsonl"));
            let mut jsonl = BufWriter::new(
                File::create(&jsonl_path).with_context(|| format!("creating {}", jsonl_path.display()))?,
            );
            let mut twin = TokenWriter::create(dir.join(format!("{name}.bin")), TokenDtype::U16)?;
            for (i, s) in samples.iter().enumerate() {
                let offset = twin.count();
                jsonl.write_all(br#"{"input":""#)?;
                let (mut pending, mut started) = (Vec::<u8>::new(), false);
                let layout = build(s, *length, a.llm_prompt, &mut sampler, &mut rng, &mut |tokens| {
                    twin.write(tokens)?;
                    pb.inc(tokens.len() as u64);
                    pending.extend(tok.decode_bytes(tokens)?);
                    let valid = match std::str::from_utf8(&pending) {
                        Ok(t) => t.len(),
                        Err(e) => e.valid_up_to(),
                    };
                    let text = std::str::from_utf8(&pending[..valid]).expect("valid prefix");
                    // the HF records are `decode(tokens).strip()`: no leading space
                    let text = if started { text } else { text.trim_start() };
                    started |= !text.is_empty();
                    escape_into(&mut jsonl, text)
                        .map_err(|e| rmt_fast::Error::Io { path: jsonl_path.clone(), source: e })?;
                    pending.drain(..valid);
                    Ok(())
                })
                .with_context(|| format!("qa{task} {name} sample {i}"))?;
                escape_into(&mut jsonl, &String::from_utf8_lossy(&pending))?;
                twin.write(&layout.question)?;
                twin.write(&[GEN])?;
                let rest = json!({
                    "question": s.question, "target": s.answer, "task": format!("qa{task}"), "length": length,
                    "seed": a.seed, "index": i, "haystack": haystack_name, "llm_prompt": a.llm_prompt,
                    "facts": s.facts, "fact_positions": layout.fact_positions, "supporting": s.supporting,
                    "tokens": {"file": format!("{name}.bin"), "offset": offset, "context": layout.context_tokens,
                               "question": layout.question.len(), "target": layout.target},
                });
                let rest = rest.to_string();
                jsonl.write_all(b"\",")?;
                jsonl.write_all(&rest.as_bytes()[1..])?;
                jsonl.write_all(b"\n")?;
            }
            jsonl.flush()?;
            twin.finish()?;
        }
    }
    pb.finish_and_clear();
    if !quiet {
        eprintln!(
            "wrote {} tasks × {} lengths × {} samples to {}",
            tasks.len(),
            lengths.len(),
            a.samples,
            a.output.display()
        );
    }
    Ok(())
}

/// `--split` values.
pub fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        _ => Err(format!("unknown split `{s}` (train or test)")),
    }
}

/// `--shard K/N`.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("bad shard `{s}`: K/N with 0 ≤ K < N");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

fn report(results: &Results, prefix: &Path, json: bool) -> anyhow::Result<()> {
    results.write(prefix)?;
    println!("{}", results.markdown());
    if json {
        println!("{}", serde_json::to_string(&results.cells)?);
    }
    eprintln!("wrote {}.{{md,csv,json}}", prefix.display());
    Ok(())
}

/// `rmt-fast babilong eval` arguments.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model file [default: the bundled model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Directory written by `babilong gen`.
    #[arg(long)]
    pub data: PathBuf,
    /// Evaluate only samples whose index is K modulo N (`K/N`), to split work across machines.
    #[arg(long, default_value = "0/1", value_parser = parse_shard)]
    pub shard: (usize, usize),
    /// Evaluate only samples whose index is at least this: after `gen` grew a set (same seed, more `--samples`:
    /// the first samples are the same), evaluate the new ones and `merge` them with the old results.
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 10)]
    pub max_new_tokens: usize,
    /// Samples evaluated concurrently (independent sessions on the worker threads).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write PREFIX.md, PREFIX.csv and PREFIX.json [default: DATA/results].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let EvalArgs { model, data, shard, first, max_new_tokens: max_new, batch, threads, output, json } = a;
    let (model, data) = (model.as_deref(), data.as_path());
    super::set_threads(threads)?;
    let model_name = model.map_or("the bundled model".to_string(), |p| p.display().to_string());
    let engine = rmt_fast::Engine::cpu(super::load_model(model)?);
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let pb = super::progress(0, "context tokens", quiet);
    let selection = Selection { shard, first };
    let predictions = rmt_fast::babilong::eval::evaluate(&engine, data, selection, max_new, batch, |n| {
        pb.inc_length(n as u64);
        pb.inc(n as u64)
    })?;
    pb.finish_and_clear();
    let from = if first > 0 { format!(", from sample {first}") } else { String::new() };
    let source = format!("{model_name} on {} (shard {}/{}{from})", data.display(), shard.0, shard.1);
    let results = Results::from_predictions(source, predictions);
    report(&results, &output.unwrap_or_else(|| data.join("results")), json)
}

pub fn merge(files: &[PathBuf], output: &Path) -> anyhow::Result<()> {
    let parts = files.iter().map(|f| Results::read(f)).collect::<Result<Vec<_>, _>>()?;
    // shards of one data set (and one model) overlap only in identical predictions; anything else under the same
    // index is another sample set or another model, which would be dropped silently as a duplicate
    let mut seen = std::collections::HashMap::new();
    for (file, p) in files.iter().zip(&parts).flat_map(|(f, r)| r.predictions.iter().map(move |p| (f, p))) {
        if let Some((first, q)) = seen.insert((p.task.clone(), p.length, p.index), (file, p)) {
            ensure!(
                (&q.question, &q.target, &q.prediction) == (&p.question, &p.target, &p.prediction),
                "{} and {} disagree on {} sample {} at length {} ({:?} → {:?} against {:?} → {:?}): merge shards of \
                 one `babilong gen` data set, evaluated by one model",
                first.display(),
                file.display(),
                p.task,
                p.index,
                p.length,
                q.question,
                q.prediction,
                p.question,
                p.prediction
            );
        }
    }
    let source = parts.iter().map(|p| p.source.as_str()).collect::<Vec<_>>().join(" + ");
    let results = Results::from_predictions(source, parts.into_iter().flat_map(|p| p.predictions).collect());
    report(&results, output, false)
}

pub fn score(predictions: &Path, output: Option<PathBuf>) -> anyhow::Result<()> {
    let scored = rmt_fast::babilong::eval::score_file(predictions)?;
    let results = Results::from_predictions(format!("{} (label-set metric)", predictions.display()), scored);
    report(&results, &output.unwrap_or_else(|| predictions.with_extension("scores")), false)
}

pub fn depth(results: &Path, data: &[PathBuf], bands: usize, output: &Path, title: &str) -> anyhow::Result<()> {
    let mut needles = Vec::new();
    for d in data {
        needles.extend(rmt_fast::babilong::depth::needles(d)?);
    }
    let table = rmt_fast::babilong::depth::by_depth(&Results::read(results)?, &needles, bands)?;
    if !table.left_out.is_empty() {
        let cells: Vec<String> = table.left_out.iter().map(|(t, l)| format!("{t} {}", length_name(*l))).collect();
        eprintln!("left out (not in the data): {}", cells.join(", "));
    }
    ensure!(!table.cells.is_empty(), "{}: no prediction is of a sample in the data", results.display());
    let md = table.markdown();
    print!("{md}");
    let svg = rmt_fast::babilong::plot::depth_heatmap(&table, title);
    for (ext, text) in [("md", md), ("svg", svg)] {
        let path = output.with_extension(ext);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn plot(files: &[PathBuf], output: &Path, title: &str) -> anyhow::Result<()> {
    let ext = output.extension().and_then(|e| e.to_str()).unwrap_or("");
    ensure!(matches!(ext, "svg" | "png"), "{}: plots are written as .svg or .png", output.display());
    let series = files
        .iter()
        .map(|f| Ok((f.file_stem().map_or("results".into(), |s| s.to_string_lossy().into_owned()), Results::read(f)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bytes = match (&series[..], ext) {
        ([(_, one)], "png") => rmt_fast::babilong::raster::heatmap_png(one),
        ([(_, one)], _) => rmt_fast::babilong::plot::heatmap(one, title).into_bytes(),
        (_, "png") => anyhow::bail!("PNG is drawn for the heatmap of one results file; plot several as .svg"),
        (many, _) => rmt_fast::babilong::plot::lines(many, title).into_bytes(),
    };
    std::fs::write(output, bytes).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}
