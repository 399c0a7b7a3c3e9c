//! Evaluation: run a model over generated BABILong data and score exact match (RMT-SPEC §1.7), or score an
//! external predictions file with the LLM label-set metric (§4.7); results per task × length with Wilson 95 %
//! intervals, written as Markdown, CSV and JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stream::tokenizer::Tokenizer;
use crate::stream::tokens::TokenFile;
use crate::Engine;

/// The fields of a generated record that evaluation and the depth split need (the long `input` text is skipped).
#[derive(Deserialize)]
pub(super) struct Record {
    pub(super) task: String,
    pub(super) length: usize,
    pub(super) index: usize,
    pub(super) question: String,
    pub(super) target: String,
    #[serde(default)]
    pub(super) facts: Vec<String>,
    /// Token offset of each fact in the context.
    #[serde(default)]
    pub(super) fact_positions: Vec<usize>,
    /// Absent in sets generated before `gen` wrote them.
    pub(super) supporting: Option<Vec<usize>>,
    pub(super) tokens: TwinRef,
}

#[derive(Deserialize)]
pub(super) struct TwinRef {
    file: String,
    offset: usize,
    pub(super) context: usize,
    question: usize,
}

/// One scored answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// `qa1` …
    pub task: String,
    /// Context length in tokens (0 for external predictions without one).
    pub length: usize,
    /// Sample index in its file.
    pub index: usize,
    /// The question.
    pub question: String,
    /// The expected answer.
    pub target: String,
    /// What the model said.
    pub prediction: String,
    /// Whether it counts as right.
    pub correct: bool,
}

/// Accuracy of one task × length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `qa1` …
    pub task: String,
    /// Context length in tokens.
    pub length: usize,
    /// Samples.
    pub n: usize,
    /// Samples answered right.
    pub correct: usize,
    /// `correct / n`.
    pub accuracy: f64,
    /// Wilson score interval, 95 %.
    pub ci_low: f64,
    /// Upper end of the Wilson interval.
    pub ci_high: f64,
}

/// A results file: cells plus every prediction (so shards can be merged).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    /// What produced it (model path, data, metric).
    pub source: String,
    /// Accuracy per task × length.
    pub cells: Vec<Cell>,
    /// Every scored answer.
    pub predictions: Vec<Prediction>,
}

/// The Wilson score interval of `correct` out of `n` at 95 %.
pub fn wilson(correct: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n, p) = (1.959_963_984_540_054f64, n as f64, correct as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

impl Results {
    /// Cells from predictions (one per task × length, sorted), duplicates of (task, length, index) dropped.
    pub fn from_predictions(source: String, mut predictions: Vec<Prediction>) -> Self {
        predictions.sort_by(|a, b| (&a.task, a.length, a.index).cmp(&(&b.task, b.length, b.index)));
        predictions.dedup_by(|a, b| (&a.task, a.length, a.index) == (&b.task, b.length, b.index));
        let mut groups: BTreeMap<(usize, usize), (String, usize, usize)> = BTreeMap::new();
        for p in &predictions {
            let key = (task_order(&p.task), p.length);
            let g = groups.entry(key).or_insert((p.task.clone(), 0, 0));
            g.1 += 1;
            g.2 += p.correct as usize;
        }
        let cells = groups
            .into_iter()
            .map(|((_, length), (task, n, correct))| {
                let (ci_low, ci_high) = wilson(correct, n);
                Cell { task, length, n, correct, accuracy: correct as f64 / n as f64, ci_low, ci_high }
            })
            .collect();
        Results { source, cells, predictions }
    }

    /// Markdown table: tasks as rows, lengths as columns, "accuracy % (n)".
    pub fn markdown(&self) -> String {
        let mut lengths: Vec<usize> = self.cells.iter().map(|c| c.length).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let mut tasks: Vec<&str> = self.cells.iter().map(|c| c.task.as_str()).collect();
        tasks.dedup();
        let mut md = format!(
            "Results of {}: exact-match accuracy %, (samples), [Wilson 95 % interval]\n\n| task |",
            self.source
        );
        lengths.iter().for_each(|l| md.push_str(&format!(" {} |", length_name(*l))));
        md.push_str(&format!("\n|---|{}\n", "---|".repeat(lengths.len())));
        for t in tasks {
            md.push_str(&format!("| {t} |"));
            for l in &lengths {
                match self.cells.iter().find(|c| c.task == t && c.length == *l) {
                    Some(c) => md.push_str(&format!(
                        " {:.1} ({}) [{:.0}–{:.0}] |",
                        100.0 * c.accuracy,
                        c.n,
                        100.0 * c.ci_low,
                        100.0 * c.ci_high
                    )),
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
        }
        md
    }

    /// CSV: one row per cell.
    pub fn csv(&self) -> String {
        let mut csv = String::from("task,length,n,correct,accuracy,ci_low,ci_high\n");
        for c in &self.cells {
            csv.push_str(&format!(
                "{},{},{},{},{:.6},{:.6},{:.6}\n",
                c.task, c.length, c.n, c.correct, c.accuracy, c.ci_low, c.ci_high
            ));
        }
        csv
    }

    /// Writes `prefix.md`, `prefix.csv` and `prefix.json`.
    pub fn write(&self, prefix: &Path) -> Result<()> {
        let write = |ext: &str, text: String| {
            let p = prefix.with_extension(ext);
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
        };
        write("md", self.markdown())?;
        write("csv", self.csv())?;
        write("json", serde_json::to_string_pretty(self).expect("serialises"))
    }

    /// Reads a results JSON file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: not a results file: {e}", path.display())))
    }
}

/// The tasks (in order of first appearance) and the sorted lengths of cells given as (task, length).
pub(crate) fn task_length_axes<'a>(cells: impl Iterator<Item = (&'a str, usize)>) -> (Vec<String>, Vec<usize>) {
    let (mut tasks, mut lengths): (Vec<String>, Vec<usize>) = cells.map(|(t, l)| (t.to_string(), l)).unzip();
    tasks.dedup();
    lengths.sort_unstable();
    lengths.dedup();
    (tasks, lengths)
}

