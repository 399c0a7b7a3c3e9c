//! The recurrence (RMT-SPEC §1.4–1.7, §2.2): memory hand-off between segments, the RMT-R store, the tail of a
//! stream that does not fill a segment yet, and answering questions with greedy decoding.
//!
//! After reading N tokens, ⌊N / segment_size⌋ full segments have been processed with write memory and the rest
//! is the tail (ENGINEERING.md §3.3). A question is answered by processing `tail + question + GEN` with the
//! reference's left-aligned split: all chunks but the last write memory, the last runs `[read | chunk]` without
//! write memory, then greedy decoding. So `read(A); read(B); ask(Q)` equals one pass over `A+B+Q+GEN`.

use std::sync::Arc;

use crate::backend::Step;
use crate::error::{Error, Result};
use crate::model::{MemoryKind, Model};
use crate::store::{RowStore, StoreConfig};

/// Everything needed to continue a stream or answer questions later, exactly as if it had never stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The memory the next segment reads: the learned memory (`read_rows × d`) before the first segment,
    /// then the last written memory `M_t` (`m × d`). ARMT: the associative state of every layer, zero before the
    /// first segment (see [`crate::Config::associative_state_len`]).
    pub memory: Vec<f32>,
    /// RMT-R: every written memory state `M_1 … M_t`, `(t·m)` rows of `d`; empty for RMT. It may live in a
    /// spill file (see [`crate::store`]).
    pub store: RowStore,
    /// Tokens read but not yet processed (fewer than one segment).
    pub tail: Vec<u32>,
    /// Tokens read in total.
    pub tokens_read: u64,
    /// Segments processed with write memory.
    pub segments: u64,
    /// [`hash_tokens`] of all tokens read, to recognise the stream a state belongs to.
    pub tokens_hash: u64,
}

/// A generated answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Generated tokens, without the end-of-text token.
    pub tokens: Vec<u32>,
    /// Whether generation stopped at end-of-text (rather than at the token limit).
    pub stopped_at_eos: bool,
    /// Logits of every generation step (the last one chose EOS when `stopped_at_eos`).
    pub logits: Vec<Vec<f32>>,
}

/// The stream hash of no tokens; extend it with [`hash_tokens`].
pub const EMPTY_STREAM_HASH: u64 = 0xcbf2_9ce4_8422_2325;

