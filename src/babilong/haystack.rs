//! Background text ("haystack", RMT-SPEC §4.3): sentences from books (any text files or directories, PG19
//! style), cut by a rule-based splitter, sampled from a random book and offset per sample, seeded; or, when the
//! user gives no books, sentences of a built-in synthetic prose grammar.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::stream::tokenizer::Tokenizer;

/// Sentences shorter than this many GPT-2 tokens are dropped (RMT-SPEC §4.3: `min_sentence_len=10`).
pub const MIN_SENTENCE_TOKENS: usize = 10;

/// Words after which a period does not end a sentence.
const ABBREVIATIONS: [&str; 24] = [
    "Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Prof", "Capt", "Col", "Gen", "Lt", "Rev", "Hon", "Mt", "Messrs", "Mme",
    "Mlle", "No", "vol", "viz", "etc", "i.e", "e.g",
];

fn is_abbreviation(word: &str) -> bool {
    let w = word.trim_start_matches(['"', '\'', '(', '[', '“', '‘', '_']);
    ABBREVIATIONS.contains(&w) || (w.chars().count() == 1 && w.chars().all(char::is_uppercase))
    // initials: "J. Smith"
}

/// Splits prose into sentences: a sentence ends at `.`, `!` or `?` (plus closing quotes or brackets) followed by
/// white space and a capital letter, an opening quote or a digit, unless the period ends an abbreviation or an
/// initial; a blank line always ends one. Line breaks inside a sentence become spaces.
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n").map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")) {
        let chars: Vec<char> = paragraph.chars().collect();
        let mut start = 0;
        let mut i = 0;
        while i < chars.len() {
            if matches!(chars[i], '.' | '!' | '?') {
                let mut end = i + 1;
                while end < chars.len() && matches!(chars[end], '"' | '\'' | '”' | '’' | ')' | ']' | '.' | '!' | '?')
                {
                    end += 1;
                }
                let next = chars.get(end + 1).copied();
                let at_space = end == chars.len() || chars[end] == ' ';
                let opens = next.is_none_or(|c| {
                    c.is_uppercase() || c.is_ascii_digit() || matches!(c, '"' | '“' | '\'' | '‘' | '_' | '(')
                });
                let word: String =
                    chars[start..i].iter().collect::<String>().rsplit(' ').next().unwrap_or("").to_string();
                if at_space && opens && !(chars[i] == '.' && is_abbreviation(&word)) {
                    let s: String = chars[start..end].iter().collect();
                    if !s.trim().is_empty() {
                        out.push(s.trim().to_string());
                    }
                    start = end;
                }
                i = end;
            } else {
                i += 1;
            }
        }
        let rest: String = chars[start..].iter().collect();
        if !rest.trim().is_empty() {
            out.push(rest.trim().to_string());
        }
    }
    out
}

/// Where background sentences come from.
pub enum Haystack {
    /// Text files (read at random offsets, never whole).
    Books(Vec<(PathBuf, u64)>),
    /// The built-in synthetic prose grammar.
    Synthetic,
}

impl Haystack {
    /// Books from files and directories (every `.txt` below a directory).
    pub fn books(paths: &[PathBuf]) -> Result<Self> {
        let mut books = Vec::new();
        for p in paths {
            collect_txt(p, &mut books)?;
        }
        books.retain(|(_, size)| *size > 0);
        if books.is_empty() {
            return Err(Error::Input(format!("the haystack {} holds no text (.txt files)", crate_paths(paths))));
        }
        books.sort();
        Ok(Haystack::Books(books))
    }

    /// A sampler of background sentences, deterministic for `seed`.
    pub fn sampler(&self, seed: u64) -> Sampler<'_> {
        Sampler { haystack: self, rng: Rng::new(seed), buffer: Vec::new(), tokenizer: Tokenizer::gpt2() }
    }
}

fn crate_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn collect_txt(p: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(p).map_err(|e| Error::io(p, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "txt") {
                collect_txt(&e, out)?;
            }
        }
    } else {
        out.push((p.to_path_buf(), meta.len()));
    }
    Ok(())
}

/// Draws tokenized background sentences.
pub struct Sampler<'h> {
    haystack: &'h Haystack,
    rng: Rng,
    buffer: Vec<Vec<u32>>,
    tokenizer: Tokenizer,
}

/// Characters read per draw from a book (sentences of one passage are used in order).
const WINDOW: u64 = 64 * 1024;