/// `0k`, `4k`, `1M`, or the count, as the grid names lengths.
pub fn length_name(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn task_order(task: &str) -> usize {
    super::babi::task_number(task).unwrap_or(usize::MAX)
}

/// The generated files under `data`: `qaN/NAME.jsonl`, sorted by task then length.
pub fn data_files(data: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let dirs = std::fs::read_dir(data).map_err(|e| Error::io(data, e))?;
    for d in dirs.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
        for f in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?.filter_map(|e| e.ok()).map(|e| e.path()) {
            if f.extension().is_some_and(|x| x == "jsonl") {
                files.push(f);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::Input(format!("{} holds no generated BABILong data (qaN/LENGTH.jsonl)", data.display())));
    }
    files.sort();
    Ok(files)
}

/// Which samples of a data set an evaluation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Only indices that are `shard.0` modulo `shard.1` (`(0, 1)`: all), to split work across machines.
    pub shard: (usize, usize),
    /// Only indices from this one on. `babilong gen` with more `--samples` and the same seed writes the same first
    /// samples, so a grown set's new samples can be evaluated alone and merged with the old results.
    pub first: usize,
}

impl Selection {
    /// Every sample.
    pub const ALL: Selection = Selection { shard: (0, 1), first: 0 };

    /// Whether sample `index` is selected.
    pub fn takes(&self, index: usize) -> bool {
        index >= self.first && index % self.shard.1 == self.shard.0
    }
}

/// Runs `engine` over every record of `data` that `selection` takes, `batch` samples at a time (independent
/// sessions run concurrently on the thread pool); `progress` is told each finished sample's context length.
/// Predictions come back in file order whatever the batch.
pub fn evaluate(
    engine: &Engine,
    data: &Path,
    selection: Selection,
    max_new: usize,
    batch: usize,
    progress: impl Fn(usize) + Sync,
) -> Result<Vec<Prediction>> {
    let mut out = Vec::new();
    for file in data_files(data)? {
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let mut records = Vec::new();
        let mut twins: BTreeMap<String, TokenFile> = BTreeMap::new();
        for (line_no, line) in text.lines().enumerate() {
            let r: Record = serde_json::from_str(line)
                .map_err(|e| Error::Input(format!("{}:{}: not a BABILong record: {e}", file.display(), line_no + 1)))?;
            if !selection.takes(r.index) {
                continue;
            }
            if !twins.contains_key(&r.tokens.file) {
                let twin = TokenFile::open(file.with_file_name(&r.tokens.file), None)?;
                twin.check_vocab(engine.model().config.vocab_size)?;
                twins.insert(r.tokens.file.clone(), twin);
            }
            if r.tokens.offset + r.tokens.context + r.tokens.question > twins[&r.tokens.file].len() {
                return Err(Error::Input(format!(
                    "{}:{}: token offsets run past {}",
                    file.display(),
                    line_no + 1,
                    r.tokens.file
                )));
            }
            records.push(r);
        }
        for group in records.chunks(batch.max(1)) {
            let answered: Vec<Result<Prediction>> = group
                .par_iter()
                .map(|r| {
                    let p = answer(engine, &twins[&r.tokens.file], r, max_new)?;
                    progress(r.tokens.context);
                    Ok(p)
                })
                .collect();
            out.extend(answered.into_iter().collect::<Result<Vec<_>>>()?);
        }
    }
    if out.is_empty() {
        let Selection { shard: (k, n), first } = selection;
        return Err(Error::Input(format!(
            "{}: no sample is selected (shard {k}/{n}, from index {first}): is --first past the set's size?",
            data.display()
        )));
    }
    Ok(out)
}

