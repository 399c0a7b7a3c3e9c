//! The real bAbI files (../shared/data/babi): every task parses, and the solver derives every qa1–qa5 answer and
//! its supporting facts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::shared_data;
use rmt_fast::babilong::babi::{self, load, task_number, Split, TASKS};
use rmt_fast::babilong::generate::generate;
use rmt_fast::babilong::solver::{derive, parse_fact, Derived, Fact};
use rmt_fast::rng::Rng;

fn dir(set: &str) -> PathBuf {
    shared_data(&format!("babi/tasks_1-20_v1-2/{set}"))
}

#[test]
fn all_twenty_tasks_parse() {
    for task in 1..=20 {
        for (set, split, questions) in
            [("en", Split::Train, 1000), ("en", Split::Test, 1000), ("en-10k", Split::Test, 1000)]
        {
            let samples = load(&dir(set), task, split).unwrap();
            assert_eq!(samples.len(), questions, "{set} qa{task} {split:?}");
            for s in &samples {
                assert_eq!(s.task, task);
                assert!(!s.facts.is_empty() && !s.question.trim().is_empty() && !s.answer.is_empty());
                assert!(s.supporting.iter().all(|&i| i < s.facts.len()));
                assert!(!s.facts.iter().any(|f| f.contains('\t')), "questions are not facts");
            }
        }
        if task != 3 {
            // en-10k's qa3 train file is not in the shared data (SOURCES.md)
            assert_eq!(load(&dir("en-10k"), task, Split::Train).unwrap().len(), 10_000, "en-10k qa{task} train");
        }
    }
    // the first qa1 test sample, as RMT-SPEC §4.2 describes it
    let first = &load(&dir("en"), 1, Split::Test).unwrap()[0];
    assert_eq!(first.facts, ["John travelled to the hallway.", "Mary journeyed to the bathroom."]);
    assert_eq!(
        (first.question.as_str(), first.answer.as_str(), &first.supporting[..]),
        ("Where is John? ", "hallway", &[0][..])
    );
}

/// A qa5 label that is stale in the file itself: its supporting fact is a give from P to Q of the labelled
/// object, but a later give from P to Q of another object comes before the question. bAbI's generator re-asked an
/// earlier question without updating it (e.g. en qa5 train: lines 10 "Bill handed the apple to Jeff.", 13 "Bill
/// passed the football to Jeff.", 14 "What did Bill give to Jeff? apple 10").
fn stale_give_label(s: &babi::Sample) -> bool {
    let Some(Fact::Give { giver, object, receiver }) = s.supporting.first().and_then(|&i| parse_fact(&s.facts[i]))
    else {
        return false;
    };
    object == s.answer
        && s.facts[s.supporting[0] + 1..].iter().any(|f| {
            matches!(parse_fact(f), Some(Fact::Give { giver: g, object: o, receiver: r }) if g == giver && r == receiver && o != object)
        })
}

/// The solver derives every answer of the real files and names their supporting facts, but for the stale qa5
/// labels (answer and supporting fact alike).
#[test]
fn solver_derives_every_qa1_to_qa5_answer_and_supporting_facts_of_the_real_files() {
    let mut stale = Vec::new();
    for task in 1..=5 {
        let mut n = 0;
        for (set, split) in
            [("en", Split::Train), ("en", Split::Test), ("en-10k", Split::Train), ("en-10k", Split::Test)]
        {
            if task == 3 && set == "en-10k" && split == Split::Train {
                continue;
            }
            for s in load(&dir(set), task, split).unwrap() {
                let got = derive(&s.facts, &s.question);
                if got.as_ref().map(|d| (d.answer.as_str(), &d.supporting)) != Some((s.answer.as_str(), &s.supporting))
                {
                    assert!(task == 5 && stale_give_label(&s), "{set} qa{task}: solver says {got:?}, file says {s:?}");
                    stale.push(format!("{set} {split:?}"));
                }
                n += 1;
            }
        }
        eprintln!("qa{task}: {n} real samples checked");
    }
    // every disagreement is a stale label in the file (counted so that a changed solver cannot hide behind it)
    let count = |p: &str| stale.iter().filter(|s| s.starts_with(p)).count();
    eprintln!("stale qa5 labels: {} in en, {} in en-10k", count("en "), count("en-10k"));
    assert_eq!((count("en "), count("en-10k")), (4, 22));
}

