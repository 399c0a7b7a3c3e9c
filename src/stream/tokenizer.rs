//! GPT-2's byte-level BPE (r50k ranks, embedded: exact and offline), with streaming file tokenization.

use std::io::Read;
use std::path::Path;

use tiktoken_rs::CoreBPE;

use super::tokens::TokenWriter;
use crate::error::{Error, Result};

/// GPT-2's tokenizer.
pub struct Tokenizer {
    bpe: &'static CoreBPE,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::gpt2()
    }
}

impl Tokenizer {
    /// GPT-2's BPE (`<|endoftext|>` = 50256 is never produced from text: special tokens are not parsed).
    pub fn gpt2() -> Self {
        Tokenizer { bpe: tiktoken_rs::r50k_base_singleton() }
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// Text of `tokens`; bytes that are not valid UTF-8 on their own become U+FFFD, ids outside the vocabulary
    /// an error.
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(tokens)?).into_owned())
    }

    /// The exact bytes of `tokens` (a token may hold part of a UTF-8 character).
    pub fn decode_bytes(&self, tokens: &[u32]) -> Result<Vec<u8>> {
        self.bpe.decode_bytes(tokens).map_err(|e| Error::Input(format!("cannot decode: {e:?}")))
    }

    /// Tokenizes a UTF-8 text file of any size into `out` at flat memory; `progress` gets the bytes read so far.
    /// Returns the number of tokens written.
    pub fn encode_file(&self, input: &Path, out: &mut TokenWriter, mut progress: impl FnMut(u64)) -> Result<u64> {
        const BLOCK: usize = 4 << 20;
        let mut file = std::fs::File::open(input).map_err(|e| Error::io(input, e))?;
        let mut pending: Vec<u8> = Vec::new(); // read but not yet tokenized
        let mut consumed: u64 = 0; // bytes tokenized so far
        let mut read_total: u64 = 0;
        let mut block = vec![0u8; BLOCK];
        loop {
            let n = file.read(&mut block).map_err(|e| Error::io(input, e))?;
            read_total += n as u64;
            pending.extend_from_slice(&block[..n]);
            let valid = match std::str::from_utf8(&pending) {
                Ok(s) => s.len(),
                Err(e) if e.error_len().is_some() || n == 0 => {
                    return Err(Error::Input(format!(
                        "{}: not UTF-8 text (byte offset {})",
                        input.display(),
                        consumed + e.valid_up_to() as u64
                    )))
                }
                Err(e) => e.valid_up_to(), // a character cut by the block boundary: finish it next time
            };
            let text = std::str::from_utf8(&pending[..valid]).expect("checked above");
            let cut = if n == 0 { valid } else { safe_split(text) };
            out.write(&self.encode(&text[..cut]))?;
            consumed += cut as u64;
            pending.drain(..cut);
            progress(read_total);
            if n == 0 {
                return Ok(out.count());
            }
        }
    }
}

/// The last byte index where tokenizing the two halves separately equals tokenizing the whole: before a single
/// space that sits between two non-space characters. GPT-2's pre-tokenizer always starts a new piece at such a
/// space (` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`) and no piece before it can extend past it. Returns 0 if
/// the text has no such place yet.
fn safe_split(text: &str) -> usize {
    let b = text.as_bytes();
    (1..b.len().saturating_sub(1))
        .rev()
        .find(|&i| {
            b[i] == b' ' && !b[i - 1].is_ascii_whitespace() && !b[i + 1].is_ascii_whitespace() && is_plain(text, i)
        })
        .unwrap_or(0)
}

/// The neighbours of the space are not Unicode whitespace either (multi-byte spaces such as U+00A0 count as
/// whitespace to the pre-tokenizer's `\s`).
fn is_plain(text: &str, i: usize) -> bool {
    let before = text[..i].chars().next_back();
    let after = text[i + 1..].chars().next();
    !before.is_some_and(char::is_whitespace) && !after.is_some_and(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids() {
        let t = Tokenizer::gpt2();
        assert_eq!(t.encode("Hello world"), [15496, 995]);
        assert_eq!(t.encode(" Mary went to the kitchen."), [5335, 1816, 284, 262, 9592, 13]);
        assert_eq!(t.encode("GEN")[0], 35353);
        assert_eq!(t.encode("bathroom"), [37648, 3823]);
        assert_eq!(t.decode(&[5335, 1816, 284, 262, 9592, 13]).unwrap(), " Mary went to the kitchen.");
    }

    #[test]
    fn split_points_keep_tokenization() {
        let t = Tokenizer::gpt2();
        let text = "It is a truth universally acknowledged,  that a single man\n\nin possession of a good fortune… \u{a0}x 12 34";
        for cut in (1..text.len()).filter(|&c| text.is_char_boundary(c)) {
            let i = safe_split(&text[..cut]);
            if i > 0 {
                let mut two = t.encode(&text[..i]);
                two.extend(t.encode(&text[i..]));
                assert_eq!(two, t.encode(text), "split at {i}");
            }
        }
    }
}
