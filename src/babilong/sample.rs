//! The BABILong sample builder (RMT-SPEC §4.4): a bAbI sample's facts hidden in background sentences, in order,
//! the context exactly the requested number of GPT-2 tokens, then the question and `GEN` (RMT format, §1.6).
//! Built streaming: a 10M-token context is written as it is made, never held in memory.

use super::babi::Sample;
use super::haystack::Sampler;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::stream::tokenizer::Tokenizer;

/// Tokens reserved for an LLM prompt template in the LLM variant (RMT-SPEC §4.5: "1k" = 700 context tokens).
pub const LLM_PROMPT_RESERVE: usize = 300;

/// A length of the grid (`0k 1k … 512k 1M 10M`, decimal thousands as in §4.5) or a plain token count.
pub fn parse_length(s: &str) -> Result<usize> {
    let bad = || Error::Input(format!("bad length `{s}` (e.g. 0k, 4k, 128k, 1M, 10M or a token count)"));
    let (num, mult) = match s.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1_000),
        None => match s.strip_suffix('M') {
            Some(n) => (n, 1_000_000),
            None => (s, 1),
        },
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(bad());
    }
    Ok((n * mult as f64).round() as usize)
}

/// Where a built sample's parts are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Context tokens (facts + background).
    pub context_tokens: usize,
    /// Token offset of each fact in the context, in story order.
    pub fact_positions: Vec<usize>,
    /// Question tokens (as bAbI writes the question).
    pub question: Vec<u32>,
    /// Answer tokens (no leading space, no EOS).
    pub target: Vec<u32>,
}

/// Builds one sample of `length` context tokens (minus [`LLM_PROMPT_RESERVE`] with `llm_prompt`; 0 = the facts
/// alone). The context goes to `emit` in pieces; the question and target are returned with the layout.
pub fn build(
    sample: &Sample,
    length: usize,
    llm_prompt: bool,
    background: &mut Sampler<'_>,
    rng: &mut Rng,
    emit: &mut dyn FnMut(&[u32]) -> Result<()>,
) -> Result<Layout> {
    let tok = Tokenizer::gpt2();
    let facts: Vec<Vec<u32>> = sample.facts.iter().map(|f| tok.encode(&format!(" {f}"))).collect();
    let facts_len: usize = facts.iter().map(Vec::len).sum();
    let length = if llm_prompt { length.saturating_sub(LLM_PROMPT_RESERVE) } else { length };
    let background_len = match length {
        0 => 0, // "0k": the facts alone
        l if l < facts_len => {
            return Err(Error::Input(format!(
                "length {l} is smaller than the sample's {} facts ({facts_len} tokens)",
                facts.len()
            )))
        }
        l => l - facts_len,
    };
    // each fact goes before the first sentence that starts at or after a uniform offset of the background
    let mut offsets: Vec<usize> = (0..facts.len()).map(|_| rng.below(background_len as u64 + 1) as usize).collect();
    offsets.sort_unstable();
    let (mut written, mut bg, mut next) = (0usize, 0usize, 0usize);
    let mut positions = Vec::with_capacity(facts.len());
    loop {
        while next < facts.len() && offsets[next] <= bg {
            positions.push(written);
            emit(&facts[next])?;
            written += facts[next].len();
            next += 1;
        }
        if bg == background_len {
            break;
        }
        let sentence = background.next_sentence()?;
        let take = sentence.len().min(background_len - bg); // the last sentence is cut to fit exactly
        emit(&sentence[..take])?;
        written += take;
        bg += take;
    }
    Ok(Layout {
        context_tokens: written,
        fact_positions: positions,
        question: tok.encode(&sample.question),
        target: tok.encode(&sample.answer),
    })
}