impl Sampler<'_> {
    /// The next sentence's tokens (with a leading space, as it follows other text), at least
    /// [`MIN_SENTENCE_TOKENS`] long.
    pub fn next_sentence(&mut self) -> Result<Vec<u32>> {
        while self.buffer.is_empty() {
            let sentences = match self.haystack {
                Haystack::Books(books) => self.passage(books)?,
                Haystack::Synthetic => (0..64).map(|_| synthetic_sentence(&mut self.rng)).collect(),
            };
            self.buffer = sentences
                .into_iter()
                .rev()
                .map(|s| self.tokenizer.encode(&format!(" {s}")))
                .filter(|t| t.len() >= MIN_SENTENCE_TOKENS)
                .collect();
        }
        Ok(self.buffer.pop().expect("refilled above"))
    }

    /// Sentences of a random passage of a random book, the partial first and last ones dropped.
    fn passage(&mut self, books: &[(PathBuf, u64)]) -> Result<Vec<String>> {
        let (path, size) = &books[self.rng.below(books.len() as u64) as usize];
        let start = self.rng.below(size.saturating_sub(WINDOW).max(1));
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
        let mut bytes = Vec::with_capacity(WINDOW as usize);
        f.take(WINDOW).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut sentences = split_sentences(&text);
        if sentences.len() > 2 {
            sentences.pop();
            sentences.remove(0);
        } else {
            sentences.clear(); // too little text here: draw again
        }
        Ok(sentences)
    }
}

// The synthetic grammar. Its vocabulary avoids every actor, place and object of the bAbI tasks, so background
// never states a competing fact.
const SUBJECTS: [&str; 16] = [
    "The old sailor",
    "A quiet child",
    "The miller's wife",
    "Her younger brother",
    "The village doctor",
    "A tired traveller",
    "The young poet",
    "My grandmother",
    "The stranger",
    "A curious fox",
    "The blacksmith",
    "Our neighbour",
    "The captain",
    "A patient scholar",
    "The shepherd",
    "Their cousin",
];
const VERBS: [&str; 16] = [
    "watched",
    "remembered",
    "described",
    "admired",
    "followed",
    "questioned",
    "painted",
    "carried",
    "studied",
    "forgot",
    "praised",
    "noticed",
    "mended",
    "sold",
    "built",
    "found",
];
const OBJECTS: [&str; 16] = [
    "the silver lantern",
    "a faded letter",
    "the long road",
    "an empty boat",
    "the narrow bridge",
    "a broken clock",
    "the winter orchard",
    "a small wooden box",
    "the distant mountains",
    "an old map",
    "the harvest moon",
    "a heavy coat",
    "the church bells",
    "a basket of pears",
    "the frozen river",
    "a blue ribbon",
];
const MANNERS: [&str; 12] = [
    "slowly",
    "with great care",
    "in silence",
    "without a word",
    "once again",
    "for a long while",
    "with a smile",
    "in the grey light",
    "at first",
    "at last",
    "more than once",
    "as if in a dream",
];
const TIMES: [&str; 12] = [
    "Before the storm",
    "Late that evening",
    "In the spring",
    "Some years later",
    "On the third morning",
    "After the market closed",
    "During the long winter",
    "At the end of the summer",
    "When the rain stopped",
    "Early the next day",
    "Long ago",
    "That autumn",
];
const CLAUSES: [&str; 12] = [
    "although nobody had asked",
    "because the hour was late",
    "while the wind rose over the hills",
    "as the others slept",
    "though the path was steep",
    "since the fire had gone out",
    "until the bells rang",
    "before anyone could answer",
    "as the ships came in",
    "while the bread was baking",
    "because it reminded them of home",
    "when the lamps were lit",
];

/// One sentence of the synthetic prose grammar (labelled synthetic wherever it is used).
pub fn synthetic_sentence(rng: &mut Rng) -> String {
    fn pick(rng: &mut Rng, xs: &[&'static str]) -> &'static str {
        xs[rng.below(xs.len() as u64) as usize]
    }
    let (s, v, o, m) = (pick(rng, &SUBJECTS), pick(rng, &VERBS), pick(rng, &OBJECTS), pick(rng, &MANNERS));
    match rng.below(4) {
        0 => format!("{s} {v} {o} {m}."),
        1 => format!("{}, {} {v} {o} {m}.", pick(rng, &TIMES), lower_first(s)),
        2 => format!("{s} {v} {o}, {}.", pick(rng, &CLAUSES)),
        _ => format!("{}, {} {v} {o} {m}, {}.", pick(rng, &TIMES), lower_first(s), pick(rng, &CLAUSES)),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_abbreviations_quotes_and_dialogue() {
        let text = "Mr. Knightley, a sensible man about seven or eight-and-thirty, was a very old friend. \
                    \"Poor Miss Taylor!\" said she. \"I wish she were here again.\" Mrs. Weston smiled.\n\n\
                    It was J. Smith of St. Mary's who spoke. Was it? Yes";
        assert_eq!(
            split_sentences(text),
            [
                "Mr. Knightley, a sensible man about seven or eight-and-thirty, was a very old friend.",
                "\"Poor Miss Taylor!\" said she.",
                "\"I wish she were here again.\"",
                "Mrs. Weston smiled.",
                "It was J. Smith of St. Mary's who spoke.",
                "Was it?",
                "Yes",
            ]
        );
    }
}
