//! Throughput mode: several independent streams read in lockstep, their segment steps stacked into one
//! ([`crate::backend::Step::write_segments`]: on the CPU one GEMM per layer over every stream's rows). Each stream
//! stays a [`Session`]: afterwards it is asked, snapshotted or read further on its own.

use crate::backend::{SegmentInput, Step};
use crate::error::{Error, Result};
use crate::session::Session;

/// Sessions whose segments are processed together.
pub struct Batch {
    sessions: Vec<Session>,
    step: Box<dyn Step>,
}

impl Batch {
    pub(crate) fn new(sessions: Vec<Session>, step: Box<dyn Step>) -> Self {
        Batch { sessions, step }
    }

    /// Reads one chunk per stream. The streams must stay in lockstep: chunks of equal length, from sessions that
    /// have read equally many tokens. Completed segments of all streams run as one batched step each.
    pub fn read(&mut self, chunks: &[&[u32]]) -> Result<()> {
        if chunks.len() != self.sessions.len() {
            return Err(Error::Input(format!("{} chunks for {} streams", chunks.len(), self.sessions.len())));
        }
        let read = self.sessions.first().map_or(0, |s| s.state().tokens_read);
        if chunks.iter().any(|c| c.len() != chunks[0].len())
            || self.sessions.iter().any(|s| s.state().tokens_read != read)
        {
            return Err(Error::Input("batched streams must be read in chunks of equal length".into()));
        }
        // every chunk is checked before any stream moves, so a bad one changes nothing
        for (s, c) in self.sessions.iter().zip(chunks) {
            crate::session::check_tokens(s.model(), c)?;
        }
        let segments: Vec<Vec<Vec<u32>>> =
            self.sessions.iter_mut().zip(chunks).map(|(s, c)| s.take(c)).collect::<Result<_>>()?;
        for k in 0..segments.first().map_or(0, Vec::len) {
            let blocks: Vec<(Vec<f32>, Vec<f32>)> =
                self.sessions.iter_mut().map(Session::blocks).collect::<Result<_>>()?;
            let inputs: Vec<SegmentInput<'_>> = blocks
                .iter()
                .zip(&segments)
                .map(|((read, write), segs)| SegmentInput { read, tokens: &segs[k], write })
                .collect();
            let per = self.sessions[0].model().config.written_len();
            let mut out = vec![0.0; per * inputs.len()];
            self.step.write_segments(&inputs, &mut out)?;
            for (s, next) in self.sessions.iter_mut().zip(out.chunks_exact(per)) {
                s.finish_segment(next.to_vec())?;
            }
        }
        Ok(())
    }

    /// The streams' sessions, in order.
    pub fn sessions(&mut self) -> &mut [Session] {
        &mut self.sessions
    }

    /// The sessions, to continue one by one.
    pub fn into_sessions(self) -> Vec<Session> {
        self.sessions
    }
}
