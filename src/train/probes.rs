//! Memory probes for qa1: after every segment but the last, ask the memory where one person is, as far as the
//! stream has told (see [`super::Probe`]). The final question reaches the memory only through BPTT from the end
//! of the sample; the probes give every hand-off its own target, so keeping a person's last place across many
//! segments is trained directly.
//!
//! qa1's facts all read "{person} {verb …} the {place}." ([`super::qa1`]), so the state after a prefix of the
//! stream is the last place of each person whose fact has ended in it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::qa1::person_and_place;
use super::Probe;
use crate::babilong::babi::Sample;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::stream::tokenizer::Tokenizer;

/// The `probes` section of a training config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Weight of the probes' loss: each sample's probes share it (mean over its probes).
    pub weight: f32,
    /// Ask after every segment for every person placed so far, not for one drawn at random (≈ 1 segment more of
    /// work per segment, at qa1's four people).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_person: bool,
}

impl ProbeConfig {
    /// Probes are defined for qa1's facts: a run with probes must train qa1, and other tasks' samples beside it
    /// (a qa1 + qa4 run) go without them.
    pub fn check(&self, tasks: &[String]) -> Result<()> {
        if !tasks.iter().any(|t| t == "qa1") {
            return Err(Error::Input(format!(
                "probes are defined for qa1 (facts \"{{person}} … the {{place}}.\"); the run's tasks {tasks:?} have no qa1"
            )));
        }
        Ok(())
    }
}

/// Probes after each segment of the prompt but the last (the one the question is in): for a person drawn (with
/// `seed`) among those whose place the stream has given by then, or with `cfg.every_person` for each of them; none
/// after a segment that no fact has ended in yet. `fact_positions` are the facts' token offsets in the prompt (as
/// [`crate::babilong::sample::build`] lays them out); every probe weighs `cfg.weight` over the number of probes.
pub fn qa1_probes(
    sample: &Sample,
    fact_positions: &[usize],
    prompt_len: usize,
    segment: usize,
    gen: u32,
    cfg: &ProbeConfig,
    seed: u64,
) -> Result<Vec<Probe>> {
    let tok = Tokenizer::gpt2();
    // (end offset, person, place) per fact, in story order (as `build` tokenizes them)
    let mut ends = Vec::with_capacity(sample.facts.len());
    for (f, &at) in sample.facts.iter().zip(fact_positions) {
        let (person, place) = person_and_place(f)?;
        ends.push((at + tok.encode(&format!(" {f}")).len(), person, place));
    }
    let mut rng = Rng::new(seed ^ 0x009b_0be5);
    let mut place_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut next = 0;
    let mut probes = Vec::new();
    for after in 0..(prompt_len.saturating_sub(1)) / segment {
        while next < ends.len() && ends[next].0 <= (after + 1) * segment {
            place_of.insert(ends[next].1, ends[next].2);
            next += 1;
        }
        if place_of.is_empty() {
            continue;
        }
        let asked: Vec<(&&str, &&str)> = if cfg.every_person {
            place_of.iter().collect()
        } else {
            place_of.iter().skip(rng.below(place_of.len() as u64) as usize).take(1).collect()
        };
        for (person, place) in asked {
            let mut prompt = tok.encode(&format!("Where is {person}? "));
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

    /// Facts end at 6, 12 and 45 (each " Mary moved to the bathroom." is 6 tokens); segments of 10 tokens, a
    /// 57-token prompt: probes after segments 0–4 (not 5, which holds GEN). Segment 0 has no finished fact.
    #[test]
    fn probes_ask_for_the_last_place_the_stream_has_given() {
        let s = story(&["Mary moved to the bathroom.", "John went to the hallway.", "Mary moved to the garden."]);
        let one = ProbeConfig { weight: 0.5, every_person: false };
        let probes = qa1_probes(&s, &[0, 6, 39], 57, 10, 9999, &one, 1).unwrap();
        assert_eq!(probes.iter().map(|p| p.after).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        // after segment 0 (tokens < 10) only Mary's first fact has ended
        assert_eq!(decode(&probes[0].prompt[..probes[0].prompt.len() - 1]), "Where is Mary? ");
        assert_eq!(decode(&probes[0].answer), "bathroom");
        assert_eq!(*probes[0].prompt.last().unwrap(), 9999);
        for p in &probes[1..4] {
            let q = decode(&p.prompt[..p.prompt.len() - 1]);
            let want = if q.contains("Mary") { "bathroom" } else { "hallway" };
            assert_eq!(decode(&p.answer), want, "after segment {}: {q}", p.after);
        }
        // Mary's second fact ends at 45, inside segment 4
        let last = &probes[4];
        if decode(&last.prompt).contains("Mary") {
            assert_eq!(decode(&last.answer), "garden");
        }
        assert!(probes.iter().all(|p| (p.weight - 0.1).abs() < 1e-7), "the weight is shared");
        assert!(probes.iter().any(|p| decode(&p.prompt).contains("John")), "both people get asked");
        // every person: Mary alone after segment 0, then Mary and John
        let every = ProbeConfig { weight: 0.5, every_person: true };
        let all = qa1_probes(&s, &[0, 6, 39], 57, 10, 9999, &every, 1).unwrap();
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

    #[test]
    fn non_qa1_facts_and_runs_without_qa1_are_refused() {
        let s = story(&["Mary picked up the apple there"]);
        let cfg = ProbeConfig { weight: 1.0, every_person: false };
        assert!(qa1_probes(&s, &[0], 40, 10, 1, &cfg, 0).unwrap_err().to_string().contains("not a qa1 fact"));
        assert!(cfg.check(&["qa1".into()]).is_ok());
        // beside qa1, other tasks' samples go without probes (trainer's probes_ask_only_the_qa1_samples_of_a_mixed_run)
        assert!(cfg.check(&["qa1".into(), "qa4".into()]).is_ok());
        assert!(cfg.check(&["qa4".into()]).unwrap_err().to_string().contains("have no qa1"));
    }
}
