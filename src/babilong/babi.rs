//! The bAbI task files (RMT-SPEC §4.2): `ID text` facts and `ID question\tanswer\tsupporting IDs` questions;
//! ID 1 starts a new story. Every question becomes one sample whose facts are all the story's facts before it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File stems of the 20 tasks, `qa1` first.
pub const TASKS: [&str; 20] = [
    "qa1_single-supporting-fact",
    "qa2_two-supporting-facts",
    "qa3_three-supporting-facts",
    "qa4_two-arg-relations",
    "qa5_three-arg-relations",
    "qa6_yes-no-questions",
    "qa7_counting",
    "qa8_lists-sets",
    "qa9_simple-negation",
    "qa10_indefinite-knowledge",
    "qa11_basic-coreference",
    "qa12_conjunction",
    "qa13_compound-coreference",
    "qa14_time-reasoning",
    "qa15_basic-deduction",
    "qa16_basic-induction",
    "qa17_positional-reasoning",
    "qa18_size-reasoning",
    "qa19_path-finding",
    "qa20_agents-motivations",
];

/// A task number (1–20) from `qa3`, `3` or a file stem.
pub fn task_number(name: &str) -> Result<usize> {
    let digits = name.strip_prefix("qa").unwrap_or(name);
    let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse::<usize>() {
        Ok(n @ 1..=20) => Ok(n),
        _ => Err(Error::Input(format!("unknown bAbI task `{name}` (qa1 … qa20)"))),
    }
}

/// Which file of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `{task}_train.txt`.
    Train,
    /// `{task}_test.txt`.
    Test,
}

/// One bAbI question with the story before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Task number, 1–20.
    pub task: usize,
    /// The story's facts before the question, in order (earlier questions removed).
    pub facts: Vec<String>,
    /// The question as written, bAbI's trailing space included (`"Where is Mary? "`).
    pub question: String,
    /// The answer (`"bathroom"`, `"apple,milk"`).
    pub answer: String,
    /// Indices into `facts` of the supporting facts.
    pub supporting: Vec<usize>,
}

/// Parses one task file's text; `source` names it in errors.
pub fn parse(text: &str, task: usize, source: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut facts: Vec<String> = Vec::new();
    let mut index_of_id: Vec<Option<usize>> = Vec::new(); // line ID → index into facts
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: &str| Error::Input(format!("{source}:{}: {msg}: `{line}`", n + 1));
        let (id, rest) = line.split_once(' ').ok_or_else(|| bad("expected `ID text`"))?;
        let id: usize = id.parse().map_err(|_| bad("line ID is not a number"))?;
        if id == 1 {
            facts.clear();
            index_of_id.clear();
        }
        if index_of_id.len() <= id {
            index_of_id.resize(id + 1, None);
        }
        match rest.split('\t').collect::<Vec<_>>()[..] {
            [fact] => {
                index_of_id[id] = Some(facts.len());
                facts.push(fact.to_string());
            }
            [question, answer, support] => {
                let supporting = support
                    .split_whitespace()
                    .map(|s| {
                        let sid: usize = s.parse().map_err(|_| bad("supporting fact ID is not a number"))?;
                        index_of_id
                            .get(sid)
                            .copied()
                            .flatten()
                            .ok_or_else(|| bad("supporting fact ID is not a fact of this story"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                samples.push(Sample {
                    task,
                    facts: facts.clone(),
                    question: question.to_string(),
                    answer: answer.to_string(),
                    supporting,
                });
            }
            _ => return Err(bad("expected a fact, or question<TAB>answer<TAB>supporting IDs")),
        }
    }
    Ok(samples)
}

/// The path of a task file in a bAbI directory (e.g. `tasks_1-20_v1-2/en-10k`).
pub fn task_path(dir: &Path, task: usize, split: Split) -> PathBuf {
    let split = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    dir.join(format!("{}_{split}.txt", TASKS[task - 1]))
}

/// Loads and parses one task file.
pub fn load(dir: &Path, task: usize, split: Split) -> Result<Vec<Sample>> {
    if !dir.is_dir() {
        return Err(Error::Input(format!("bAbI directory {} does not exist", dir.display())));
    }
    let path = task_path(dir, task, split);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse(&text, task, &path.display().to_string())
}
