//! A world simulation for bAbI tasks 1–5: it reads the facts the way the task generator wrote them and derives
//! the answer. It checks the real files and the built-in generators against each other.

use std::collections::HashMap;

/// One fact of tasks 1–5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    /// `P went to the L.` (and moved, journeyed, travelled, went back).
    #[allow(missing_docs)]
    Move { person: String, place: String },
    /// `P got the O (there).` (and grabbed, picked up, took).
    #[allow(missing_docs)]
    Take { person: String, object: String },
    /// `P dropped the O (there).` (and put down, left, discarded).
    #[allow(missing_docs)]
    Drop { person: String, object: String },
    /// `P gave the O to Q.` (and handed, passed).
    #[allow(missing_docs)]
    Give { giver: String, object: String, receiver: String },
    /// `The A is D of the B.`
    #[allow(missing_docs)]
    Relation { a: String, direction: String, b: String },
}

const MOVE: [&str; 5] = ["moved", "went", "journeyed", "travelled", "went back"];
const TAKE: [&str; 4] = ["got", "grabbed", "picked up", "took"];
const DROP: [&str; 4] = ["dropped", "put down", "left", "discarded"];
const GIVE: [&str; 3] = ["gave", "handed", "passed"];

/// Reads a fact sentence; `None` if it is not one of the tasks' templates.
pub fn parse_fact(sentence: &str) -> Option<Fact> {
    let s = sentence.trim().strip_suffix('.')?;
    if let Some(rest) = s.strip_prefix("The ") {
        let (a, rest) = rest.split_once(" is ")?;
        let (direction, b) = rest.split_once(" of the ")?;
        return Some(Fact::Relation { a: a.into(), direction: direction.into(), b: b.into() });
    }
    let (person, rest) = s.split_once(' ')?;
    let person = person.to_string();
    for verb in MOVE {
        if let Some(place) = rest.strip_prefix(verb).and_then(|r| r.strip_prefix(" to the ")) {
            return Some(Fact::Move { person, place: place.into() });
        }
    }
    for verb in GIVE {
        if let Some(r) = rest.strip_prefix(verb).and_then(|r| r.strip_prefix(" the ")) {
            let (object, receiver) = r.split_once(" to ")?;
            return Some(Fact::Give { giver: person, object: object.into(), receiver: receiver.into() });
        }
    }
    let object_of = |verb: &str| {
        let o = rest.strip_prefix(verb)?.strip_prefix(" the ")?;
        Some(o.strip_suffix(" there").unwrap_or(o).to_string())
    };
    if let Some(object) = TAKE.iter().find_map(|v| object_of(v)) {
        return Some(Fact::Take { person, object });
    }
    DROP.iter().find_map(|v| object_of(v)).map(|object| Fact::Drop { person, object })
}

/// The direction opposite `direction` (`None` for a word that is not one).
pub(super) fn opposite(direction: &str) -> Option<&'static str> {
    Some(match direction {
        "north" => "south",
        "south" => "north",
        "east" => "west",
        "west" => "east",
        _ => return None,
    })
}

/// (name, place) pairs, sorted by name.
pub(crate) type Places<'a> = Vec<(&'a str, &'a str)>;

/// A map's entries sorted by key.
fn sorted_pairs(m: &HashMap<String, String>) -> Places<'_> {
    let mut v: Places<'_> = m.iter().map(|(k, p)| (k.as_str(), p.as_str())).collect();
    v.sort_unstable();
    v
}

/// The world after a sequence of facts.
#[derive(Default)]
pub(crate) struct World {
    place: HashMap<String, String>,
    holder: HashMap<String, String>,
    object_place: HashMap<String, String>,
    /// Every place an object has been, consecutive repeats collapsed (qa3).
    history: HashMap<String, Vec<String>>,
    gives: Vec<(String, String, String)>,
    relations: Vec<(String, String, String)>,
}

impl World {
    fn object_at(&mut self, object: &str, place: Option<String>) {
        let Some(place) = place else { return };
        self.object_place.insert(object.to_string(), place.clone());
        let h = self.history.entry(object.to_string()).or_default();
        if h.last() != Some(&place) {
            h.push(place);
        }
    }

    /// Where each person is, and each object whose place is known, as (name, place) sorted by name.
    pub(crate) fn places(&self) -> (Places<'_>, Places<'_>) {
        (sorted_pairs(&self.place), sorted_pairs(&self.object_place))
    }

    pub(crate) fn apply(&mut self, fact: Fact) {
        match fact {
            Fact::Move { person, place } => {
                self.place.insert(person.clone(), place.clone());
                let carried: Vec<String> =
                    self.holder.iter().filter(|(_, h)| **h == person).map(|(o, _)| o.clone()).collect();
                for o in carried {
                    self.object_at(&o, Some(place.clone()));
                }
            }
            Fact::Take { person, object } => {
                let at = self.place.get(&person).cloned();
                self.holder.insert(object.clone(), person);
                self.object_at(&object, at);
            }
            Fact::Drop { person, object } => {
                self.holder.remove(&object);
                let at = self.place.get(&person).cloned();
                self.object_at(&object, at);
            }
            Fact::Give { giver, object, receiver } => {
                let at = self.place.get(&receiver).cloned();
                self.holder.insert(object.clone(), receiver.clone());
                self.object_at(&object, at);
                self.gives.push((giver, object, receiver));
            }
            Fact::Relation { a, direction, b } => self.relations.push((a, direction, b)),
        }
    }

