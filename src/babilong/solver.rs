//! A world simulation for bAbI tasks 1–5: it reads the facts the way the task generator wrote them and derives
//! the answer and the facts it rests on. It checks the real files and the built-in generators against each other.

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
fn sorted_pairs(m: &HashMap<String, Sourced>) -> Places<'_> {
    let mut v: Places<'_> = m.iter().map(|(k, p)| (k.as_str(), p.0.as_str())).collect();
    v.sort_unstable();
    v
}

/// A value with the index of the fact it comes from.
type Sourced = (String, usize);

/// The world after a sequence of facts, each value with the fact that set it (bAbI's supporting facts).
#[derive(Default)]
pub(crate) struct World {
    /// Facts applied so far: the index of the next one.
    applied: usize,
    /// Where each person is, by their latest move.
    place: HashMap<String, Sourced>,
    holder: HashMap<String, String>,
    /// Where each object is, by the move that took its carrier there.
    object_place: HashMap<String, Sourced>,
    /// Each object's latest pick-up, put-down or give.
    handled: HashMap<String, usize>,
    /// Every place an object has been, by the move that took it there; consecutive repeats collapsed (qa3).
    history: HashMap<String, Vec<Sourced>>,
    gives: Vec<(String, String, String, usize)>,
    relations: Vec<(String, String, String, usize)>,
}

impl World {
    fn object_at(&mut self, object: &str, place: Option<Sourced>) {
        let Some(place) = place else { return };
        self.object_place.insert(object.to_string(), place.clone());
        let h = self.history.entry(object.to_string()).or_default();
        if h.last().map(|p| &p.0) != Some(&place.0) {
            h.push(place);
        }
    }

    /// Where each person is, and each object whose place is known, as (name, place) sorted by name.
    pub(crate) fn places(&self) -> (Places<'_>, Places<'_>) {
        (sorted_pairs(&self.place), sorted_pairs(&self.object_place))
    }

    pub(crate) fn apply(&mut self, fact: Fact) {
        let at = self.applied;
        self.applied += 1;
        match fact {
            Fact::Move { person, place } => {
                self.place.insert(person.clone(), (place.clone(), at));
                let carried: Vec<String> =
                    self.holder.iter().filter(|(_, h)| **h == person).map(|(o, _)| o.clone()).collect();
                for o in carried {
                    self.object_at(&o, Some((place.clone(), at)));
                }
            }
            Fact::Take { person, object } => {
                let there = self.place.get(&person).cloned();
                self.holder.insert(object.clone(), person);
                self.handled.insert(object.clone(), at);
                self.object_at(&object, there);
            }
            Fact::Drop { person, object } => {
                self.holder.remove(&object);
                self.handled.insert(object.clone(), at);
                let there = self.place.get(&person).cloned();
                self.object_at(&object, there);
            }
            Fact::Give { giver, object, receiver } => {
                let there = self.place.get(&receiver).cloned();
                self.holder.insert(object.clone(), receiver.clone());
                self.handled.insert(object.clone(), at);
                self.object_at(&object, there);
                self.gives.push((giver, object, receiver, at));
            }
            Fact::Relation { a, direction, b } => self.relations.push((a, direction, b, at)),
        }
    }

