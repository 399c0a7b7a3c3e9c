//! qa1's structure, as the training aids read it: every fact reads "{person} {verb …} the {place}.", and the
//! answer to "Where is P?" is the place of P's last fact.

use crate::babilong::babi::Sample;
use crate::error::{Error, Result};

/// The training aids that read qa1's facts are defined for qa1 alone: `what` names the aid in the error.
pub fn check_tasks(what: &str, tasks: &[String]) -> Result<()> {
    if tasks.iter().any(|t| t != "qa1") {
        return Err(Error::Input(format!(
            "{what} are defined for qa1 (facts \"{{person}} … the {{place}}.\"); the run has tasks {tasks:?}"
        )));
    }
    Ok(())
}

/// The person and place of a qa1 fact ("Mary moved to the bathroom." → Mary, bathroom).
pub fn person_and_place(fact: &str) -> Result<(&str, &str)> {
    let words: Vec<&str> = fact.split_whitespace().collect();
    match (words.first(), words.last()) {
        (Some(p), Some(place)) if words.len() >= 3 && place.ends_with('.') => Ok((p, place.trim_end_matches('.'))),
        _ => Err(Error::Input(format!("not a qa1 fact (\"{{person}} … the {{place}}.\"): `{fact}`"))),
    }
}

/// Whether the story's last fact is about the asked person: then "the latest place the stream named" answers the
/// question, and a memory that keeps no more than that scores on it. About half of qa1's questions are such.
pub fn asks_the_latest_mover(sample: &Sample) -> Result<bool> {
    let last = sample.facts.last().ok_or_else(|| Error::Input("a qa1 sample without facts".into()))?;
    let (person, _) = person_and_place(last)?;
    let asked = sample.question.trim().trim_start_matches("Where is ").trim_end_matches('?');
    Ok(asked == person)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn story(facts: &[&str], question: &str) -> Sample {
        Sample {
            task: 1,
            facts: facts.iter().map(|f| f.to_string()).collect(),
            question: question.into(),
            answer: String::new(),
            supporting: vec![],
        }
    }

    #[test]
    fn the_latest_mover_is_the_person_of_the_last_fact() {
        let facts = ["Mary moved to the bathroom.", "John went back to the hallway."];
        assert!(asks_the_latest_mover(&story(&facts, "Where is John? ")).unwrap());
        assert!(!asks_the_latest_mover(&story(&facts, "Where is Mary? ")).unwrap());
        assert!(asks_the_latest_mover(&story(&[], "Where is Mary? ")).is_err());
        assert!(asks_the_latest_mover(&story(&["Mary picked up the apple there"], "Where is Mary? ")).is_err());
    }

    #[test]
    fn only_qa1_is_accepted() {
        assert!(check_tasks("hard questions", &["qa1".into()]).is_ok());
        let e = check_tasks("hard questions", &["qa1".into(), "qa2".into()]).unwrap_err().to_string();
        assert!(e.contains("hard questions are defined for qa1"), "{e}");
    }
}