/// Extends a stream hash (FNV-1a 64 over the tokens' little-endian bytes) with more tokens, so
/// `hash_tokens(hash_tokens(EMPTY_STREAM_HASH, a), b)` is the hash of `a` followed by `b`.
pub fn hash_tokens(mut hash: u64, tokens: &[u32]) -> u64 {
    for t in tokens {
        for b in t.to_le_bytes() {
            hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// One stream being read: its state plus the device step that processes its segments.
pub struct Session {
    model: Arc<Model>,
    step: Box<dyn Step>,
    state: State,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tokens_read", &self.state.tokens_read)
            .field("segments", &self.state.segments)
            .field("tail", &self.state.tail.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(model: Arc<Model>, step: Box<dyn Step>, store: &StoreConfig) -> Self {
        let memory = match model.config.memory.kind {
            MemoryKind::Armt => vec![0.0; model.config.associative_state_len()],
            _ => model.weights.memory.clone(),
        };
        let state = State {
            memory,
            store: RowStore::new(model.config.n_embd, store.clone()),
            tail: Vec::new(),
            tokens_read: 0,
            segments: 0,
            tokens_hash: EMPTY_STREAM_HASH,
        };
        Session { model, step, state }
    }

    /// Continues from a snapshot; the state is checked against the model.
    pub(crate) fn restore(model: Arc<Model>, mut step: Box<dyn Step>, state: State) -> Result<Self> {
        let cfg = &model.config;
        let (m, d) = (cfg.memory.num_mem_tokens, cfg.n_embd);
        let values = match cfg.memory.kind {
            MemoryKind::Armt => cfg.associative_state_len(),
            _ if state.segments == 0 => cfg.memory.read_rows() * d,
            _ => m * d,
        };
        let store_rows = match cfg.memory.kind {
            MemoryKind::Rmt | MemoryKind::Armt => 0,
            MemoryKind::RmtR => state.segments as usize * m,
        };
        if state.memory.len() != values {
            return Err(Error::Input(format!(
                "state memory has {} values, the model needs {values}",
                state.memory.len()
            )));
        }
        if state.store.width() != d || state.store.rows() != store_rows {
            return Err(Error::Input(format!(
                "state store has {} rows of {}, {} segments of this model need {store_rows} rows of {d}",
                state.store.rows(),
                state.store.width(),
                state.segments
            )));
        }
        if state.tail.len() >= cfg.memory.segment_size {
            return Err(Error::Input(format!(
                "state tail of {} tokens is not shorter than a segment",
                state.tail.len()
            )));
        }
        check_tokens(&model, &state.tail)?;
        let mut rows = Vec::with_capacity(m * d);
        for k in 0..store_rows / m {
            rows.clear();
            state.store.read(k * m..(k + 1) * m, &mut rows);
            step.push_state(&rows)?;
        }
        Ok(Session { model, step, state })
    }

    /// The state now (cheap to inspect; [`Session::snapshot`] clones it).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// A copy of the state to save or restore later.
    pub fn snapshot(&self) -> State {
        self.state.clone()
    }

    /// The model this session runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Reads tokens: every completed segment is processed with write memory, the rest stays in the tail.
    pub fn read(&mut self, tokens: &[u32]) -> Result<()> {
        self.account(tokens)?;
        let seg = self.model.config.memory.segment_size;
        let mut rest = tokens;
        if !self.state.tail.is_empty() {
            let take = (seg - self.state.tail.len()).min(rest.len());
            self.state.tail.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.state.tail.len() < seg {
                return Ok(());
            }
            let full = std::mem::take(&mut self.state.tail);
            self.write_segment(&full)?;
        }
        // segments straight from the caller's slice: reading a long slice copies nothing
        let full = rest.len() / seg * seg;
        let mut segments = &rest[..full];
        if self.model.config.memory.kind == MemoryKind::Rmt {
            // plain RMT: every segment reads and writes M_t, so the whole run can stay on the device
            self.step.write_chain(&mut self.state.memory, segments, seg)?;
            self.state.segments += (full / seg) as u64;
            segments = &[];
        } else if self.model.config.memory.kind == MemoryKind::RmtR {
            // RMT-R: the first segment reads the learned memory whole; after it, a device may chain the rest
            if self.state.segments == 0 && !segments.is_empty() {
                self.write_segment(&segments[..seg])?;
                segments = &segments[seg..];
            }
            let (memory, store) = (&mut self.state.memory, &mut self.state.store);
            if !segments.is_empty() && self.step.write_retrieval_chain(memory, store, segments, seg)? {
                self.state.segments += (segments.len() / seg) as u64;
                segments = &[];
            }
        } else if !segments.is_empty() {
            // ARMT: every segment writes with the learned memory rows; a device may keep the state between them
            let (state, write) = (&mut self.state.memory, &self.model.weights.memory);
            if self.step.write_associative_chain(state, write, segments, seg)? {
                self.state.segments += (segments.len() / seg) as u64;
                segments = &[];
            }
        }
        segments.chunks_exact(seg).try_for_each(|c| self.write_segment(c))?;
        self.state.tail = rest[full..].to_vec();
        Ok(())
    }

    /// Checks `tokens` and counts them as read (count and stream hash).
    fn account(&mut self, tokens: &[u32]) -> Result<()> {
        check_tokens(&self.model, tokens)?;
        self.state.tokens_read += tokens.len() as u64;
        self.state.tokens_hash = hash_tokens(self.state.tokens_hash, tokens);
        Ok(())
    }

    /// Reads `tokens` without processing them: returns the segments they complete (copied, in order) and keeps the
    /// rest as the tail. A [`crate::Batch`] processes the segments of all its streams together.
    pub(crate) fn take(&mut self, tokens: &[u32]) -> Result<Vec<Vec<u32>>> {
        self.account(tokens)?;
        let seg = self.model.config.memory.segment_size;
        let mut pending = std::mem::take(&mut self.state.tail);
        pending.extend_from_slice(tokens);
        let mut chunks = pending.chunks_exact(seg);
        let full = chunks.by_ref().map(<[u32]>::to_vec).collect();
        self.state.tail = chunks.remainder().to_vec();
        Ok(full)
    }

    /// Processes the tail as a short segment with write memory, as the training forward does with a sample's
    /// last segment (RMT-SPEC §1.11). Does nothing when the tail is empty.
    pub fn flush(&mut self) -> Result<()> {
        if !self.state.tail.is_empty() {
            let tail = std::mem::take(&mut self.state.tail);
            self.write_segment(&tail)?;
        }
        Ok(())
    }

    /// Answers `question` (tokens, without the GEN marker) from the stream read so far, generating at most
    /// `max_new_tokens` greedily until end-of-text. The session's state is left as it was.
    pub fn ask(&mut self, question: &[u32], max_new_tokens: usize) -> Result<Answer> {
        check_tokens(&self.model, question)?;
        let cfg = self.model.config.clone();
        let mut prompt = self.state.tail.clone();
        prompt.extend_from_slice(question);
        prompt.push(cfg.gen_token_id);
        let last_start = (prompt.len() - 1) / cfg.memory.segment_size * cfg.memory.segment_size;
        let (read_rows, last_len) = (cfg.memory.read_rows(), prompt.len() - last_start);
        if read_rows + last_len + max_new_tokens.saturating_sub(1) > cfg.n_positions {
            return Err(Error::Input(format!(
                "answer would need {} positions (read {read_rows} + final segment {last_len} + {max_new_tokens} new \
                 tokens) but the model has {}",
                read_rows + last_len + max_new_tokens - 1,
                cfg.n_positions
            )));
        }
        let (memory, segments) = (self.state.memory.clone(), self.state.segments);
        let store_rows = self.state.store.rows();
        let answer = prompt[..last_start]
            .chunks_exact(cfg.memory.segment_size)
            .try_for_each(|chunk| self.write_segment(chunk))
            .and_then(|()| self.generate(&prompt[last_start..], max_new_tokens));
        // back to the state before the question, whether or not answering succeeded
        self.state.memory = memory;
        self.state.segments = segments;
        self.state.store.truncate(store_rows);
        self.step.truncate_states(segments as usize);
        answer
    }

    /// The final segment `[read | tokens]` without write memory, then greedy decoding with the KV cache.
    fn generate(&mut self, tokens: &[u32], max_new_tokens: usize) -> Result<Answer> {
        let mut answer = Answer { tokens: Vec::new(), stopped_at_eos: false, logits: Vec::new() };
        if max_new_tokens == 0 {
            return Ok(answer);
        }
        let (read, _) = self.blocks()?;
        let mut logits = vec![0.0; self.model.config.vocab_size];
        self.step.prefill(&read, tokens, &mut logits)?;
        loop {
            let next = argmax(&logits);
            answer.logits.push(logits.clone());
            if next == self.model.config.eos_token_id {
                answer.stopped_at_eos = true;
                return Ok(answer);
            }
            answer.tokens.push(next);
            if answer.tokens.len() == max_new_tokens {
                return Ok(answer);
            }
            self.step.decode(next, &mut logits)?;
        }
    }

    /// The (read, write) memory blocks of the next segment. First segment: the learned memory is read whole and
    /// its first `m` rows are the write placeholder. Later: RMT reads and writes `M_t`; RMT-R reads
    /// `[M_t ; retrieve(store, M_t)]` and writes `M_t` (RMT-SPEC §2.2). ARMT reads the associative state and
    /// writes with the learned memory rows (RMT-SPEC §3.1).
    pub(crate) fn blocks(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        let cfg = &self.model.config;
        let md = cfg.memory.num_mem_tokens * cfg.n_embd;
        let mem = &self.state.memory;
        if cfg.memory.kind == MemoryKind::Armt {
            return Ok((mem.clone(), self.model.weights.memory.clone()));
        }
        if self.state.segments == 0 || cfg.memory.kind == MemoryKind::Rmt {
            return Ok((mem.clone(), mem[..md].to_vec()));
        }
        let mut read = mem.clone();
        read.resize(2 * md, 0.0);
        self.step.retrieve(&self.state.store, mem, &mut read[md..])?;
        Ok((read, mem.clone()))
    }

    fn write_segment(&mut self, tokens: &[u32]) -> Result<()> {
        let (read, write) = self.blocks()?;
        let mut next = vec![0.0; self.model.config.written_len()];
        self.step.write_segment(&read, tokens, &write, &mut next)?;
        self.finish_segment(next)
    }

    /// Takes the memory a segment wrote: RMT-R stores it; it becomes the memory the next segment reads.
    pub(crate) fn finish_segment(&mut self, next: Vec<f32>) -> Result<()> {
        if self.model.config.memory.kind == MemoryKind::RmtR {
            // the step derives its caches from the state as stored (maybe rounded to bf16), exactly as a restore
            // from the store would, so restored sessions stay bit-identical
            let store = &mut self.state.store;
            store.push(&next)?;
            let (rows, mut stored) = (store.rows(), Vec::with_capacity(next.len()));
            store.read(rows - next.len() / store.width()..rows, &mut stored);
            self.step.push_state(&stored)?;
        }
        self.state.memory = next;
        self.state.segments += 1;
        Ok(())
    }
}

/// First index of the largest logit (torch's argmax tie rule).
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

pub(crate) fn check_tokens(model: &Model, tokens: &[u32]) -> Result<()> {
    let v = model.config.vocab_size;
    match tokens.iter().position(|&t| t as usize >= v) {
        Some(i) => Err(Error::Input(format!("token {} at index {i} is outside the vocabulary ({v})", tokens[i]))),
        None => Ok(()),
    }
}
