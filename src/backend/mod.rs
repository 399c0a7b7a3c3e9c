//! The device seam. A [`Step`] runs one stream's segment steps on one device; the session drives it and never
//! branches on the device. Data flows one way: session → step (embeddings, tokens) → new memory / logits.

pub mod cpu;
pub mod cuda;

use crate::error::Result;
use crate::store::RowStore;

/// `(file name, source)` of every CUDA C++ file in `cuda/`, embedded at build time for run-time NVRTC compilation.
pub const CUDA_SOURCES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/cuda_sources.rs"));

/// One stream's input to [`Step::write_segments`].
#[derive(Clone, Copy, Debug)]
pub struct SegmentInput<'a> {
    /// The memory rows read before the tokens.
    pub read: &'a [f32],
    /// The segment's tokens.
    pub tokens: &'a [u32],
    /// The write-memory rows after the tokens.
    pub write: &'a [f32],
}

/// One stream's segment step on a device, with the device-side state it needs (KV cache, RMT-R store cache).
/// Every call can fail on a device (a driver error, out of memory); the CPU's never do.
///
/// Positions restart at 0 in every call to [`Step::write_segment`] and [`Step::prefill`]; the session checks that
/// inputs fit the model's positions before calling.
pub trait Step: Send {
    /// Runs `[read | tokens | write]` and writes `ln_f` of the last `write.len() / d` rows (the new memory) to `out`.
    /// ARMT: `read` is the associative state, the step runs `[tokens | write]` reading it in every block and
    /// updating it from the `write` rows, and `out` (as long as `read`) gets the new state; `prefill` reads it.
    fn write_segment(&mut self, read: &[f32], tokens: &[u32], write: &[f32], out: &mut [f32]) -> Result<()>;
    /// Several independent streams' write segments of the same shape in one step (throughput mode): `out` gets
    /// each stream's new memory, in order. The default runs them one after the other.
    fn write_segments(&mut self, segments: &[SegmentInput<'_>], out: &mut [f32]) -> Result<()> {
        write_each(self, segments, out)
    }
    /// RMT: runs the full segments of `tokens` (a multiple of `seg`) back to back, each reading and writing the
    /// memory the one before wrote, starting from `memory`, which is left holding the last. The default is the
    /// segment-by-segment loop; a device keeps the recurrence on the device instead.
    fn write_chain(&mut self, memory: &mut [f32], tokens: &[u32], seg: usize) -> Result<()> {
        let mut next = vec![0.0; memory.len()];
        for s in tokens.chunks_exact(seg) {
            self.write_segment(memory, s, memory, &mut next)?;
            memory.copy_from_slice(&next);
        }
        Ok(())
    }
    /// RMT-R after its first segment: runs the full segments of `tokens` back to back, each reading
    /// `[M ; retrieve(store, M)]` and writing `M`, and appends every new memory to `store` (and to the step's own
    /// retrieval cache); `memory` is left holding the last. Returns `false`, having done nothing, where the step
    /// has no such chain (the default): the session then goes segment by segment.
    fn write_retrieval_chain(
        &mut self,
        _memory: &mut [f32],
        _store: &mut RowStore,
        _tokens: &[u32],
        _seg: usize,
    ) -> Result<bool> {
        Ok(false)
    }
    /// ARMT: runs the full segments of `tokens` (a multiple of `seg`) back to back, each `[segment | write]`
    /// reading the associative `state` the one before left and updating it, which is left holding the last.
    /// Returns `false`, having done nothing, where the step has no such chain (the default): the session then goes
    /// segment by segment.
    fn write_associative_chain(
        &mut self,
        _state: &mut [f32],
        _write: &[f32],
        _tokens: &[u32],
        _seg: usize,
    ) -> Result<bool> {
        Ok(false)
    }
    /// Runs the final segment `[read | tokens]` into a fresh KV cache and writes the last row's logits.
    fn prefill(&mut self, read: &[f32], tokens: &[u32], logits: &mut [f32]) -> Result<()>;
    /// Appends one token after the prefilled rows (next position) and writes its logits.
    fn decode(&mut self, token: u32, logits: &mut [f32]) -> Result<()>;
    /// RMT-R: a memory state (`m × d`) was appended to the session's store; derive what retrieval caches.
    fn push_state(&mut self, state: &[f32]) -> Result<()>;
    /// RMT-R: the session's store was cut back to its first `n` states.
    fn truncate_states(&mut self, n: usize);
    /// RMT-R: the retrieved rows (`m × d`) for the current memory `cur`, over every state in `store`.
    fn retrieve(&mut self, store: &RowStore, cur: &[f32], out: &mut [f32]) -> Result<()>;
}

/// Several streams' write segments one after the other: [`Step::write_segments`]'s default, and what a step that
/// cannot stack a model's streams falls back to.
pub(crate) fn write_each<S: Step + ?Sized>(step: &mut S, segments: &[SegmentInput<'_>], out: &mut [f32]) -> Result<()> {
    let per = out.len() / segments.len().max(1);
    for (s, o) in segments.iter().zip(out.chunks_exact_mut(per)) {
        step.write_segment(s.read, s.tokens, s.write, o)?;
    }
    Ok(())
}