/// One record: its context read from the twin in 1M-token pieces, then its question.
fn answer(engine: &Engine, twin: &TokenFile, r: &Record, max_new: usize) -> Result<Prediction> {
    let (start, end) = (r.tokens.offset, r.tokens.offset + r.tokens.context);
    let mut session = engine.session();
    let mut buf = Vec::new();
    for at in (start..end).step_by(1 << 20) {
        buf.clear();
        twin.read_into(at..(at + (1 << 20)).min(end), &mut buf);
        session.read(&buf)?;
    }
    buf.clear();
    twin.read_into(end..end + r.tokens.question, &mut buf);
    let answer = session.ask(&buf, max_new)?;
    let prediction = Tokenizer::gpt2().decode(&answer.tokens)?.trim().to_string();
    Ok(Prediction {
        task: r.task.clone(),
        length: r.length,
        index: r.index,
        question: r.question.clone(),
        correct: prediction == r.target,
        target: r.target.clone(),
        prediction,
    })
}

/// The answer labels of each task (RMT-SPEC §4.1), for the LLM metric.
fn task_labels(task: usize) -> Vec<String> {
    let set: &[&str] = match task {
        1..=4 | 11..=13 => &["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"],
        5 => &["bill", "fred", "jeff", "mary", "apple", "football", "milk"],
        6 | 9 | 17 | 18 => &["no", "yes"],
        7 => &["none", "one", "two", "three"],
        8 => &["apple", "football", "milk", "nothing"],
        10 => &["maybe", "no", "yes"],
        14 => &["bedroom", "cinema", "kitchen", "office", "park", "school"],
        15 => &["cat", "mouse", "sheep", "wolf"],
        16 => &["gray", "green", "white", "yellow"],
        20 => &["bedroom", "bored", "garden", "hungry", "kitchen", "thirsty", "tired"],
        _ => &[],
    };
    if task == 19 {
        let d = ["n", "e", "s", "w"];
        return d.iter().flat_map(|a| d.iter().map(move |b| format!("{a},{b}"))).collect();
    }
    set.iter().map(|s| s.to_string()).collect()
}

/// The LLM metric of `babilong/metrics.py::compare_answers` (RMT-SPEC §4.7): the output is lowercased and cut
/// at its first '.', `<context>` or `<example>`; labels that occur in the question are ignored; right iff the
/// target is the only label in the output (for a multi-answer target, all its parts and nothing else).
pub fn label_match(task: usize, target: &str, output: &str, question: &str) -> bool {
    let output = output.to_lowercase();
    let output = output.split('.').next().unwrap_or("");
    let output = output.split("<context>").next().unwrap_or("");
    let output = output.split("<example>").next().unwrap_or("");
    let question = question.to_lowercase();
    let labels = task_labels(task);
    let found: Vec<&String> =
        labels.iter().filter(|l| output.contains(l.as_str()) && !question.contains(l.as_str())).collect();
    let target = target.to_lowercase();
    if target.contains(',') && target.len() > 3 {
        let parts: Vec<&str> = target.split(',').collect();
        parts.iter().all(|p| found.iter().any(|f| f.as_str() == *p)) && found.len() == parts.len()
    } else {
        found.len() == 1 && *found[0] == target
    }
}

/// An external prediction (e.g. from an LLM run): `task`, `target`, `output`, and optionally `question`,
/// `length`, `index`.
#[derive(Deserialize)]
struct External {
    task: String,
    target: String,
    output: String,
    #[serde(default)]
    question: String,
    #[serde(default)]
    length: usize,
    #[serde(default)]
    index: Option<usize>,
}

/// Scores an external predictions file (JSON Lines) with [`label_match`].
pub fn score_file(path: &Path) -> Result<Vec<Prediction>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let bad = |m: String| Error::Input(format!("{}:{}: {m}", path.display(), i + 1));
            let e: External =
                serde_json::from_str(line).map_err(|e| bad(format!("expected task, target, output: {e}")))?;
            let task = super::babi::task_number(&e.task).map_err(|e| bad(e.to_string()))?;
            let correct = label_match(task, &e.target, &e.output, &e.question);
            Ok(Prediction {
                task: format!("qa{task}"),
                length: e.length,
                index: e.index.unwrap_or(i),
                question: e.question,
                target: e.target,
                prediction: e.output,
                correct,
            })
        })
        .collect()
}