#[test]
fn bad_input_is_a_clear_error() {
    assert!(load(&PathBuf::from("/nonexistent/babi"), 1, Split::Test)
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
    assert!(task_number("qa21").unwrap_err().to_string().contains("unknown bAbI task `qa21`"));
    assert_eq!(task_number("qa7").unwrap(), 7);
    assert_eq!(task_number(TASKS[12]).unwrap(), 13);
    let err = babi::parse("1 Mary went home.\nx Where is Mary?\thome\t1\n", 1, "f.txt").unwrap_err().to_string();
    assert!(err.contains("f.txt:2") && err.contains("not a number"), "{err}");
    let err = babi::parse("1 Mary went home.\n2 Where is Mary?\thome\t5\n", 1, "f.txt").unwrap_err().to_string();
    assert!(err.contains("f.txt:2") && err.contains("not a fact of this story"), "{err}");
}

/// A sentence's template: names, places, objects and directions replaced by placeholders.
fn template(sentence: &str) -> String {
    sentence
        .trim()
        .split(' ')
        .map(|w| {
            let core = w.trim_end_matches(['.', '?']);
            let tail = &w[core.len()..];
            let class = match core {
                "Mary" | "John" | "Sandra" | "Daniel" | "Fred" | "Jeff" | "Bill" => "P",
                "bathroom" | "bedroom" | "garden" | "hallway" | "kitchen" | "office" => "L",
                "apple" | "football" | "milk" => "O",
                "north" | "south" | "east" | "west" => "D",
                other => other,
            };
            format!("{class}{tail}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the generator must reproduce of a set of samples.
struct Stats {
    facts: BTreeSet<String>,
    questions: BTreeSet<String>,
    words: BTreeSet<String>,
    answers: BTreeMap<String, f64>,
    mean_facts: f64,
}

fn stats(samples: &[babi::Sample]) -> Stats {
    let facts: BTreeSet<String> = samples.iter().flat_map(|s| s.facts.iter().map(|f| template(f))).collect();
    let questions: BTreeSet<String> = samples.iter().map(|s| template(&s.question)).collect();
    let words: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| {
            s.facts
                .iter()
                .chain([&s.question])
                .flat_map(|t| t.split_whitespace().map(|w| w.trim_end_matches(['.', '?']).to_string()))
        })
        .collect();
    let mut answers: BTreeMap<String, f64> = BTreeMap::new();
    for s in samples {
        *answers.entry(s.answer.clone()).or_default() += 1.0 / samples.len() as f64;
    }
    let mean_facts = samples.iter().map(|s| s.facts.len() as f64).sum::<f64>() / samples.len() as f64;
    Stats { facts, questions, words, answers, mean_facts }
}

/// Generated samples against the real test files: the same templates, vocabulary and answer sets; mean facts per
/// sample within 35 %; every answer's share within 8 percentage points; answers the solver derives; and the same
/// seed gives the same samples.
#[test]
fn generators_match_the_real_files() {
    for task in 1..=5 {
        let real = load(&dir("en-10k"), task, Split::Test).unwrap();
        let made = generate(task, 2000, &mut Rng::new(task as u64)).unwrap();
        assert_eq!(made, generate(task, 2000, &mut Rng::new(task as u64)).unwrap(), "qa{task}: seeded");
        for s in &made {
            let Derived { answer, supporting } = derive(&s.facts, &s.question).unwrap();
            assert_eq!((answer.as_str(), &supporting), (s.answer.as_str(), &s.supporting));
            // as many supporting facts as the task's name says (qa4 and qa5 name one), all before the question
            assert_eq!(supporting.len(), [1, 2, 3, 1, 1][task - 1], "qa{task}: {s:?}");
            assert!(supporting.iter().all(|&i| i < s.facts.len()));
        }
        let Stats { facts: rf, questions: rq, words: rw, answers: ra, mean_facts: rm } = stats(&real);
        let Stats { facts: gf, questions: gq, words: gw, answers: ga, mean_facts: gm } = stats(&made);
        assert_eq!(gf, rf, "qa{task}: fact templates");
        assert_eq!(gq, rq, "qa{task}: question templates");
        assert_eq!(gw, rw, "qa{task}: vocabulary");
        assert_eq!(ga.keys().collect::<Vec<_>>(), ra.keys().collect::<Vec<_>>(), "qa{task}: answer set");
        let worst = ra.iter().map(|(k, p)| (p - ga[k]).abs()).fold(0.0, f64::max);
        eprintln!(
            "qa{task}: facts per sample {gm:.1} generated vs {rm:.1} real; largest answer-share gap {:.1} pp",
            100.0 * worst
        );
        assert!((gm / rm - 1.0).abs() <= 0.35, "qa{task}: mean facts per sample {gm:.1} vs {rm:.1}");
        assert!(worst <= 0.08, "qa{task}: answer share differs by {:.1} pp", 100.0 * worst);
    }
    assert!(generate(6, 1, &mut Rng::new(0)).unwrap_err().to_string().contains("qa1–qa5"));
}

/// The shape of a qa4 sample, as the real files make every one: its two facts relate neighbouring places of one
/// row along one axis, sharing the middle place as both facts' second place ("middle second"), as the first
/// place of one and the second of the other ("chain") or as both facts' first ("middle first"); the question
/// asks about one fact's second place and its answer is that fact's first. `None` for any other sample.
fn qa4_shape(s: &babi::Sample) -> Option<&'static str> {
    let relation = |f: &String| match parse_fact(f) {
        Some(Fact::Relation { a, direction, b }) => Some((a, direction, b)),
        _ => None,
    };
    let [(a1, d1, b1), (a2, d2, b2)] = [relation(&s.facts[0])?, relation(&s.facts[1])?];
    let axis = |d: &str| matches!(d, "north" | "south");
    let asked_second =
        [(&a1, &b1), (&a2, &b2)].iter().any(|(a, b)| **a == s.answer && s.question.contains(&format!("the {b}")));
    let shape = if b1 == b2 && d1 != d2 {
        "middle second"
    } else if a1 == a2 && d1 != d2 {
        "middle first"
    } else if (b1 == a2 || b2 == a1) && d1 == d2 {
        "chain"
    } else {
        return None;
    };
    (s.facts.len() == 2 && axis(&d1) == axis(&d2) && asked_second).then_some(shape)
}

/// The shares of each qa4 shape; panics on a sample of no shape.
fn qa4_shapes(samples: &[babi::Sample]) -> BTreeMap<&'static str, f64> {
    let mut shares = BTreeMap::new();
    for s in samples {
        let shape = qa4_shape(s).unwrap_or_else(|| panic!("a qa4 sample of no real shape: {s:?}"));
        *shares.entry(shape).or_insert(0.0) += 1.0 / samples.len() as f64;
    }
    shares
}

/// The built-in qa4 asks what the real files ask: every real and every generated sample has one of the three
/// shapes of [`qa4_shape`] (the generator before this test asked for a fact's second place too, and related places
/// across axes: a model trained on the real files answered 47 % of those at 0k against 94 % of real ones), and
/// the shapes' shares agree within 4 percentage points.
#[test]
fn built_in_qa4_asks_what_the_real_files_ask() {
    let real = qa4_shapes(&load(&dir("en-10k"), 4, Split::Test).unwrap());
    let made = qa4_shapes(&generate(4, 2000, &mut Rng::new(4)).unwrap());
    assert_eq!(real.keys().copied().collect::<Vec<_>>(), ["chain", "middle first", "middle second"]);
    assert_eq!(made.keys().collect::<Vec<_>>(), real.keys().collect::<Vec<_>>());
    for (shape, share) in &real {
        assert!(
            (share - made[shape]).abs() <= 0.04,
            "{shape}: {:.1} % made, {:.1} % real",
            100.0 * made[shape],
            100.0 * share
        );
    }
}
