//! ARMT on the CUDA step (`cuda/associative.cu`): the associative state of every layer (f32, as
//! [`crate::Config::associative_state_len`] lays it out) lives on the device next to the activations. Every block
//! reads it before its `ln_1`, and a write step's memory rows update it after the block, as the CPU reference does.
//! Per segment the host uploads the state, replays the write step's graph and downloads the new state; a stream
//! read in one call keeps it on the device (a chain), and several streams stack their rows in one step, each
//! reading and writing its own state.

use super::{blocks_for, download_f32, CudaStep, GraphKey, CHAIN_SEGMENTS};
use crate::backend::cpu::associative::EPS;
use crate::backend::cuda::device::{Device, KernelArg};
use crate::backend::SegmentInput;
use crate::error::Result;
use crate::model::{AssociativeWrite, Config};

/// The widest key map (`memory.d_mem`) associative.cu's shared buffers hold (its ASSOC_MAX_DM).
pub const MAX_D_MEM: usize = 64;
/// Threads of an `associative_query` or `associative_key` block (one row each; associative.cu's ASSOC_THREADS),
/// and of an `associative_map`, `associative_read` or `associative_delta_part` block (a tile each).
const THREADS: u32 = 128;
/// Rows and columns of a tile of the maps, the read and the delta (associative.cu's `tile_product` with 8·RI rows
/// and TILE_COLS columns).
const TILE: (usize, usize) = (16, 64);
/// The columns of K one block of a map or of the delta adds up (associative.cu's K_CHUNK).
const K_CHUNK: usize = 64;
/// Threads of an `associative_delta` or `associative_update` block (one value each).
const UPDATE_THREADS: usize = 256;

/// The K chunks of the maps (K = `d`) and of the delta (the value map's, then the old value's, K = `dk`).
fn map_chunks(d: usize) -> usize {
    d.div_ceil(K_CHUNK)
}
fn delta_chunks(d: usize, dk: usize) -> usize {
    d.div_ceil(K_CHUNK) + dk.div_ceil(K_CHUNK)
}

/// Every stream's associative state, and what a read and a write pass from one kernel to the next.
pub(super) struct AssociativeBuffers<B> {
    /// Per stream, every layer's `A` (`dk × d`) then `z` (`dk`), f32.
    state: B,
    /// Every row's query `φ / (φ·z + ε)` (`dk`), f32.
    query: B,
    /// Per stream, the memory rows' keys (`m × dk`), gates (`m × 3`: γ, β and the old value's denominator) and
    /// deltas (`m × d`), f32.
    keys: B,
    gates: B,
    delta: B,
    /// The K chunks' shares of a map (`chunks × rows × d_mem`) or of the deltas (`chunks × m × d`), f32.
    partial: B,
}

impl<B> AssociativeBuffers<B> {
    /// The buffers of an ARMT model for `streams` streams; `None` for the other kinds.
    pub(super) fn for_model<D: Device<Buffer = B>>(dev: &D, cfg: &Config, streams: usize) -> Result<Option<Self>> {
        if cfg.memory.d_mem.is_none() {
            return Ok(None);
        }
        let (d, dk, m) = (cfg.n_embd, cfg.memory.key_width(), streams * cfg.memory.num_mem_tokens);
        let map = map_chunks(d) * streams * cfg.n_positions * cfg.memory.d_mem.unwrap_or(0);
        let partial = map.max(delta_chunks(d, dk) * m * d);
        Ok(Some(AssociativeBuffers {
            state: dev.alloc(streams * cfg.associative_state_len() * 4)?,
            query: dev.alloc(streams * cfg.n_positions * dk * 4)?,
            keys: dev.alloc(m * dk * 4)?,
            gates: dev.alloc(m * 3 * 4)?,
            delta: dev.alloc(m * d * 4)?,
            partial: dev.alloc(partial * 4)?,
        }))
    }
}

impl<D: Device> CudaStep<D> {
    fn buffers(&self) -> &AssociativeBuffers<D::Buffer> {
        self.act.as_ref().and_then(|a| a.associative.as_ref()).expect("an ARMT model's activations")
    }

    /// Layer `l`'s state of the first stream, and the floats from one stream's state to the next.
    fn layer_state(&self, l: usize) -> (KernelArg, KernelArg) {
        let cfg = &self.m.model.config;
        let layer = l * cfg.memory.key_width() * (cfg.n_embd + 1) * 4;
        (self.at(&self.buffers().state, layer), KernelArg::I32(cfg.associative_state_len() as i32))
    }

