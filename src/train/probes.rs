//! Memory probes: after every segment but the last, ask the memory where someone (or, in qa2, qa3 and qa5 stories,
//! something) is, in qa4 stories what lies in a direction of a place, and in qa5 stories who gave what to whom, as
//! far as the stream has told (see [`super::Probe`]). The final question reaches the memory only through BPTT from
//! the end of the sample; the probes give every hand-off its own target, so keeping a person's last place (and who
//! carries what) across many segments is trained directly.
//!
//! The state after a prefix of the stream is the bAbI world simulation ([`crate::babilong::solver`]) run over the
//! facts that have ended in it: each person's last place, and each object's place (where it was dropped, or where
//! its holder is), the relations stated (qa4: both question forms, about both places of each), and the gives
//! (qa5: its five question forms about each).

use serde::{Deserialize, Serialize};

use super::Probe;
use crate::babilong::babi::{self, Sample};
use crate::babilong::solver::{parse_fact, World};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::stream::tokenizer::Tokenizer;

/// The `probes` section of a training config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Weight of the probes' loss: each sample's probes share it (mean over its probes).
    pub weight: f32,
    /// Ask after every segment for everyone (and everything) placed so far, not for one drawn at random (≈ 1
    /// segment more of work per segment, at qa1's four people).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_person: bool,
    /// The tasks whose samples are probed: qa1 (people), qa2 and qa3 (people and objects), qa4 (relations between
    /// places), qa5 (people, objects and gives). Default: qa1 alone, as the runs before probes knew other tasks; a
    /// run's samples of other tasks go without.
    #[serde(default = "qa1_only", skip_serializing_if = "is_qa1_only")]
    pub tasks: Vec<String>,
}

fn qa1_only() -> Vec<String> {
    vec!["qa1".into()]
}

fn is_qa1_only(tasks: &[String]) -> bool {
    tasks == ["qa1"]
}

/// The tasks whose stories only place people and objects, pass objects on, or relate places, so that their
/// questions have an answer after any prefix (once the fact it needs has ended).
const PROBED: [usize; 5] = [1, 2, 3, 4, 5];

impl ProbeConfig {
    /// The probed tasks must be ones probes are defined for (qa1–qa5), and the run must train at least one of them.
    pub fn check(&self, tasks: &[String]) -> Result<()> {
        for t in &self.tasks {
            if !PROBED.contains(&babi::task_number(t)?) {
                return Err(Error::Input(format!(
                    "probes are defined for qa1–qa5 (stories that place people and objects, pass objects on, or relate places), not {t}"
                )));
            }
        }
        if !self.tasks.iter().any(|t| tasks.contains(t)) {
            return Err(Error::Input(format!(
                "the probes' tasks {:?} are none of the run's tasks {tasks:?}",
                self.tasks
            )));
        }
        Ok(())
    }

    /// Whether samples of task number `task` are probed.
    pub fn probes_task(&self, task: usize) -> bool {
        self.tasks.iter().any(|t| babi::task_number(t).is_ok_and(|n| n == task))
    }
}