    /// Every question the stated relations answer (qa4's two forms, about each side of each relation), with its
    /// answer as [`solve`] gives it, in the order the relations were stated; a question is listed once.
    pub(crate) fn relation_questions(&self) -> Vec<(String, String)> {
        let mut asked = Vec::new();
        for (a, d, b, _) in &self.relations {
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
        for (g, o, r, _) in &self.gives {
            ask_once(&mut asked, format!("What did {g} give to {r}? "), &self.given(g, r));
            ask_once(&mut asked, format!("Who gave the {o} to {r}? "), &self.giver(o, Some(r)));
            ask_once(&mut asked, format!("Who gave the {o}? "), &self.giver(o, None));
            ask_once(&mut asked, format!("Who received the {o}? "), &self.receiver(None, o));
            ask_once(&mut asked, format!("Who did {g} give the {o} to? "), &self.receiver(Some(g), o));
        }
        asked
    }

    /// `X` such that "X is `direction` of `b`", from a stated or an inverse fact.
    fn is_dir_of(&self, direction: &str, b: &str) -> Option<Sourced> {
        let opp = opposite(direction)?;
        self.relations.iter().rev().find_map(|(x, d, y, at)| {
            if d == direction && y == b {
                Some((x.clone(), *at))
            } else if d == opp && x == b {
                Some((y.clone(), *at))
            } else {
                None
            }
        })
    }

    /// Field `pick` (0 giver, 1 object, 2 receiver) of the latest give that `keep` accepts, with that give.
    fn last_give(&self, keep: impl Fn(&str, &str, &str) -> bool, pick: usize) -> Option<Sourced> {
        let (g, o, r, at) = self.gives.iter().rev().find(|(g, o, r, _)| keep(g, o, r))?;
        Some(([g, o, r][pick].clone(), *at))
    }

    /// What `giver` last gave to `receiver`.
    fn given(&self, giver: &str, receiver: &str) -> Option<Sourced> {
        self.last_give(|g, _, r| g == giver && r == receiver, 1)
    }

    /// Who last gave `object` (to `receiver`, if named).
    fn giver(&self, object: &str, receiver: Option<&str>) -> Option<Sourced> {
        self.last_give(|_, o, r| o == object && receiver.is_none_or(|x| r == x), 0)
    }

    /// Who last received `object` (from `giver`, if named).
    fn receiver(&self, giver: Option<&str>, object: &str) -> Option<Sourced> {
        self.last_give(|g, o, _| o == object && giver.is_none_or(|x| g == x), 2)
    }

    /// Where `object` is (qa2): its latest pick-up or put-down, then the move that took it there.
    fn object_is(&self, object: &str) -> Option<Derived> {
        let (place, moved) = match self.holder.get(object) {
            Some(person) => self.place.get(person),
            None => self.object_place.get(object),
        }?;
        Some(Derived { answer: place.clone(), supporting: vec![*self.handled.get(object)?, *moved] })
    }

    /// Where `object` was before `before` (qa3): its latest pick-up or put-down, the move that took it to `before`
    /// (the latest time), and the move that took it to the place before that.
    fn object_was(&self, object: &str, before: &str) -> Option<Derived> {
        let h = self.history.get(object)?;
        let i = h.iter().rposition(|p| p.0 == before)?;
        let (answer, from) = h.get(i.checked_sub(1)?)?;
        Some(Derived { answer: answer.clone(), supporting: vec![*self.handled.get(object)?, h[i].1, *from] })
    }
}

/// Adds `question` with its `answer` to `asked` unless it has no answer or is there already.
fn ask_once(asked: &mut Vec<(String, String)>, question: String, answer: &Option<Sourced>) {
    if let Some((answer, _)) = answer {
        if !asked.iter().any(|(q, _)| *q == question) {
            asked.push((question, answer.clone()));
        }
    }
}

/// An answer with the facts it rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    /// The answer (`"bathroom"`).
    pub answer: String,
    /// Indices into the story's facts of the supporting facts, in the order the bAbI files list them.
    pub supporting: Vec<usize>,
}

/// Derives the answer to a question of tasks 1–5 from the facts before it; `None` if a fact or the question is
/// outside the templates, or the facts do not determine the answer.
pub fn solve(facts: &[String], question: &str) -> Option<String> {
    derive(facts, question).map(|d| d.answer)
}

/// [`solve`], with the supporting facts as the bAbI generator names them: the asked person's latest move (qa1);
/// the object's latest pick-up or put-down and the move that took it to its place (qa2); that pick-up or put-down,
/// the move to the place asked about and the move to the place before it (qa3); the relation (qa4); the give (qa5).
///
/// ```
/// use rmt_fast::babilong::solver::derive;
/// let facts = ["Mary went to the garden.", "John took the milk there.", "Mary moved to the office."].map(String::from);
/// let d = derive(&facts, "Where is Mary? ").unwrap();
/// assert_eq!((d.answer.as_str(), &d.supporting[..]), ("office", &[2][..]));
/// ```
pub fn derive(facts: &[String], question: &str) -> Option<Derived> {
    let mut w = World::default();
    for f in facts {
        w.apply(parse_fact(f)?);
    }
    let q = question.trim().strip_suffix('?')?;
    let single = |found: Option<Sourced>| found.map(|(answer, at)| Derived { answer, supporting: vec![at] });
    if let Some(rest) = q.strip_prefix("Where was the ") {
        let (object, before) = rest.split_once(" before the ")?;
        return w.object_was(object, before);
    }
    if let Some(object) = q.strip_prefix("Where is the ") {
        return w.object_is(object);
    }
    if let Some(person) = q.strip_prefix("Where is ") {
        return single(w.place.get(person).cloned());
    }
    if let Some(rest) = q.strip_prefix("What is the ") {
        // "What is the A D of?": Y with "A is D of Y", i.e. A is D of Y ⇔ Y is opposite(D) of A
        let (a, direction) = rest.strip_suffix(" of")?.split_once(' ')?;
        return single(w.is_dir_of(opposite(direction)?, a));
    }
    if let Some(rest) = q.strip_prefix("What is ") {
        let (direction, b) = rest.split_once(" of the ")?;
        return single(w.is_dir_of(direction, b));
    }
    if let Some(rest) = q.strip_prefix("What did ") {
        let (giver, receiver) = rest.split_once(" give to ")?;
        return single(w.given(giver, receiver));
    }
    if let Some(rest) = q.strip_prefix("Who gave the ") {
        return single(match rest.split_once(" to ") {
            Some((object, receiver)) => w.giver(object, Some(receiver)),
            None => w.giver(rest, None),
        });
    }
    if let Some(object) = q.strip_prefix("Who received the ") {
        return single(w.receiver(None, object));
    }
    if let Some(rest) = q.strip_prefix("Who did ") {
        let (giver, object) = rest.strip_suffix(" to")?.split_once(" give the ")?;
        return single(w.receiver(Some(giver), object));
    }
    None
}