    fn key_map_width(&self) -> KernelArg {
        KernelArg::I32(self.m.model.config.memory.d_mem.expect("an ARMT model") as i32)
    }

    /// Before block `l`'s `ln_1`: the first `rows` rows of the residual (`streams` streams) read their stream's
    /// state of layer `l`.
    pub(super) fn associative_read(&self, l: usize, rows: usize, streams: usize) -> Result<()> {
        let (a, s, w) = (self.act.as_ref().expect("allocated"), self.buffers(), &self.m.weights.associative[l]);
        let (state, stride) = self.layer_state(l);
        let (d, dk, per) = (self.d(), self.m.model.config.memory.key_width(), rows / streams);
        let i32_arg = |v: usize| KernelArg::I32(v as i32);
        self.associative_map(&w.wq, (per, 0, per), streams)?;
        let query = [
            self.ptr(&s.query),
            self.ptr(&s.partial),
            i32_arg(map_chunks(d)),
            state,
            stride,
            i32_arg(rows),
            i32_arg(per),
            i32_arg(d),
            self.key_map_width(),
            KernelArg::F32(EPS),
        ];
        self.dev().launch("associative_query", [rows as u32, 1, 1], [THREADS, 1, 1], &query)?;
        let read = [self.ptr(&a.x), self.ptr(&s.query), state, stride, i32_arg(per), i32_arg(d), i32_arg(dk)];
        let grid = [blocks_for(per, TILE.0), blocks_for(d, TILE.1), streams as u32];
        self.dev().launch("associative_read", grid, [THREADS, 1, 1], &read)
    }

    /// The K chunks' shares of the key map `w` (`d_mem × d`) of `n` rows of each of `streams` streams of `per` rows,
    /// those after its first `skip`, into the `partial` buffer.
    fn associative_map(&self, w: &D::Buffer, (per, skip, n): (usize, usize, usize), streams: usize) -> Result<()> {
        let (a, s, d) = (self.act.as_ref().expect("allocated"), self.buffers(), self.d());
        let i32_arg = |v: usize| KernelArg::I32(v as i32);
        let args = [
            self.ptr(&s.partial),
            self.ptr(&a.x),
            self.ptr(w),
            i32_arg(per),
            i32_arg(skip),
            i32_arg(n),
            i32_arg(d),
            self.key_map_width(),
        ];
        let grid = [blocks_for(n, TILE.0), streams as u32, map_chunks(d) as u32];
        self.dev().launch("associative_map", grid, [THREADS, 1, 1], &args)
    }

    /// After block `l`: the last `write_rows` rows of each of `streams` streams (`rows` in all) update their
    /// stream's state of layer `l` (all of them against the state before the write); with `advance`, a chain's
    /// segment counter moves on.
    pub(super) fn associative_write(
        &self,
        l: usize,
        (rows, streams, write_rows): (usize, usize, usize),
        advance: bool,
    ) -> Result<()> {
        let (a, s, w) = (self.act.as_ref().expect("allocated"), self.buffers(), &self.m.weights.associative[l]);
        let (d, dk) = (self.d(), self.m.model.config.memory.key_width());
        let decay = KernelArg::F32(self.m.model.config.memory.decay_factor());
        let (state, stride) = self.layer_state(l);
        let i32_arg = |v: usize| KernelArg::I32(v as i32);
        let per = rows / streams;
        self.associative_map(&w.wk, (per, per - write_rows, write_rows), streams)?;
        let key = [
            self.ptr(&s.keys),
            self.ptr(&s.gates),
            self.ptr(&s.partial),
            i32_arg(map_chunks(d)),
            self.ptr(&a.x),
            self.ptr(&w.wb),
            self.ptr(&w.bb),
            state,
            stride,
            i32_arg(write_rows),
            i32_arg(per),
            i32_arg(d),
            self.key_map_width(),
            KernelArg::F32(EPS),
            KernelArg::I32((self.m.model.config.memory.write == AssociativeWrite::Replacing) as i32),
            decay,
        ];
        self.dev().launch("associative_key", [write_rows as u32, streams as u32, 1], [THREADS, 1, 1], &key)?;
        let part = [
            self.ptr(&s.partial),
            self.ptr(&s.keys),
            self.ptr(&s.gates),
            self.ptr(&a.x),
            self.ptr(&w.wv),
            state,
            stride,
            i32_arg(write_rows),
            i32_arg(per),
            i32_arg(d),
            i32_arg(dk),
            decay,
        ];
        let grid = [blocks_for(write_rows, TILE.0), blocks_for(d, TILE.1), (streams * delta_chunks(d, dk)) as u32];
        self.dev().launch("associative_delta_part", grid, [THREADS, 1, 1], &part)?;
        let m = streams * write_rows;
        let delta = [
            self.ptr(&s.delta),
            self.ptr(&s.partial),
            i32_arg(delta_chunks(d, dk)),
            self.ptr(&s.gates),
            i32_arg(m),
            i32_arg(d),
        ];
        let grid = [blocks_for(m * d, UPDATE_THREADS), 1, 1];
        self.dev().launch("associative_delta", grid, [UPDATE_THREADS as u32, 1, 1], &delta)?;
        let update = [
            state,
            self.ptr(&s.keys),
            self.ptr(&s.delta),
            self.ptr(&s.gates),
            if advance { self.ptr(&a.chain_step) } else { KernelArg::Ptr(0) },
            stride,
            i32_arg(write_rows),
            i32_arg(d),
            i32_arg(dk),
            decay,
        ];
        let grid = [blocks_for(dk * (d + 1), UPDATE_THREADS), streams as u32, 1];
        self.dev().launch("associative_update", grid, [UPDATE_THREADS as u32, 1, 1], &update)
    }