/// Probes after each segment of the prompt but the last (the one the question is in): for one person, object or
/// relation question drawn (with `seed`) among those the stream has answered by then, or with `cfg.every_person`
/// for each of them (people first, then objects, each by name, then the relations' and the gives' questions in
/// story order);
/// none after a segment that no fact has ended in yet.
/// `fact_positions` are the facts' token offsets in the prompt (as [`crate::babilong::sample::build`] lays them
/// out); every probe weighs `cfg.weight` over the number of probes.
pub fn probes(
    sample: &Sample,
    fact_positions: &[usize],
    prompt_len: usize,
    segment: usize,
    gen: u32,
    cfg: &ProbeConfig,
    seed: u64,
) -> Result<Vec<Probe>> {
    let tok = Tokenizer::gpt2();
    // (end offset, fact) per fact, in story order (as `build` tokenizes them)
    let mut ends = Vec::with_capacity(sample.facts.len());
    for (f, &at) in sample.facts.iter().zip(fact_positions) {
        let fact = parse_fact(f)
            .ok_or_else(|| Error::Input(format!("not a fact of bAbI tasks 1–5 (probes read those): `{f}`")))?;
        ends.push((at + tok.encode(&format!(" {f}")).len(), fact));
    }
    let mut rng = Rng::new(seed ^ 0x009b_0be5);
    let mut world = World::default();
    let mut ends = ends.into_iter().peekable();
    let mut probes = Vec::new();
    for after in 0..(prompt_len.saturating_sub(1)) / segment {
        while let Some((_, fact)) = ends.next_if(|(end, _)| *end <= (after + 1) * segment) {
            world.apply(fact);
        }
        let (people, objects) = world.places();
        let known: Vec<(String, String)> = people
            .into_iter()
            .map(|(p, place)| (format!("Where is {p}? "), place.to_string()))
            .chain(objects.into_iter().map(|(o, place)| (format!("Where is the {o}? "), place.to_string())))
            .chain(world.relation_questions())
            .chain(world.give_questions())
            .collect();
        if known.is_empty() {
            continue;
        }
        let asked: Vec<&(String, String)> = if cfg.every_person {
            known.iter().collect()
        } else {
            known.iter().skip(rng.below(known.len() as u64) as usize).take(1).collect()
        };
        for (question, place) in asked {
            let mut prompt = tok.encode(question);
            prompt.push(gen);
            probes.push(Probe { after, prompt, answer: tok.encode(place), weight: cfg.weight });
        }
    }
    let n = probes.len() as f32;
    probes.iter_mut().for_each(|p| p.weight /= n);
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::babilong::solver::solve;

    fn story(facts: &[&str]) -> Sample {
        Sample {
            task: 1,
            facts: facts.iter().map(|f| f.to_string()).collect(),
            question: "Where is Mary? ".into(),
            answer: "garden".into(),
            supporting: vec![],
        }
    }

    fn decode(t: &[u32]) -> String {
        Tokenizer::gpt2().decode(t).unwrap()
    }

    /// The probes for everyone of a `task` story whose `facts` start at `at` and end in segments `ends` of 10
    /// tokens, in a `prompt_len`-token prompt, as (after, question, answer); and the story.
    fn asked_of_everyone(
        task: usize,
        facts: &[&str],
        at: &[usize],
        ends: &[usize],
        prompt_len: usize,
    ) -> (Sample, Vec<(usize, String, String)>) {
        let s = Sample { task, facts: facts.iter().map(|f| f.to_string()).collect(), ..story(&[]) };
        let tok = Tokenizer::gpt2();
        let ended: Vec<usize> =
            facts.iter().zip(at).map(|(f, a)| (a + tok.encode(&format!(" {f}")).len() - 1) / 10).collect();
        assert_eq!(ended, ends, "the segments this test's facts end in");
        let every = ProbeConfig { weight: 1.0, every_person: true, tasks: vec![format!("qa{task}")] };
        let all = probes(&s, at, prompt_len, 10, 9999, &every, 1).unwrap();
        let asked = all.iter().map(|p| (p.after, decode(&p.prompt[..p.prompt.len() - 1]), decode(&p.answer))).collect();
        (s, asked)
    }

    /// Facts end at 6, 12 and 45 (each " Mary moved to the bathroom." is 6 tokens); segments of 10 tokens, a
    /// 57-token prompt: probes after segments 0–4 (not 5, which holds GEN). Segment 0 has no finished fact.
    #[test]
    fn probes_ask_for_the_last_place_the_stream_has_given() {
        let s = story(&["Mary moved to the bathroom.", "John went to the hallway.", "Mary moved to the garden."]);
        let one = ProbeConfig { weight: 0.5, every_person: false, tasks: qa1_only() };
        let found = probes(&s, &[0, 6, 39], 57, 10, 9999, &one, 1).unwrap();
        assert_eq!(found.iter().map(|p| p.after).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        // after segment 0 (tokens < 10) only Mary's first fact has ended
        assert_eq!(decode(&found[0].prompt[..found[0].prompt.len() - 1]), "Where is Mary? ");
        assert_eq!(decode(&found[0].answer), "bathroom");
        assert_eq!(*found[0].prompt.last().unwrap(), 9999);
        for p in &found[1..4] {
            let q = decode(&p.prompt[..p.prompt.len() - 1]);
            let want = if q.contains("Mary") { "bathroom" } else { "hallway" };
            assert_eq!(decode(&p.answer), want, "after segment {}: {q}", p.after);
        }
        // Mary's second fact ends at 45, inside segment 4
        let last = &found[4];
        if decode(&last.prompt).contains("Mary") {
            assert_eq!(decode(&last.answer), "garden");
        }
        assert!(found.iter().all(|p| (p.weight - 0.1).abs() < 1e-7), "the weight is shared");
        assert!(found.iter().any(|p| decode(&p.prompt).contains("John")), "both people get asked");
        // every person: Mary alone after segment 0, then Mary and John
        let every = ProbeConfig { weight: 0.5, every_person: true, tasks: qa1_only() };
        let all = probes(&s, &[0, 6, 39], 57, 10, 9999, &every, 1).unwrap();
        let asked: Vec<(usize, String, String)> =
            all.iter().map(|p| (p.after, decode(&p.prompt[..p.prompt.len() - 1]), decode(&p.answer))).collect();
        let want = |after, who: &str, place: &str| (after, format!("Where is {who}? "), place.to_string());
        let mut expected = vec![want(0, "Mary", "bathroom")];
        for after in 1..4 {
            expected.extend([want(after, "John", "hallway"), want(after, "Mary", "bathroom")]);
        }
        expected.extend([want(4, "John", "hallway"), want(4, "Mary", "garden")]);
        assert_eq!(asked, expected);
        assert!(all.iter().all(|p| (p.weight - 0.5 / 9.0).abs() < 1e-7));
    }

    /// qa2: objects go wherever their holder goes, stay where they are dropped, and are asked after the people.
    /// The facts start at 0, 6, 21, 30 and 40 (haystack between them) and end in segments 0, 1, 2, 3 and 4 of 10
    /// tokens; a 51-token prompt: probes after segments 0–4.
    #[test]
    fn probes_follow_objects_with_their_holders() {
        let facts = [
            "Mary moved to the bathroom.",
            "Mary picked up the football there.",
            "Mary went to the garden.",
            "Mary dropped the football.",
            "Mary travelled to the kitchen.",
        ];
        let (_, asked) = asked_of_everyone(2, &facts, &[0, 6, 21, 30, 40], &[0, 1, 2, 3, 4], 51);
        let q = |after, question: &str, place: &str| (after, question.to_string(), place.to_string());
        assert_eq!(
            asked,
            [
                q(0, "Where is Mary? ", "bathroom"),
                q(1, "Where is Mary? ", "bathroom"),
                q(1, "Where is the football? ", "bathroom"), // picked up where she is
                q(2, "Where is Mary? ", "garden"),
                q(2, "Where is the football? ", "garden"), // carried along
                q(3, "Where is Mary? ", "garden"),
                q(3, "Where is the football? ", "garden"), // dropped
                q(4, "Where is Mary? ", "kitchen"),
                q(4, "Where is the football? ", "garden"), // left behind
            ]
        );
    }

    /// qa4: after each relation has ended, both question forms about both of its places, each answered as the
    /// solver answers that question from the facts ended so far. Facts at 0 and 20 end in segments 0 and 2 of 10
    /// tokens; a 41-token prompt: probes after segments 0–3.
    #[test]
    fn probes_ask_the_relations_both_ways() {
        let facts = ["The office is north of the kitchen.", "The garden is south of the kitchen."];
        let (s, asked) = asked_of_everyone(4, &facts, &[0, 20], &[0, 2], 41);
        let first = [
            ("What is north of the kitchen? ", "office"),
            ("What is the kitchen south of? ", "office"),
            ("What is south of the office? ", "kitchen"),
            ("What is the office north of? ", "kitchen"),
        ];
        let second = [
            ("What is south of the kitchen? ", "garden"),
            ("What is the kitchen north of? ", "garden"),
            ("What is north of the garden? ", "kitchen"),
            ("What is the garden south of? ", "kitchen"),
        ];
        let mut want = Vec::new();
        for (after, qs) in [(0, &first[..]), (1, &first), (2, &first), (2, &second), (3, &first), (3, &second)] {
            want.extend(qs.iter().map(|(q, a)| (after, q.to_string(), a.to_string())));
        }
        assert_eq!(asked, want);
        // the solver, which answers the benchmark's questions, agrees with every probe
        for (after, q, a) in &asked {
            let ended = if *after < 2 { &s.facts[..1] } else { &s.facts[..] };
            assert_eq!(solve(ended, q).as_deref(), Some(a.as_str()), "{q}");
        }
    }

    /// qa5: after each give has ended, its five question forms, each answered by the latest give that fits, as the
    /// solver answers it; the people and the object are asked first, as in qa2. Facts at 0, 10, 20, 30 and 40 end
    /// in segments 0–4 of 10 tokens; a 51-token prompt: probes after segments 0–4.
    #[test]
    fn probes_ask_who_gave_what_to_whom() {
        let facts = [
            "Mary moved to the kitchen.",
            "Bill went to the kitchen.",
            "Mary got the apple there.",
            "Mary gave the apple to Bill.",
            "Bill handed the apple to Mary.",
        ];
        let (s, asked) = asked_of_everyone(5, &facts, &[0, 10, 20, 30, 40], &[0, 1, 2, 3, 4], 51);
        let gives: Vec<(usize, &str, &str)> =
            asked.iter().filter(|(_, q, _)| !q.starts_with("Where")).map(|(a, q, x)| (*a, &q[..], &x[..])).collect();
        let mary_to_bill = [
            (3, "What did Mary give to Bill? ", "apple"),
            (3, "Who gave the apple to Bill? ", "Mary"),
            (3, "Who gave the apple? ", "Mary"),
            (3, "Who received the apple? ", "Bill"),
            (3, "Who did Mary give the apple to? ", "Bill"),
        ];
        let and_back = [
            (4, "What did Mary give to Bill? ", "apple"),
            (4, "Who gave the apple to Bill? ", "Mary"),
            (4, "Who gave the apple? ", "Bill"), // the latest give of the apple
            (4, "Who received the apple? ", "Mary"),
            (4, "Who did Mary give the apple to? ", "Bill"),
            (4, "What did Bill give to Mary? ", "apple"),
            (4, "Who gave the apple to Mary? ", "Bill"),
            (4, "Who did Bill give the apple to? ", "Mary"),
        ];
        assert_eq!(gives, [&mary_to_bill[..], &and_back].concat());
        assert!(asked.contains(&(4, "Where is the apple? ".into(), "kitchen".into())));
        // the solver, which answers the benchmark's questions, agrees with every probe
        for (after, q, a) in &asked {
            assert_eq!(solve(&s.facts[..=*after], q).as_deref(), Some(a.as_str()), "after {after}: {q}");
        }
    }

    #[test]
    fn unknown_facts_and_tasks_without_probes_are_refused() {
        let s = story(&["Mary picked up the apple there"]);
        let cfg = ProbeConfig { weight: 1.0, every_person: false, tasks: qa1_only() };
        assert!(probes(&s, &[0], 40, 10, 1, &cfg, 0).unwrap_err().to_string().contains("not a fact"));
        assert!(cfg.check(&["qa1".into()]).is_ok());
        // beside qa1, other tasks' samples go without probes (trainer's probes_ask_only_the_samples_of_their_tasks)
        assert!(cfg.check(&["qa1".into(), "qa4".into()]).is_ok());
        assert!(cfg.check(&["qa4".into()]).unwrap_err().to_string().contains("none of the run's tasks"));
        let qa6 = ProbeConfig { tasks: vec!["qa6".into()], ..cfg };
        assert!(qa6.check(&["qa6".into()]).unwrap_err().to_string().contains("not qa6"));
    }
}
