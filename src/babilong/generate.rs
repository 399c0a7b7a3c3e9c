//! Built-in generators for bAbI tasks 1–5, written from the task definitions: the same actors, places,
//! objects, sentence templates and answer sets, so BABILong runs without a download. Stories are simulated
//! forward; a question is asked only when the facts so far determine its answer, which [`super::solver`]
//! derives with the facts it rests on (the samples' supporting facts). That solver agrees with every sample of the
//! real files.

use super::babi::Sample;
use super::solver::{derive, opposite, parse_fact, solve, Derived, Fact};
use crate::error::{Error, Result};
use crate::rng::Rng;

const PEOPLE: [&str; 4] = ["Mary", "John", "Sandra", "Daniel"];
const GIVERS: [&str; 4] = ["Mary", "Fred", "Jeff", "Bill"];
const PLACES: [&str; 6] = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"];
const OBJECTS: [&str; 3] = ["apple", "football", "milk"];
const MOVE: [&str; 5] = ["moved", "went", "journeyed", "travelled", "went back"];
const TAKE: [&str; 4] = ["got", "grabbed", "picked up", "took"];
const DROP: [&str; 4] = ["dropped", "put down", "left", "discarded"];
const GIVE: [&str; 3] = ["gave", "handed", "passed"];
const DIRECTIONS: [&str; 4] = ["north", "south", "east", "west"];
/// Questions per story in tasks 1, 2, 3 and 5 (as in the real files).
const QUESTIONS_PER_STORY: usize = 5;

/// How often "there" ends a pick-up and a put-down.
#[derive(Clone, Copy)]
struct There {
    take: f64,
    drop: f64,
}

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

/// A story being written: facts so far, and who holds what (to keep actions plausible).
struct Story<'r> {
    rng: &'r mut Rng,
    facts: Vec<String>,
    holding: Vec<(String, String)>, // (object, person)
}

impl Story<'_> {
    fn move_someone(&mut self, people: &[&str]) {
        let (p, v, l) = (pick(self.rng, people), pick(self.rng, &MOVE), pick(self.rng, &PLACES));
        self.facts.push(format!("{p} {v} to the {l}."));
    }

    /// Someone picks up, puts down or (with `give`) hands over an object; otherwise moves. `there` is how often
    /// pick-ups and put-downs end in "there".
    fn act(&mut self, people: &[&str], there: There, give: bool) {
        let roll = self.rng.uniform();
        if roll < 0.5 {
            return self.move_someone(people);
        }
        let suffix = if self.rng.uniform() < there.drop { " there" } else { "" };
        if !self.holding.is_empty() && roll < 0.75 {
            let i = self.rng.below(self.holding.len() as u64) as usize;
            let (object, person) = self.holding[i].clone();
            if give {
                let to = pick(self.rng, people);
                if to != person {
                    self.facts.push(format!("{person} {} the {object} to {to}.", pick(self.rng, &GIVE)));
                    self.holding[i].1 = to.to_string();
                    return;
                }
            }
            self.facts.push(format!("{person} {} the {object}{suffix}.", pick(self.rng, &DROP)));
            self.holding.remove(i);
            return;
        }
        let free: Vec<&str> = OBJECTS.iter().copied().filter(|o| !self.holding.iter().any(|(h, _)| h == o)).collect();
        if free.is_empty() {
            return self.move_someone(people);
        }
        let (p, o) = (pick(self.rng, people), pick(self.rng, &free));
        let suffix = if self.rng.uniform() < there.take { " there" } else { "" };
        self.facts.push(format!("{p} {} the {o}{suffix}.", pick(self.rng, &TAKE)));
        self.holding.push((o.to_string(), p.to_string()));
    }

    fn ask(&self, task: usize, question: String) -> Option<Sample> {
        let Derived { answer, supporting } = derive(&self.facts, &question)?;
        Some(Sample { task, facts: self.facts.clone(), question, answer, supporting })
    }
}

/// Candidate questions of a task over the current story.
fn questions(task: usize, facts: &[String], rng: &mut Rng) -> Vec<String> {
    match task {
        1 => PEOPLE.iter().map(|p| format!("Where is {p}? ")).collect(),
        2 => vec![format!("Where is the {}? ", pick(rng, &OBJECTS))],
        3 => vec![format!("Where was the {} before the {}? ", pick(rng, &OBJECTS), pick(rng, &PLACES))],
        _ => {
            // qa5 asks about the latest give, "What did P give to Q?" a third of the time (as the real files do)
            let last = facts.iter().rev().find_map(|f| match parse_fact(f) {
                Some(Fact::Give { giver, object, receiver }) => Some((giver, object, receiver)),
                _ => None,
            });
            let Some((g, o, r)) = last else { return Vec::new() };
            let q = match (rng.uniform() < 0.34, rng.below(4)) {
                (true, _) => format!("What did {g} give to {r}? "),
                (false, 0) => format!("Who gave the {o}? "),
                (false, 1) => format!("Who gave the {o} to {r}? "),
                (false, 2) => format!("Who received the {o}? "),
                _ => format!("Who did {g} give the {o} to? "),
            };
            vec![q]
        }
    }
}

