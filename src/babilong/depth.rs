//! Accuracy by the needle's depth: where in the context the answer's last supporting fact lies, from 0 (the
//! context's first token) to 1 (its end, just before the question). A recurrent memory reads the context once, so
//! a needle's depth says how long the memory had run before the fact came and how many segments wrote after it: a
//! memory that loses old facts is wrong at small depths and right near 1, one that cannot write into a state a
//! long stream has aged the other way round. A cell's overall accuracy shows neither.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use super::eval::{data_files, length_name, task_length_axes, wilson, Record, Results};
use super::solver::derive;
use crate::error::{Error, Result};

/// Where one generated sample's needle is.
#[derive(Clone, Debug, PartialEq)]
pub struct Needle {
    /// `qa1` …
    pub task: String,
    /// Context length the sample was generated at.
    pub length: usize,
    /// Sample index in its file.
    pub index: usize,
    /// The question, to check that a prediction is of this sample.
    pub question: String,
    /// The expected answer, likewise.
    pub target: String,
    /// Token offset of the last supporting fact over the context's tokens, in `[0, 1)`.
    pub depth: f64,
}

/// The needles of every sample in a `babilong gen` directory.
pub fn needles(data: &Path) -> Result<Vec<Needle>> {
    let mut out = Vec::new();
    for file in data_files(data)? {
        let reader = std::io::BufReader::new(std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?);
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| Error::io(&file, e))?;
            let at = || format!("{}:{}", file.display(), n + 1);
            let r: Record = serde_json::from_str(&line)
                .map_err(|e| Error::Input(format!("{}: not a BABILong record: {e}", at())))?;
            out.push(needle(r).map_err(|m| Error::Input(format!("{}: {m}", at())))?);
        }
    }
    Ok(out)
}

fn needle(r: Record) -> std::result::Result<Needle, String> {
    let supporting = match r.supporting {
        Some(s) => s,
        None => derive(&r.facts, &r.question)
            .ok_or(
                "no supporting facts in the record, and the solver derives none (it knows qa1–qa5): regenerate the set",
            )?
            .supporting,
    };
    let last = *supporting.iter().max().ok_or("the record names no supporting fact")?;
    if r.fact_positions.is_empty() {
        return Err("the record has no fact positions (`babilong gen` writes them)".into());
    }
    let position = *r.fact_positions.get(last).ok_or("a supporting fact past the record's facts")?;
    if position >= r.tokens.context.max(1) {
        return Err(format!("a fact at token {position} of a context of {}", r.tokens.context));
    }
    let depth = position as f64 / r.tokens.context as f64;
    Ok(Needle { task: r.task, length: r.length, index: r.index, question: r.question, target: r.target, depth })
}

/// Accuracy of one task × length × depth band.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthCell {
    /// `qa1` …
    pub task: String,
    /// Context length in tokens.
    pub length: usize,
    /// Depth band: needles in `[band / bands, (band + 1) / bands)`.
    pub band: usize,
    /// Samples.
    pub n: usize,
    /// Samples answered right.
    pub correct: usize,
}

/// Results split by the needle's depth into `bands` equal bands.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthTable {
    /// Where the results came from.
    pub source: String,
    /// How many depth bands.
    pub bands: usize,
    /// One cell per task × length × band that has samples, sorted.
    pub cells: Vec<DepthCell>,
    /// The results' task × length cells that the data does not hold, left out.
    pub left_out: Vec<(String, usize)>,
}

