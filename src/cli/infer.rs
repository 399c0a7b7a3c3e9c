//! `rmt-fast infer` (read token files, answer, save state) and `rmt-fast ask` (answer from a saved state).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use rmt_fast::state_file::{load_state, save_state};
use rmt_fast::store::StoreConfig;
use rmt_fast::stream::tokenizer::Tokenizer;
use rmt_fast::stream::tokens::{TokenDtype, TokenStream};
use rmt_fast::{hash_tokens, Engine, Session, EMPTY_STREAM_HASH};
use serde_json::json;

use super::{DeviceArg, StoreArgs};

/// Exit status after Ctrl-C / SIGTERM (128 + SIGINT, the shell convention).
pub const INTERRUPTED: u8 = 130;

/// `rmt-fast infer` arguments.
#[derive(clap::Args)]
pub struct InferArgs {
    /// Token files, read as one stream in order (llm.c format, or raw .u16/.u32).
    #[arg(required = true)]
    pub tokens: Vec<PathBuf>,
    /// Model file [default: the bundled model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A question (plain text) to answer after reading; repeat for several.
    #[arg(long)]
    pub ask: Vec<String>,
    /// Write the session state here at the end (and at checkpoints, and on Ctrl-C / SIGTERM).
    #[arg(long)]
    pub state_out: Option<PathBuf>,
    /// Continue from a state file made by the same model from a prefix of the same stream.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Also write the state every N segments (atomically), so a killed run loses at most N segments.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 10)]
    pub max_new_tokens: usize,
    /// Where segment steps run.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Token width of header-less files that are not named .u16/.u32.
    #[arg(long)]
    pub dtype: Option<TokenDtype>,
    /// Print one JSON object (answers, counts, timings) instead of text; no progress bar.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Answers each question from the session, as JSON objects.
fn answer_all(session: &mut Session, questions: &[String], max_new: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    let tok = Tokenizer::gpt2();
    questions
        .iter()
        .map(|q| {
            let text = session.model().config.format_question(q);
            let a = session.ask(&tok.encode(&text), max_new).with_context(|| format!("question {q:?}"))?;
            Ok(json!({"question": q, "answer": tok.decode(&a.tokens)?.trim(), "tokens": a.tokens,
                      "stopped_at_eos": a.stopped_at_eos}))
        })
        .collect()
}

fn print_answers(answers: &[serde_json::Value]) {
    for a in answers {
        println!("Q: {}\nA: {}", a["question"].as_str().unwrap_or(""), a["answer"].as_str().unwrap_or(""));
    }
}

/// Checks that a state belongs to this model and to the first `tokens_read` tokens of this stream.
fn check_resume(
    state_path: &Path,
    meta_model: &str,
    fingerprint: u64,
    stream: &TokenStream,
    state: &rmt_fast::State,
) -> anyhow::Result<()> {
    ensure!(
        meta_model == format!("{fingerprint:016x}"),
        "{}: the state was made with another model (fingerprint {meta_model}, this model {fingerprint:016x})",
        state_path.display()
    );
    let n = state.tokens_read as usize;
    ensure!(
        n <= stream.len(),
        "{}: the state has read {n} tokens but the stream holds only {}",
        state_path.display(),
        stream.len()
    );
    let (mut hash, mut buf) = (EMPTY_STREAM_HASH, Vec::new());
    for at in (0..n).step_by(1 << 20) {
        buf.clear();
        stream.read_into(at..(at + (1 << 20)).min(n), &mut buf);
        hash = hash_tokens(hash, &buf);
        stream.release_before(at + buf.len());
    }
    ensure!(
        hash == state.tokens_hash,
        "{}: the state was made from a different stream (the first {n} tokens do not match)",
        state_path.display()
    );
    Ok(())
}

/// Runs `infer`; returns the process exit status.
pub fn infer(a: InferArgs) -> anyhow::Result<u8> {
    super::set_threads(a.threads)?;
    ensure!(a.checkpoint_every.is_none() || a.state_out.is_some(), "--checkpoint-every needs --state-out");
    ensure!(a.checkpoint_every != Some(0), "--checkpoint-every must be at least 1 segment");
    let model = super::load_model(a.model.as_deref())?;
    let stream = TokenStream::open(&a.tokens, a.dtype)?;
    stream.check_vocab(model.config.vocab_size)?;
    let fingerprint = model.fingerprint();
    let (seg, d) = (model.config.memory.segment_size, model.config.n_embd);
    let store = a.store.config();
    let engine = super::engine(a.device, model, a.json)?.with_store(store.clone());
    let mut session = match &a.resume {
        Some(path) => {
            let (state, meta) = load_state(path, &store)?;
            check_resume(path, &meta.model, fingerprint, &stream, &state)?;
            engine.restore(state).with_context(|| format!("resuming from {}", path.display()))?
        }
        None => engine.session(),
    };

    let interrupted = Arc::new(AtomicBool::new(false));
    // while reading, Ctrl-C / SIGTERM only raise a flag: the loop saves the state and exits at a segment boundary
    let handlers = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        .map(|sig| signal_hook::flag::register(sig, Arc::clone(&interrupted)).context("installing the signal handler"));
    let handlers = handlers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let save = |s: &Session| -> anyhow::Result<()> {
        match &a.state_out {
            Some(p) => Ok(save_state(p, s.state(), fingerprint, d)?),
            None => Ok(()),
        }
    };

    let start_pos = session.state().tokens_read as usize;
    let total = stream.len();
    let pb = super::progress(total as u64, "tokens", a.json);
    pb.set_position(start_pos as u64);
    pb.reset_eta();
    let t0 = Instant::now();
    let per_read = engine.segments_per_read() as u64;
    let (mut pos, mut since_checkpoint, mut buf) = (start_pos, 0u64, Vec::with_capacity(seg));
    while pos < total {
        // the engine's segments per read (a GPU runs them as one chain without the host in between), ending on
        // segment boundaries of the whole stream and on checkpoints; progress and Ctrl-C are checked between reads
        let room = a.checkpoint_every.map_or(per_read, |n| per_read.min(n - since_checkpoint));
        let end = ((pos / seg + room as usize) * seg).min(total);
        buf.clear();
        stream.read_into(pos..end, &mut buf);
        session.read(&buf)?;
        if end >> 20 != pos >> 20 {
            stream.release_before(end); // about every million tokens: keeps resident memory flat
        }
        since_checkpoint += (end / seg - pos / seg) as u64; // segment boundaries crossed
        pos = end;
        pb.set_position(pos as u64);
        if a.checkpoint_every.is_some_and(|n| since_checkpoint >= n) {
            save(&session)?;
            since_checkpoint = 0;
        }
        if interrupted.load(Ordering::Relaxed) {
            pb.finish_and_clear();
            save(&session)?;
            match &a.state_out {
                Some(p) => eprintln!("interrupted at {pos} of {total} tokens: state saved to {}", p.display()),
                None => eprintln!("interrupted at {pos} of {total} tokens (no --state-out: nothing saved)"),
            }
            return Ok(INTERRUPTED);
        }
    }
    pb.finish_and_clear();
    // answering is not resumable work: Ctrl-C ends it at once again
    handlers.into_iter().for_each(|h| {
        signal_hook::low_level::unregister(h);
    });
    let wall = t0.elapsed().as_secs_f64();
    save(&session)?;
    let answers = answer_all(&mut session, &a.ask, a.max_new_tokens)?;
    let st = session.state();
    let warning = super::warn_past_training(session.model(), st.segments);
    let read_now = (pos - start_pos) as f64;
    let peak = super::peak_rss_bytes();
    if a.json {
        let out = json!({
            "tokens_read": st.tokens_read, "segments": st.segments, "tail": st.tail.len(),
            "resumed_at": start_pos, "wall_s": wall, "tokens_per_s": read_now / wall.max(1e-9),
            "peak_rss_bytes": peak, "state_out": a.state_out, "answers": answers,
            "trained_segments": session.model().config.trained_segments, "warning": warning,
        });
        println!("{out}");
    } else {
        print_answers(&answers);
        eprintln!(
            "{} tokens ({} segments{}) from {} in {wall:.2} s: {:.0} tokens/s, peak memory {}{}",
            st.tokens_read,
            st.segments,
            if st.tail.is_empty() { String::new() } else { format!(" + {} tail tokens", st.tail.len()) },
            super::show(&a.tokens),
            read_now / wall.max(1e-9),
            peak.map_or("unknown".into(), super::human_bytes),
            a.state_out.as_ref().map_or(String::new(), |p| format!("; state saved to {}", p.display())),
        );
    }
    Ok(0)
}

/// Runs `ask`: answers questions from a saved state without re-reading the stream.
pub fn ask(
    state_path: &Path,
    model: Option<&Path>,
    questions: &[String],
    max_new: usize,
    json: bool,
    store: &StoreConfig,
) -> anyhow::Result<()> {
    if questions.is_empty() {
        bail!("give at least one question");
    }
    let model = super::load_model(model)?;
    let (state, meta) = load_state(state_path, store)?;
    ensure!(
        meta.model == format!("{:016x}", model.fingerprint()),
        "{}: the state was made with another model (fingerprint {})",
        state_path.display(),
        meta.model
    );
    let engine = Engine::cpu(model).with_store(store.clone());
    let mut session = engine.restore(state).with_context(|| format!("restoring {}", state_path.display()))?;
    let answers = answer_all(&mut session, questions, max_new)?;
    let warning = super::warn_past_training(session.model(), meta.segments);
    if json {
        let trained = session.model().config.trained_segments;
        println!(
            "{}",
            json!({"tokens_read": meta.tokens_read, "segments": meta.segments, "answers": answers,
                   "trained_segments": trained, "warning": warning})
        );
    } else {
        print_answers(&answers);
    }
    Ok(())
}