/// One story of task 1, 2, 3 or 5: facts two at a time, a question whenever one is answerable.
fn story(task: usize, rng: &mut Rng) -> Vec<Sample> {
    let people: &[&str] = if task == 5 { &GIVERS } else { &PEOPLE };
    // the real files: qa2 and qa5 always write "there" after a pick-up, qa3 a fifth of the time; put-downs a fifth
    let there = There { take: if task == 3 { 0.2 } else { 1.0 }, drop: 0.2 };
    let mut s = Story { rng, facts: Vec::new(), holding: Vec::new() };
    let mut samples = Vec::new();
    let mut since_question = 0;
    while samples.len() < QUESTIONS_PER_STORY && s.facts.len() < 400 {
        for _ in 0..2 {
            if task == 1 {
                s.move_someone(people);
            } else {
                s.act(people, there, task == 5);
            }
        }
        since_question += 2;
        // ask about something new: the newest facts must matter (as in the real files' short gaps)
        let mut cands = questions(task, &s.facts, s.rng);
        let k = s.rng.below(cands.len().max(1) as u64) as usize;
        cands.rotate_left(k);
        let asked = cands.into_iter().find_map(|q| {
            let sample = s.ask(task, q)?;
            // the answer must come from facts after the previous question, or the gap has grown long
            let fresh = since_question >= 8
                || solve(&s.facts[..s.facts.len() - since_question], &sample.question).as_deref()
                    != Some(sample.answer.as_str());
            fresh.then_some(sample)
        });
        if let Some(sample) = asked {
            samples.push(sample);
            since_question = 0;
        }
    }
    samples
}

/// A task-4 story as the real files tell them: three places in a row along one axis (`x` `d` of `y`, `y` `d` of
/// `z`), two facts that each relate a neighbouring pair, and a question about one fact's second place whose answer
/// is its first, asked either way round ("What is D of the B?" or "What is the B D' of?"). A model trained on the
/// real files answers only such questions, so samples must not ask for a fact's second place or mix axes.
fn relations(rng: &mut Rng) -> Sample {
    let mut places = PLACES.to_vec();
    let mut take = |rng: &mut Rng| places.remove(rng.below(places.len() as u64) as usize);
    let (x, y, z) = (take(rng), take(rng), take(rng));
    let d = pick(rng, &DIRECTIONS);
    let back = opposite(d).expect("a direction");
    // the shapes' shares in the real en-10k files: the middle place second in both facts 44 %, a chain 45 %,
    // the middle place first in both 11 %
    let roll = rng.uniform();
    let mut facts = if roll < 0.44 {
        [(x, d, y), (z, back, y)]
    } else if roll < 0.89 {
        [(x, d, y), (y, d, z)]
    } else {
        [(y, back, x), (y, d, z)]
    };
    if rng.uniform() < 0.5 {
        facts.swap(0, 1);
    }
    let (a, dir, b) = facts[rng.below(2) as usize];
    let question = if rng.uniform() < 0.5 {
        format!("What is {dir} of the {b}?")
    } else {
        format!("What is the {b} {} of?", opposite(dir).expect("a direction"))
    };
    let facts: Vec<String> = facts.iter().map(|(a, d, b)| format!("The {a} is {d} of the {b}.")).collect();
    let supporting = derive(&facts, &question).expect("a relation stated in the story").supporting;
    Sample { task: 4, facts, question, answer: a.to_string(), supporting }
}

/// `n` samples of bAbI task 1–5, deterministic for the generator's state.
pub fn generate(task: usize, n: usize, rng: &mut Rng) -> Result<Vec<Sample>> {
    if !(1..=5).contains(&task) {
        return Err(Error::Input(format!(
            "the built-in generators cover qa1–qa5, not qa{task}: give --babi for real task files"
        )));
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if task == 4 {
            out.push(relations(rng));
        } else {
            out.extend(story(task, rng));
        }
    }
    out.truncate(n);
    Ok(out)
}