/// Splits `results` by the depth of each prediction's needle. Where `needles` hold a task × length, every
/// prediction of it must be of one of their samples (same index, question and target), or the results were made on
/// another set; the results' other cells are left out (and listed).
///
/// ```
/// use rmt_fast::babilong::depth::{by_depth, Needle};
/// use rmt_fast::babilong::eval::{Prediction, Results};
/// let sample = |index, depth| Needle {
///     task: "qa1".into(), length: 1000, index, question: "Where is Mary? ".into(), target: "garden".into(), depth,
/// };
/// let answer = |index, correct| Prediction {
///     task: "qa1".into(), length: 1000, index, question: "Where is Mary? ".into(), target: "garden".into(),
///     prediction: if correct { "garden" } else { "office" }.into(), correct,
/// };
/// let results = Results::from_predictions("m".into(), vec![answer(0, false), answer(1, true)]);
/// let table = by_depth(&results, &[sample(0, 0.1), sample(1, 0.9)], 2)?;
/// assert_eq!(table.cells.iter().map(|c| (c.band, c.correct)).collect::<Vec<_>>(), [(0, 0), (1, 1)]);
/// # Ok::<(), rmt_fast::Error>(())
/// ```
pub fn by_depth(results: &Results, needles: &[Needle], bands: usize) -> Result<DepthTable> {
    if bands == 0 {
        return Err(Error::Input("depth bands must be at least 1".into()));
    }
    let mut by_key = BTreeMap::new();
    for n in needles {
        if by_key.insert((n.task.as_str(), n.length, n.index), n).is_some() {
            return Err(Error::Input(format!(
                "two samples are {} #{} at {}: give one set per task and length",
                n.task,
                n.index,
                length_name(n.length)
            )));
        }
    }
    let cells_held: std::collections::BTreeSet<(&str, usize)> = by_key.keys().map(|&(t, l, _)| (t, l)).collect();
    let mut counts: BTreeMap<(usize, usize, usize), (String, usize, usize)> = BTreeMap::new();
    let mut left_out = Vec::new();
    for p in &results.predictions {
        if !cells_held.contains(&(p.task.as_str(), p.length)) {
            if !left_out.contains(&(p.task.clone(), p.length)) {
                left_out.push((p.task.clone(), p.length));
            }
            continue;
        }
        let n = by_key.get(&(p.task.as_str(), p.length, p.index)).ok_or_else(|| {
            Error::Input(format!(
                "{} #{} at {} is not in the data: give the set it was evaluated on",
                p.task,
                p.index,
                length_name(p.length)
            ))
        })?;
        if (n.question.trim(), n.target.as_str()) != (p.question.trim(), p.target.as_str()) {
            return Err(Error::Input(format!(
                "{} #{} at {}: the results ask {:?} → {:?}, the data {:?} → {:?}: another set",
                p.task,
                p.index,
                length_name(p.length),
                p.question,
                p.target,
                n.question,
                n.target
            )));
        }
        let band = ((n.depth * bands as f64) as usize).min(bands - 1);
        let task = super::babi::task_number(&p.task).unwrap_or(usize::MAX);
        let c = counts.entry((task, p.length, band)).or_insert((p.task.clone(), 0, 0));
        c.1 += 1;
        c.2 += p.correct as usize;
    }
    let cells = counts
        .into_iter()
        .map(|((_, length, band), (task, n, correct))| DepthCell { task, length, band, n, correct })
        .collect();
    Ok(DepthTable { source: results.source.clone(), bands, cells, left_out })
}

impl DepthTable {
    /// A band's name: `0–20 %`.
    pub fn band_name(&self, band: usize) -> String {
        format!("{:.0}–{:.0} %", 100.0 * band as f64 / self.bands as f64, 100.0 * (band + 1) as f64 / self.bands as f64)
    }

    /// The tasks and lengths that have cells, in order.
    pub fn axes(&self) -> (Vec<String>, Vec<usize>) {
        task_length_axes(self.cells.iter().map(|c| (c.task.as_str(), c.length)))
    }

    /// The cell of `task` at `length` in `band`, if it has samples.
    pub fn cell(&self, task: &str, length: usize, band: usize) -> Option<&DepthCell> {
        self.cells.iter().find(|c| c.task == task && c.length == length && c.band == band)
    }

    /// Markdown: per task, depth bands as rows, lengths as columns, "accuracy % (n) [Wilson 95 %]".
    pub fn markdown(&self) -> String {
        let (tasks, lengths) = self.axes();
        let mut md = format!(
            "Results of {} by the depth of the answer's last supporting fact (0 % the context's start, 100 % its \
             end): exact-match accuracy %, (samples), [Wilson 95 % interval]\n",
            self.source
        );
        for t in &tasks {
            md.push_str(&format!("\n| {t}: depth |"));
            lengths.iter().for_each(|l| md.push_str(&format!(" {} |", length_name(*l))));
            md.push_str(&format!("\n|---|{}\n", "---|".repeat(lengths.len())));
            for band in 0..self.bands {
                md.push_str(&format!("| {} |", self.band_name(band)));
                for l in &lengths {
                    match self.cell(t, *l, band) {
                        Some(c) => {
                            let (lo, hi) = wilson(c.correct, c.n);
                            md.push_str(&format!(
                                " {:.0} ({}) [{:.0}–{:.0}] |",
                                100.0 * c.correct as f64 / c.n as f64,
                                c.n,
                                100.0 * lo,
                                100.0 * hi
                            ))
                        }
                        None => md.push_str(" – |"),
                    }
                }
                md.push('\n');
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(extra: &str) -> Record {
        serde_json::from_str(&format!(
            r#"{{"input": "…", "task": "qa1", "length": 100, "index": 0, "question": "Where is Mary? ",
                "target": "office", "facts": ["Mary went to the garden.", "John went to the hallway.",
                "Mary moved to the office."], "fact_positions": [10, 40, 75],
                "tokens": {{"file": "100.bin", "offset": 0, "context": 100, "question": 5}} {extra}}}"#
        ))
        .unwrap()
    }

    /// A record of a set generated before `gen` wrote `supporting` gets them from the solver (qa1–qa5).
    #[test]
    fn records_without_supporting_facts_get_the_solvers() {
        assert_eq!(needle(record("")).unwrap().depth, 0.75);
        assert_eq!(needle(record(r#", "supporting": [0]"#)).unwrap().depth, 0.1);
        let mut other = record("");
        other.question = "Is Mary in the office? ".into();
        assert!(needle(other).unwrap_err().contains("regenerate the set"));
        assert!(needle(record(r#", "supporting": []"#)).unwrap_err().contains("names no supporting fact"));
        assert!(needle(record(r#", "supporting": [5]"#)).unwrap_err().contains("past the record's facts"));
        let results = Results::default();
        assert!(by_depth(&results, &[], 0).unwrap_err().to_string().contains("at least 1"));
    }
}