    /// Puts `states` (every layer's, of `streams` streams one after the other) on the device.
    pub(super) fn upload_associative_state(&mut self, states: &[f32], streams: usize) -> Result<()> {
        self.activations(streams)?;
        let bytes: Vec<u8> = states.iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = self.act.as_mut().and_then(|a| a.associative.as_mut()).expect("an ARMT model's activations");
        self.m.dev.upload(&mut s.state, 0, &bytes)
    }

    /// [`Step::write_segments`](crate::backend::Step::write_segments) of an ARMT, its streams stacked in one step:
    /// each stream's `[tokens | write rows]` from position 0 reads its state (`read`) in every block, and its write
    /// rows update it; `out` gets the new states, stream after stream.
    pub(super) fn associative_write_all(&mut self, segments: &[SegmentInput<'_>], out: &mut [f32]) -> Result<()> {
        let d = self.d();
        let (mut ids, mut mem, mut states) = (Vec::new(), Vec::new(), Vec::new());
        let rows_per = segments[0].tokens.len() + segments[0].write.len() / d;
        for s in segments {
            assert_eq!(s.tokens.len() + s.write.len() / d, rows_per, "batched segments share a shape");
            ids.extend(s.tokens.iter().map(|&t| t as i32));
            ids.extend((0..s.write.len() / d).map(|k| -((mem.len() / d + k) as i32) - 1));
            mem.extend_from_slice(s.write);
            states.extend_from_slice(s.read);
        }
        let streams = segments.len();
        self.upload_inputs(&ids, &mem, streams)?;
        self.upload_associative_state(&states, streams)?;
        let write_rows = segments[0].write.len() / d;
        self.replay_write(GraphKey { streams, rows_per_stream: rows_per, write_rows, chain: false })?;
        download_f32(self.dev(), &self.buffers().state, out)
    }

    /// [`Step::write_associative_chain`](crate::backend::Step::write_associative_chain) on the device: the state
    /// and the write rows go up once, the token ids [`CHAIN_SEGMENTS`] segments at a time, and the host only
    /// enqueues graph replays until the last state comes back.
    pub(super) fn associative_chain(
        &mut self,
        state: &mut [f32],
        write: &[f32],
        tokens: &[u32],
        seg: usize,
    ) -> Result<()> {
        let m = write.len() / self.d();
        self.upload_inputs(&[], write, 1)?;
        self.upload_associative_state(state, 1)?;
        for chunk in tokens.chunks(CHAIN_SEGMENTS * seg) {
            // every row of a link: [tokens | write], the write rows read from `mem`
            self.upload_chain_ids(chunk, seg, 0, m)?;
            for _ in 0..chunk.len() / seg {
                self.replay_write(GraphKey { streams: 1, rows_per_stream: seg + m, write_rows: m, chain: true })?;
            }
        }
        download_f32(self.dev(), &self.buffers().state, state)
    }
}