    /// Every question the stated relations answer (qa4's two forms, about each side of each relation), with its
    /// answer as [`solve`] gives it, in the order the relations were stated; a question is listed once.
    pub(crate) fn relation_questions(&self) -> Vec<(String, String)> {
        let mut asked = Vec::new();
        for (a, d, b) in &self.relations {
            let Some(opp) = opposite(d) else { continue };
            // "a is d of b" ⇔ "b is opp of a": two forms name what is d of b, two what is opp of a
            let (of_b, of_a) = (self.is_dir_of(d, b), self.is_dir_of(opp, a));
            ask_once(&mut asked, format!("What is {d} of the {b}? "), &of_b);
            ask_once(&mut asked, format!("What is the {b} {opp} of? "), &of_b);
            ask_once(&mut asked, format!("What is {opp} of the {a}? "), &of_a);
            ask_once(&mut asked, format!("What is the {a} {d} of? "), &of_a);
        }
        asked
    }

    /// Every question the gives so far answer (qa5's five forms about each give), with its answer as [`solve`]
    /// gives it (the latest give that fits), in the order of the gives; a question is listed once.
    pub(crate) fn give_questions(&self) -> Vec<(String, String)> {
        let mut asked = Vec::new();
        for (g, o, r) in &self.gives {
            ask_once(&mut asked, format!("What did {g} give to {r}? "), &self.given(g, r));
            ask_once(&mut asked, format!("Who gave the {o} to {r}? "), &self.giver(o, Some(r)));
            ask_once(&mut asked, format!("Who gave the {o}? "), &self.giver(o, None));
            ask_once(&mut asked, format!("Who received the {o}? "), &self.receiver(None, o));
            ask_once(&mut asked, format!("Who did {g} give the {o} to? "), &self.receiver(Some(g), o));
        }
        asked
    }

    /// `X` such that "X is `direction` of `b`", from a stated or an inverse fact.
    fn is_dir_of(&self, direction: &str, b: &str) -> Option<String> {
        let opp = opposite(direction)?;
        self.relations.iter().rev().find_map(|(x, d, y)| {
            if d == direction && y == b {
                Some(x.clone())
            } else if d == opp && x == b {
                Some(y.clone())
            } else {
                None
            }
        })
    }

    /// The latest give that `keep` accepts, as (giver, object, receiver).
    fn last_give(&self, keep: impl Fn(&(String, String, String)) -> bool) -> Option<&(String, String, String)> {
        self.gives.iter().rev().find(|g| keep(g))
    }

    /// What `giver` last gave to `receiver`.
    fn given(&self, giver: &str, receiver: &str) -> Option<String> {
        self.last_give(|g| g.0 == giver && g.2 == receiver).map(|g| g.1.clone())
    }

    /// Who last gave `object` (to `receiver`, if named).
    fn giver(&self, object: &str, receiver: Option<&str>) -> Option<String> {
        self.last_give(|g| g.1 == object && receiver.is_none_or(|r| g.2 == r)).map(|g| g.0.clone())
    }

    /// Who last received `object` (from `giver`, if named).
    fn receiver(&self, giver: Option<&str>, object: &str) -> Option<String> {
        self.last_give(|g| g.1 == object && giver.is_none_or(|x| g.0 == x)).map(|g| g.2.clone())
    }
}

/// Adds `question` with its `answer` to `asked` unless it has no answer or is there already.
fn ask_once(asked: &mut Vec<(String, String)>, question: String, answer: &Option<String>) {
    if let Some(answer) = answer {
        if !asked.iter().any(|(q, _)| *q == question) {
            asked.push((question, answer.clone()));
        }
    }
}

/// Derives the answer to a question of tasks 1–5 from the facts before it; `None` if a fact or the question is
/// outside the templates, or the facts do not determine the answer.
pub fn solve(facts: &[String], question: &str) -> Option<String> {
    let mut w = World::default();
    for f in facts {
        w.apply(parse_fact(f)?);
    }
    let q = question.trim().strip_suffix('?')?;
    if let Some(rest) = q.strip_prefix("Where was the ") {
        let (object, before) = rest.split_once(" before the ")?;
        let h = w.history.get(object)?;
        let i = h.iter().rposition(|p| p == before)?;
        return h.get(i.checked_sub(1)?).cloned();
    }
    if let Some(object) = q.strip_prefix("Where is the ") {
        return match w.holder.get(object) {
            Some(person) => w.place.get(person).cloned(),
            None => w.object_place.get(object).cloned(),
        };
    }
    if let Some(person) = q.strip_prefix("Where is ") {
        return w.place.get(person).cloned();
    }
    if let Some(rest) = q.strip_prefix("What is the ") {
        // "What is the A D of?": Y with "A is D of Y", i.e. A is D of Y ⇔ Y is opposite(D) of A
        let (a, direction) = rest.strip_suffix(" of")?.split_once(' ')?;
        return w.is_dir_of(opposite(direction)?, a);
    }
    if let Some(rest) = q.strip_prefix("What is ") {
        let (direction, b) = rest.split_once(" of the ")?;
        return w.is_dir_of(direction, b);
    }
    if let Some(rest) = q.strip_prefix("What did ") {
        let (giver, receiver) = rest.split_once(" give to ")?;
        return w.given(giver, receiver);
    }
    if let Some(rest) = q.strip_prefix("Who gave the ") {
        return match rest.split_once(" to ") {
            Some((object, receiver)) => w.giver(object, Some(receiver)),
            None => w.giver(rest, None),
        };
    }
    if let Some(object) = q.strip_prefix("Who received the ") {
        return w.receiver(None, object);
    }
    if let Some(rest) = q.strip_prefix("Who did ") {
        let (giver, object) = rest.strip_suffix(" to")?.split_once(" give the ")?;
        return w.receiver(Some(giver), object);
    }
    None
}
