//! The segment step on a CUDA [`Device`]: the same [`Step`] the CPU backend implements, as a sequence of kernel
//! launches over device-resident weights, activations, KV cache (the per-layer QKV rows) and RMT-R state cache.
//!
//! Per segment the host uploads the token ids and memory rows, replays the write step's graph (2 + 7·layers + 1
//! kernels, 8 per layer when attention's keys are split; captured once per shape) and downloads the new memory
//! (`m × d` f32): everything in between stays on the device. RMT-R's retrieval runs before it as plain launches (its
//! grid grows with the store); ARMT's associative memory is in [`associative`].

mod associative;

use std::sync::Arc;

use super::device::{Device, KernelArg};
use super::matmul_tile::MatmulTile;
use super::weights::{DeviceLinear, DeviceNorm, DeviceRetrieval, DeviceWeights};
use crate::backend::{SegmentInput, Step};
use crate::error::{Error, Result};
use crate::model::{Config, MemoryKind, Model};
use crate::store::{RowStore, StoreDtype};
use associative::AssociativeBuffers;

/// Threads of a LayerNorm-family block (one row each).
const LN_THREADS: u32 = 128;
/// Stored RMT-R rows are split into at most this many chunks, one column of blocks each (flash-decoding); also
/// retrieval.cu's MERGE_MAX_CHUNKS.
const MAX_CHUNKS: usize = 256;
/// Threads (one dim each) of a `retrieval_partial` block (retrieval.cu's RETRIEVAL_THREADS).
const RETRIEVAL_THREADS: usize = 128;
/// Threads of a `retrieval_merge` block (retrieval.cu's MERGE_THREADS), and the dims it merges (a warp's lanes).
const MERGE_THREADS: u32 = 256;
const MERGE_DIMS: usize = 32;
/// Attention's keys are split across blocks (flash-decoding partials, then `attention_merge`) when a step has
/// fewer query blocks than this (≈ 2 per SM of an H100), i.e. a few streams that would leave SMs idle.
const ATTENTION_SPLIT_BELOW_BLOCKS: usize = 264;
/// Keys per split: a multiple of both attention kernels' key tiles (64 and 32).
const ATTENTION_SPLIT_KEYS: usize = 128;
/// Query rows per attention block.
const ATTENTION_ROWS: usize = 64;
/// Segments whose token ids are uploaded at once when an RMT stream runs as a device-side chain.
const CHAIN_SEGMENTS: usize = 64;

/// The most bytes of split partials a step of `streams` streams can write: it splits only while it has fewer than
/// [`ATTENTION_SPLIT_BELOW_BLOCKS`] query blocks, which bounds its rows per stream (one stream: all of them; 16
/// streams of GPT-2 small: one block of decode rows).
fn attention_partial_bytes(cfg: &Config, streams: usize) -> usize {
    let blocks = (ATTENTION_SPLIT_BELOW_BLOCKS - 1) / (streams * cfg.n_head);
    let rows = (blocks * ATTENTION_ROWS).min(cfg.n_positions);
    let splits = cfg.n_positions.div_ceil(ATTENTION_SPLIT_KEYS);
    (streams * splits * rows * (cfg.n_embd + 2 * cfg.n_head) * 4).max(4)
}

fn blocks_for(n: usize, per: usize) -> u32 {
    n.div_ceil(per) as u32
}

/// A model uploaded to a device: shared by every step (session) of an engine.
pub struct CudaModel<D: Device> {
    dev: D,
    weights: DeviceWeights<D::Buffer>,
    model: Arc<Model>,
}

impl<D: Device> CudaModel<D> {
    /// Uploads `model`'s weights to `dev`.
    pub fn new(dev: D, model: Arc<Model>) -> Result<Arc<Self>> {
        supports(&model.config)?;
        let weights = DeviceWeights::new(&dev, &model)?;
        Ok(Arc::new(CudaModel { dev, weights, model }))
    }
}

/// Activations for `streams` streams of up to `n_positions` rows each.
struct Activations<B> {
    streams: usize,
    /// The residual stream, f32.
    x: B,
    /// LayerNorm output: the input of the next matmul.
    ln: B,
    att: B,
    /// Attention's split partials (`attention.cu`), sized by [`attention_partial_bytes`].
    att_partial: B,
    /// A sublayer's projection before the residual add: its K shares in f32 (see [`MatmulTile::for_projection`]).
    proj: B,
    hidden: B,
    /// Per layer `[streams][n_positions][3d]`: this step's Q|K|V rows, and the KV cache for decoding.
    qkv: Vec<B>,
    ids: B,
    /// The ids of up to [`CHAIN_SEGMENTS`] segments of a chain, and the chain's segment counter (an int).
    chain_ids: B,
    chain_step: B,
    /// Memory rows fed as embeddings, f32; in a chain, also where each segment writes its new memory.
    mem: B,
    /// New memory rows (f32), or one row's logits.
    out: B,
    /// ARMT: the associative state and the write's scratch.
    associative: Option<AssociativeBuffers<B>>,
}

/// RMT-R: what retrieval keeps on the device for every stored state (v2: `ln_kv(state)` only; v1: its gelu keys
/// and values), and its scratch buffers.
struct StateCache<B> {
    keys: B,
    values: Option<B>,
    rows: usize,
    capacity: usize,
    /// The stored state or current memory (f32), then the residual of v2's block.
    rx: B,
    /// m rows each in the storage type: a LayerNorm's output (or v1's converted input), the query and later the
    /// weighted sum, the folded query and later W_v of the sum; `proj` a projection's K shares in f32; `hidden`
    /// is m × 4d.
    h: B,
    q: B,
    attended: B,
    proj: B,
    hidden: B,
    /// Each chunk's (max, sum, weighted values) per query: `m × MAX_CHUNKS × (d + 2)` f32.
    partial: B,
    /// q·k of each query and stored row: `m × capacity` f32.
    scores: B,
    /// The new memories of a chain's [`CHAIN_SEGMENTS`] segments (f32), until they go back to the session's store.
    chained: B,
}

/// What a captured write step was recorded for.
#[derive(Clone, Copy, PartialEq, Eq)]
struct GraphKey {
    streams: usize,
    rows_per_stream: usize,
    /// The memory rows written at the end of each stream.
    write_rows: usize,
    /// A link of a device-side chain: ids from the chain's buffer at its counter, new memory back into `mem`.
    chain: bool,
}

/// Whether the kernels cover this model: its kind of memory ([`supports_memory`]) and a shape they are written for
/// (attention.cu's head sizes, layernorm.cu's widths): every GPT-2 size is. A [`Error::Config`]
/// says what does not fit, so that `--device auto` can fall back to the CPU before touching the GPU.
///
/// ```
/// use rmt_fast::{backend::cuda::supports, Config};
/// let gpt2 = r#"{"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024,
///     "memory": {"kind": "rmt", "num_mem_tokens": 16, "segment_size": 512}}"#;
/// assert!(supports(&Config::from_json(gpt2).unwrap()).is_ok());
/// let heads_of_16 = gpt2.replace(r#""n_head": 12"#, r#""n_head": 48"#);
/// assert!(supports(&Config::from_json(&heads_of_16).unwrap()).is_err());
/// let armt = gpt2.replace(r#""kind": "rmt""#, r#""kind": "armt", "d_mem": 32"#);
/// assert!(supports(&Config::from_json(&armt).unwrap()).is_ok());
/// let wide_keys = gpt2.replace(r#""kind": "rmt""#, r#""kind": "armt", "d_mem": 128"#);
/// assert!(supports(&Config::from_json(&wide_keys).unwrap()).is_err());
/// let decayed = armt.replace(r#""d_mem": 32"#, r#""d_mem": 32, "decay": 0.999"#);
/// assert!(supports(&Config::from_json(&decayed).unwrap()).is_ok());
/// ```
pub fn supports(cfg: &Config) -> Result<()> {
    supports_memory(cfg)?;
    let hs = cfg.n_embd / cfg.n_head;
    if (hs == 32 || hs == 64) && cfg.n_embd <= 1600 {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the CUDA kernels take head sizes 32 or 64 and widths up to 1600; this model has {} heads of {hs} ({} wide)",
        cfg.n_head, cfg.n_embd
    )))
}

/// Whether the kernels cover this model's memory: RMT, RMT-R, and ARMT (either write rule, any decay) with key
/// maps (`memory.d_mem`) up to 64 wide (associative.cu's shared buffers). [`crate::Engine::cuda`] asks this
/// before it looks for a GPU, so such a model is refused the same way on every machine.
pub fn supports_memory(cfg: &Config) -> Result<()> {
    match cfg.memory.d_mem {
        Some(dm) if dm > associative::MAX_D_MEM => Err(Error::Config(format!(
            "the CUDA kernels take ARMT key maps up to {} wide (memory.d_mem); this model's is {dm}",
            associative::MAX_D_MEM
        ))),
        _ => Ok(()),
    }
}

/// One stream's segment step on a CUDA device (or its emulation, in the tests).
pub struct CudaStep<D: Device> {
    m: Arc<CudaModel<D>>,
    act: Option<Activations<D::Buffer>>,
    /// The write step captured once per shape and replayed for every segment.
    graphs: Vec<(GraphKey, D::Graph)>,
    /// Rows in stream 0's KV cache (prefill + decoded tokens).
    cache_len: usize,
    states: Option<StateCache<D::Buffer>>,
}

impl<D: Device> CudaStep<D> {
    /// A step with nothing allocated yet: buffers come with the first segment.
    pub fn new(model: Arc<CudaModel<D>>) -> Self {
        CudaStep { m: model, act: None, graphs: Vec::new(), cache_len: 0, states: None }
    }

    fn dev(&self) -> &D {
        &self.m.dev
    }

    fn d(&self) -> usize {
        self.m.model.config.n_embd
    }

    /// Bytes per stored element.
    fn sz(&self) -> usize {
        self.dev().precision().bytes()
    }

    fn at(&self, buf: &D::Buffer, byte_offset: usize) -> KernelArg {
        KernelArg::Ptr(self.dev().address(buf) + byte_offset as u64)
    }

    fn ptr(&self, buf: &D::Buffer) -> KernelArg {
        self.at(buf, 0)
    }

    fn activations(&mut self, streams: usize) -> Result<()> {
        if self.act.as_ref().is_some_and(|a| a.streams >= streams) {
            return Ok(());
        }
        let cfg = &self.m.model.config;
        let (d, rows, sz) = (cfg.n_embd, streams * cfg.n_positions, self.sz());
        let dev = &self.m.dev;
        self.graphs.clear(); // they point at the buffers being replaced
        self.act = Some(Activations {
            streams,
            x: dev.alloc(rows * d * 4)?,
            ln: dev.alloc(rows * d * sz)?,
            att: dev.alloc(rows * d * sz)?,
            att_partial: dev.alloc(attention_partial_bytes(cfg, streams))?,
            proj: dev.alloc(MatmulTile::shares_capacity(rows, d) * 4)?,
            hidden: dev.alloc(rows * 4 * d * sz)?,
            qkv: (0..cfg.n_layer).map(|_| dev.alloc(rows * 3 * d * sz)).collect::<Result<_>>()?,
            ids: dev.alloc(rows * 4)?,
            chain_ids: dev.alloc(CHAIN_SEGMENTS * cfg.n_positions * 4)?,
            chain_step: dev.alloc(4)?,
            mem: dev.alloc(rows * d * 4)?,
            out: dev.alloc((rows * d).max(cfg.vocab_size) * 4)?,
            associative: AssociativeBuffers::for_model(dev, cfg, streams)?,
        });
        Ok(())
    }

    /// out = in · Wᵀ + b (+ GELU) over `rows` rows; with `scatter = Some((per, stride))` output row r lands at
    /// row `(r / per) · stride + r % per` (each stream's rows in its slot of the KV cache).
    fn matmul(
        &self,
        out: KernelArg,
        input: KernelArg,
        l: &DeviceLinear<D::Buffer>,
        rows: usize,
        gelu: bool,
        scatter: Option<(usize, usize)>,
    ) -> Result<()> {
        let (per, stride) = scatter.unwrap_or((rows, 0));
        let bias = l.b.as_ref().map_or(KernelArg::Ptr(0), |b| self.ptr(b));
        let args = [
            out,
            input,
            self.ptr(&l.w),
            bias,
            KernelArg::I32(rows as i32),
            KernelArg::I32(l.n_out as i32),
            KernelArg::I32(l.n_in as i32),
            KernelArg::I32(gelu as i32),
            KernelArg::I32(per as i32),
            KernelArg::I32(stride as i32),
        ];
        let tile = MatmulTile::for_shape(rows, l.n_out);
        self.dev().launch(tile.kernel, tile.grid(rows, l.n_out), tile.block(self.dev().precision()), &args)
    }

    /// `matmul` into f32 rows (logits, RMT-R v1's output).
    fn matmul_f32(
        &self,
        out: KernelArg,
        input: KernelArg,
        w: KernelArg,
        bias: KernelArg,
        (rows, n, k): (usize, usize, usize),
        gelu: bool,
    ) -> Result<()> {
        let args = [
            out,
            input,
            w,
            bias,
            KernelArg::I32(rows as i32),
            KernelArg::I32(n as i32),
            KernelArg::I32(k as i32),
            KernelArg::I32(gelu as i32),
        ];
        let tile = MatmulTile::for_shape(rows, n);
        self.dev().launch(tile.kernel_f32, tile.grid(rows, n), tile.block(self.dev().precision()), &args)
    }

    /// out (f32) = in · Wᵀ + b over `rows` rows, as the K shares residual_layernorm adds up: K is split when the
    /// output alone has too few blocks to fill the GPU ([`MatmulTile::for_projection`]). Returns the number of
    /// shares.
    fn project(&self, out: KernelArg, input: KernelArg, l: &DeviceLinear<D::Buffer>, rows: usize) -> Result<usize> {
        let (n, k) = (l.n_out, l.n_in);
        let (tile, shares) = MatmulTile::for_projection(rows, n, k);
        let bias = l.b.as_ref().map_or(KernelArg::Ptr(0), |b| self.ptr(b));
        let i32_arg = |v: usize| KernelArg::I32(v as i32);
        let args = [out, input, self.ptr(&l.w), bias, i32_arg(rows), i32_arg(n), i32_arg(k), i32_arg(0)];
        let [x, y, _] = tile.grid(rows, n);
        self.dev().launch(tile.kernel_f32, [x, y, shares as u32], tile.block(self.dev().precision()), &args)?;
        Ok(shares)
    }

    fn eps(&self) -> KernelArg {
        KernelArg::F32(self.m.model.config.layer_norm_epsilon)
    }

    /// Launches a LayerNorm-family kernel over `rows` rows (a block each): its arguments are `lead`, then the
    /// norm's weight and bias, the rows, d and epsilon.
    fn launch_norm(&self, name: &str, lead: &[KernelArg], n: &DeviceNorm<D::Buffer>, rows: usize) -> Result<()> {
        let mut args = lead.to_vec();
        args.extend([
            self.ptr(&n.w),
            self.ptr(&n.b),
            KernelArg::I32(rows as i32),
            KernelArg::I32(self.d() as i32),
            self.eps(),
        ]);
        self.dev().launch(name, [rows as u32, 1, 1], [LN_THREADS, 1, 1], &args)
    }

    fn layernorm(&self, out: KernelArg, x: KernelArg, n: &DeviceNorm<D::Buffer>, rows: usize) -> Result<()> {
        self.launch_norm("layernorm", &[out, x], n, rows)
    }

    /// x += the sum of `delta`'s `shares` (a projection's K shares), then out = LN(x) (`out` null: the add alone).
    fn residual_layernorm(
        &self,
        x: KernelArg,
        (delta, shares): (KernelArg, usize),
        out: KernelArg,
        n: &DeviceNorm<D::Buffer>,
        rows: usize,
    ) -> Result<()> {
        self.launch_norm("residual_layernorm", &[x, delta, KernelArg::I32(shares as i32), out], n, rows)
    }

    /// Causal attention of `per` query rows per stream from position `pos0` over the layer's `qkv` rows into `att`.
    /// With few query blocks the keys are split in [`ATTENTION_SPLIT_KEYS`] and the splits merged.
    fn attention(&self, qkv: KernelArg, streams: usize, per: usize, pos0: usize) -> Result<()> {
        let a = self.act.as_ref().expect("activations allocated");
        let cfg = &self.m.model.config;
        let (d, cap, heads) = (cfg.n_embd, cfg.n_positions, cfg.n_head);
        let query_blocks = per.div_ceil(ATTENTION_ROWS);
        let (splits, split_keys) = if streams * heads * query_blocks < ATTENTION_SPLIT_BELOW_BLOCKS {
            ((pos0 + per).div_ceil(ATTENTION_SPLIT_KEYS), ATTENTION_SPLIT_KEYS)
        } else {
            (1, cap)
        };
        let i32_arg = |v: usize| KernelArg::I32(v as i32);
        let (hs, common) = (d / heads, [i32_arg(per), i32_arg(pos0)]);
        let mut args = vec![self.ptr(&a.att), self.ptr(&a.att_partial), qkv];
        args.extend(common);
        args.extend([i32_arg(cap), i32_arg(d), i32_arg(hs), i32_arg(splits), i32_arg(split_keys)]);
        let grid = [query_blocks as u32, heads as u32, (streams * splits) as u32];
        self.dev().launch("attention", grid, [128, 1, 1], &args)?;
        if splits == 1 {
            return Ok(());
        }
        let mut merge = vec![self.ptr(&a.att), self.ptr(&a.att_partial)];
        merge.extend(common);
        merge.extend([i32_arg(d), i32_arg(hs), i32_arg(splits), i32_arg(split_keys)]);
        self.dev().launch("attention_merge", [per as u32, streams as u32, blocks_for(d / 2, 128)], [128, 1, 1], &merge)
    }

    /// Uploads a step's input: `ids` (token ids, or −(k+1) for row k of `mem`) for `streams` streams.
    fn upload_inputs(&mut self, ids: &[i32], mem: &[f32], streams: usize) -> Result<()> {
        self.activations(streams)?;
        let a = self.act.as_mut().expect("allocated above");
        let ids_bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        self.m.dev.upload(&mut a.ids, 0, &ids_bytes)?;
        let mem_bytes: Vec<u8> = mem.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.m.dev.upload(&mut a.mem, 0, &mem_bytes)
    }

    /// Embeds the uploaded `rows` input rows of `streams` streams from position `pos0` (a chain link: the ids
    /// of the chain's current segment), then runs every block. Leaves the final residual (before `ln_f`) in `x`.
    /// ARMT: every block reads the associative state first, and the last `write_rows` rows (0: none) update it
    /// after the block.
    fn forward(&self, rows: usize, streams: usize, pos0: usize, chain: bool, write_rows: usize) -> Result<()> {
        let a = self.act.as_ref().expect("inputs uploaded first");
        let cfg = &self.m.model.config;
        let (d, sz, w) = (cfg.n_embd, self.sz(), &self.m.weights);
        let (per, cap) = (rows / streams, cfg.n_positions);
        let i32_arg = |v: usize| KernelArg::I32(v as i32);
        let (ids, step) = if chain {
            (self.ptr(&a.chain_ids), self.ptr(&a.chain_step))
        } else {
            (self.ptr(&a.ids), KernelArg::Ptr(0))
        };
        let embed = [
            self.ptr(&a.x),
            ids,
            step,
            self.ptr(&a.mem),
            self.ptr(&w.wte),
            self.ptr(&w.wpe),
            i32_arg(rows),
            i32_arg(per),
            i32_arg(pos0),
            i32_arg(d),
        ];
        self.dev().launch("embed", [blocks_for(rows * d, 256), 1, 1], [256, 1, 1], &embed)?;
        let armt = a.associative.is_some();
        if !armt {
            self.layernorm(self.ptr(&a.ln), self.ptr(&a.x), &w.blocks[0].ln_1, rows)?;
        }
        for (l, b) in w.blocks.iter().enumerate() {
            if armt {
                // the read changes the residual between blocks: no ln_1 fused into the add before it
                self.associative_read(l, rows, streams)?;
                self.layernorm(self.ptr(&a.ln), self.ptr(&a.x), &b.ln_1, rows)?;
            }
            let qkv = &a.qkv[l];
            self.matmul(self.at(qkv, pos0 * 3 * d * sz), self.ptr(&a.ln), &b.c_attn, rows, false, Some((per, cap)))?;
            self.attention(self.ptr(qkv), streams, per, pos0)?;
            let shares = self.project(self.ptr(&a.proj), self.ptr(&a.att), &b.attn_proj, rows)?;
            self.residual_layernorm(self.ptr(&a.x), (self.ptr(&a.proj), shares), self.ptr(&a.ln), &b.ln_2, rows)?;
            self.matmul(self.ptr(&a.hidden), self.ptr(&a.ln), &b.c_fc, rows, true, None)?;
            let shares = self.project(self.ptr(&a.proj), self.ptr(&a.hidden), &b.mlp_proj, rows)?;
            // fused across blocks: the residual add of this MLP and the next block's ln_1 (llm.c)
            let (next, out) = match w.blocks.get(l + 1) {
                Some(nb) if !armt => (&nb.ln_1, self.ptr(&a.ln)),
                _ => (&w.ln_f, KernelArg::Ptr(0)),
            };
            self.residual_layernorm(self.ptr(&a.x), (self.ptr(&a.proj), shares), out, next, rows)?;
            if armt && write_rows > 0 {
                // a chain's counter advances with the last layer's update
                self.associative_write(l, (rows, streams, write_rows), chain && l + 1 == w.blocks.len())?;
            }
        }
        Ok(())
    }

    /// The logits of residual row `row` (ln_f, then the LM head) into `logits`.
    fn logits(&self, row: usize, logits: &mut [f32]) -> Result<()> {
        let a = self.act.as_ref().expect("a forward ran first");
        let (d, w, cfg) = (self.d(), &self.m.weights, &self.m.model.config);
        self.layernorm(self.ptr(&a.ln), self.at(&a.x, row * d * 4), &w.ln_f, 1)?;
        let head = self.ptr(w.lm_head.as_ref().unwrap_or(&w.wte));
        self.matmul_f32(self.ptr(&a.out), self.ptr(&a.ln), head, KernelArg::Ptr(0), (1, cfg.vocab_size, d), false)?;
        download_f32(self.dev(), &a.out, logits)
    }

    fn state_cache(&mut self, needed_rows: usize) -> Result<()> {
        let (d, m) = (self.d(), self.m.model.config.memory.num_mem_tokens);
        let (dev, sz) = (&self.m.dev, self.m.dev.precision().bytes());
        let v1 = matches!(self.m.weights.retrieval, Some(DeviceRetrieval::V1 { .. }));
        match &mut self.states {
            Some(s) if s.capacity >= needed_rows => {}
            Some(s) => {
                // grow by doubling; the rows so far move over
                let capacity = needed_rows.max(2 * s.capacity);
                let mut keys = dev.alloc(capacity * d * sz)?;
                dev.copy((&s.keys, 0), (&mut keys, 0), s.rows * d * sz)?;
                s.keys = keys;
                if let Some(values) = &mut s.values {
                    let mut grown = dev.alloc(capacity * d * sz)?;
                    dev.copy((values, 0), (&mut grown, 0), s.rows * d * sz)?;
                    *values = grown;
                }
                s.scores = dev.alloc(m * capacity * 4)?;
                s.capacity = capacity;
            }
            None => {
                let capacity = needed_rows.max(64 * m);
                self.states = Some(StateCache {
                    keys: dev.alloc(capacity * d * sz)?,
                    values: if v1 { Some(dev.alloc(capacity * d * sz)?) } else { None },
                    rows: 0,
                    capacity,
                    rx: dev.alloc(m * d * 4)?,
                    h: dev.alloc(m * d * sz)?,
                    q: dev.alloc(m * d * sz)?,
                    attended: dev.alloc(m * d * sz)?,
                    proj: dev.alloc(MatmulTile::shares_capacity(m, d) * 4)?,
                    hidden: dev.alloc(m * 4 * d * sz)?,
                    partial: dev.alloc(m * MAX_CHUNKS * (d + 2) * 4)?,
                    scores: dev.alloc(m * capacity * 4)?,
                    chained: dev.alloc(CHAIN_SEGMENTS * m * d * 4)?,
                });
            }
        }
        Ok(())
    }

    /// v1: `h` = the `m` rows of `rx` in the storage type (its projections take them as matmul input).
    fn rx_to_storage(&self, s: &StateCache<D::Buffer>, m: usize) -> Result<()> {
        let n = m * self.d();
        let args = [self.ptr(&s.h), self.ptr(&s.rx), KernelArg::I32(n as i32)];
        self.dev().launch("to_storage", [blocks_for(n, 256), 1, 1], [256, 1, 1], &args)
    }

    /// Uploads `rows` (f32) into the state cache's `rx`.
    fn upload_rx(&mut self, rows: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = self.states.as_mut().expect("state cache allocated");
        self.m.dev.upload(&mut s.rx, 0, &bytes)
    }
}

/// `out.len()` f32 values from the start of `buf`.
fn download_f32<D: Device>(dev: &D, buf: &D::Buffer, out: &mut [f32]) -> Result<()> {
    let mut bytes = vec![0u8; out.len() * 4];
    dev.download(buf, 0, &mut bytes)?;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes(b.try_into().expect("4 bytes"));
    }
    Ok(())
}

impl<D: Device> CudaStep<D> {
    fn write_all(&mut self, segments: &[SegmentInput<'_>], out: &mut [f32]) -> Result<()> {
        let d = self.d();
        let (mut ids, mut mem) = (Vec::new(), Vec::new());
        let rows_per = segments[0].read.len() / d + segments[0].tokens.len() + segments[0].write.len() / d;
        let mem_row = |ids: &mut Vec<i32>, mem: &mut Vec<f32>, rows: &[f32]| {
            for r in rows.chunks_exact(d) {
                ids.push(-((mem.len() / d) as i32) - 1);
                mem.extend_from_slice(r);
            }
        };
        for s in segments {
            assert_eq!(
                s.read.len() / d + s.tokens.len() + s.write.len() / d,
                rows_per,
                "batched segments share a shape"
            );
            mem_row(&mut ids, &mut mem, s.read);
            ids.extend(s.tokens.iter().map(|&t| t as i32));
            mem_row(&mut ids, &mut mem, s.write);
        }
        let streams = segments.len();
        self.upload_inputs(&ids, &mem, streams)?;
        let key =
            GraphKey { streams, rows_per_stream: rows_per, write_rows: segments[0].write.len() / d, chain: false };
        self.replay_write(key)?;
        download_f32(self.dev(), &self.act.as_ref().expect("uploaded").out, out)
    }

    /// Replays the write step for `key` (capturing it the first time).
    fn replay_write(&mut self, key: GraphKey) -> Result<()> {
        if !self.graphs.iter().any(|(k, _)| *k == key) {
            let graph = self.m.dev.capture(&mut || self.write_launches(key))?;
            self.graphs.push((key, graph));
        }
        let (_, graph) = self.graphs.iter().find(|(k, _)| *k == key).expect("captured above");
        self.dev().replay(graph)
    }

    /// Every launch of a write step: the blocks over all rows, then `ln_f` of each stream's last `write_rows` rows
    /// (the new memory) into `out`, or for a chain link back into `mem`. ARMT: the blocks alone (the rows update
    /// the associative state, which is what the step writes).
    fn write_launches(&self, key: GraphKey) -> Result<()> {
        let GraphKey { streams, rows_per_stream: rows_per, write_rows: w, chain } = key;
        self.forward(streams * rows_per, streams, 0, chain, w)?;
        let a = self.act.as_ref().expect("inputs uploaded first");
        if a.associative.is_some() {
            return Ok(());
        }
        let d = self.d();
        let ln_f = &self.m.weights.ln_f;
        let rows = streams * w;
        let (out, step) = if chain { (&a.mem, self.ptr(&a.chain_step)) } else { (&a.out, KernelArg::Ptr(0)) };
        let args = [
            self.ptr(out),
            self.ptr(&a.x),
            self.ptr(&ln_f.w),
            self.ptr(&ln_f.b),
            step,
            KernelArg::I32(rows as i32),
            KernelArg::I32(w as i32),
            KernelArg::I32(rows_per as i32),
            KernelArg::I32(d as i32),
            self.eps(),
        ];
        self.dev().launch("layernorm_tail", [rows as u32, 1, 1], [LN_THREADS, 1, 1], &args)
    }

    /// Uploads the ids of a chain's `chunk` of segments (`seg` tokens each): per segment `read` rows of `mem`, the
    /// tokens, then `write` rows of `mem` (ids −1, −2, …); the chain's counter goes back to its first segment.
    fn upload_chain_ids(&mut self, chunk: &[u32], seg: usize, read: usize, write: usize) -> Result<()> {
        let mem_rows = |n: usize| (0..n).map(|k| -(k as i32) - 1);
        let ids: Vec<u8> = chunk
            .chunks_exact(seg)
            .flat_map(|s| mem_rows(read).chain(s.iter().map(|&t| t as i32)).chain(mem_rows(write)))
            .flat_map(i32::to_le_bytes)
            .collect();
        let a = self.act.as_mut().expect("allocated by upload_inputs");
        self.m.dev.upload(&mut a.chain_ids, 0, &ids)?;
        self.m.dev.upload(&mut a.chain_step, 0, &0i32.to_le_bytes())
    }

    /// RMT segments back to back on the device: the memory is uploaded once and each segment's new memory is
    /// written where the next one reads it; token ids go up [`CHAIN_SEGMENTS`] segments at a time, and the host
    /// only enqueues graph replays until the final memory comes back.
    fn chain(&mut self, memory: &mut [f32], tokens: &[u32], seg: usize) -> Result<()> {
        let m = memory.len() / self.d();
        let rows = m + seg + m;
        // every row of a link: [M | tokens | M], the memory rows read from `mem`
        self.upload_inputs(&[], memory, 1)?;
        for chunk in tokens.chunks(CHAIN_SEGMENTS * seg) {
            self.upload_chain_ids(chunk, seg, m, m)?;
            for _ in 0..chunk.len() / seg {
                self.replay_write(GraphKey { streams: 1, rows_per_stream: rows, write_rows: m, chain: true })?;
            }
        }
        download_f32(self.dev(), &self.act.as_ref().expect("allocated").mem, memory)?;
        Ok(())
    }

    fn prefill_rows(&mut self, read: &[f32], tokens: &[u32], logits: &mut [f32]) -> Result<()> {
        let d = self.d();
        let mut ids: Vec<i32> = (0..read.len() / d).map(|k| -(k as i32) - 1).collect();
        ids.extend(tokens.iter().map(|&t| t as i32));
        self.upload_inputs(&ids, read, 1)?;
        self.forward(ids.len(), 1, 0, false, 0)?;
        self.cache_len = ids.len();
        self.logits(ids.len() - 1, logits)
    }

    fn decode_token(&mut self, token: u32, logits: &mut [f32]) -> Result<()> {
        let pos = self.cache_len;
        self.upload_inputs(&[token as i32], &[], 1)?;
        self.forward(1, 1, pos, false, 0)?;
        self.cache_len += 1;
        self.logits(0, logits)
    }

    fn push(&mut self, state: &[f32]) -> Result<()> {
        let m = state.len() / self.d();
        let rows = self.states.as_ref().map_or(0, |s| s.rows);
        self.state_cache(rows + m)?;
        self.upload_rx(state)?;
        self.push_launches(m)
    }

    /// Appends the `m` stored rows in `rx` to the state cache: v2 caches `ln_kv` of them, v1 its keys and values.
    fn push_launches(&mut self, m: usize) -> Result<()> {
        let s = self.states.as_ref().expect("allocated by the caller");
        let row0 = s.rows * self.d() * self.sz();
        match (self.m.weights.retrieval.as_ref().expect("RMT-R model"), &s.values) {
            (DeviceRetrieval::V2 { ln_kv, .. }, _) => {
                self.layernorm(self.at(&s.keys, row0), self.ptr(&s.rx), ln_kv, m)?
            }
            (DeviceRetrieval::V1 { k, v, .. }, Some(values)) => {
                self.rx_to_storage(s, m)?;
                self.matmul(self.at(&s.keys, row0), self.ptr(&s.h), k, m, true, None)?;
                self.matmul(self.at(values, row0), self.ptr(&s.h), v, m, true, None)?;
            }
            (DeviceRetrieval::V1 { .. }, None) => unreachable!("v1 caches values"),
        }
        self.states.as_mut().expect("allocated by the caller").rows += m;
        Ok(())
    }

    fn retrieve_rows(&mut self, n: usize, cur: &[f32], out: &mut [f32]) -> Result<()> {
        let m = cur.len() / self.d();
        self.state_cache(n)?;
        self.upload_rx(cur)?;
        let s = self.states.as_ref().expect("allocated above");
        assert_eq!(s.rows, n, "the device's state cache follows the session's store");
        self.retrieve_launches(m)?;
        download_f32(self.dev(), &self.states.as_ref().expect("allocated above").rx, &mut out[..m * self.d()])
    }

    /// Replaces the `m` current memory rows in `rx` by what retrieval over every cached state gives for them.
    fn retrieve_launches(&self, m: usize) -> Result<()> {
        let d = self.d();
        let s = self.states.as_ref().expect("allocated by the caller");
        let n = s.rows;
        let r = self.m.weights.retrieval.as_ref().expect("RMT-R model");
        // the query: v2 (W_kᵀ ∘ q_proj)(ln_q(cur)) (keys are never formed); v1 gelu(q_proj(cur))
        match r {
            DeviceRetrieval::V2 { ln_q, qk, .. } => {
                self.layernorm(self.ptr(&s.h), self.ptr(&s.rx), ln_q, m)?;
                self.matmul(self.ptr(&s.attended), self.ptr(&s.h), qk, m, false, None)?;
            }
            DeviceRetrieval::V1 { q, .. } => {
                self.rx_to_storage(s, m)?;
                self.matmul(self.ptr(&s.attended), self.ptr(&s.h), q, m, true, None)?;
            }
        }
        let values = s.values.as_ref().unwrap_or(&s.keys);
        let null = KernelArg::Ptr(0);
        self.matmul_f32(self.ptr(&s.scores), self.ptr(&s.attended), self.ptr(&s.keys), null, (m, n, d), false)?;
        let chunk = n.div_ceil(MAX_CHUNKS).max(64);
        let chunks = n.div_ceil(chunk);
        let partial = [
            self.ptr(&s.partial),
            self.ptr(&s.scores),
            self.ptr(values),
            KernelArg::I32(n as i32),
            KernelArg::I32(m as i32),
            KernelArg::I32(d as i32),
            KernelArg::I32(chunk as i32),
            KernelArg::F32(1.0 / (d as f32).sqrt()),
        ];
        let grid = [chunks as u32, blocks_for(d, RETRIEVAL_THREADS), 1];
        self.dev().launch("retrieval_partial", grid, [RETRIEVAL_THREADS as u32, 1, 1], &partial)?;
        let merge = [self.ptr(&s.q), self.ptr(&s.partial), KernelArg::I32(chunks as i32), KernelArg::I32(d as i32)];
        let grid = [m as u32, blocks_for(d, MERGE_DIMS), 1];
        self.dev().launch("retrieval_merge", grid, [MERGE_THREADS, 1, 1], &merge)?;
        // s.q now holds Σ p_j v_j
        match r {
            DeviceRetrieval::V2 { ln_mlp, fc_1, fc_2, vo, .. } => {
                // out = cur + (o ∘ v_proj)(Σ p_j h̃_j); out += fc_2(gelu(fc_1(ln_mlp(out))))
                let shares = self.project(self.ptr(&s.proj), self.ptr(&s.q), vo, m)?;
                self.residual_layernorm(self.ptr(&s.rx), (self.ptr(&s.proj), shares), self.ptr(&s.h), ln_mlp, m)?;
                self.matmul(self.ptr(&s.hidden), self.ptr(&s.h), fc_1, m, true, None)?;
                let shares = self.project(self.ptr(&s.proj), self.ptr(&s.hidden), fc_2, m)?;
                self.residual_layernorm(self.ptr(&s.rx), (self.ptr(&s.proj), shares), KernelArg::Ptr(0), ln_mlp, m)?;
            }
            DeviceRetrieval::V1 { o, .. } => {
                let bias = o.b.as_ref().map_or(KernelArg::Ptr(0), |b| self.ptr(b));
                self.matmul_f32(self.ptr(&s.rx), self.ptr(&s.q), self.ptr(&o.w), bias, (m, d, d), true)?;
            }
        }
        Ok(())
    }

    /// RMT-R segments back to back on the device (see [`Step::write_retrieval_chain`]): per segment, retrieval over
    /// the state cache from the memory in `mem` writes its rows after it, the write step's graph replays (new
    /// memory back into `mem`), and the new memory, rounded as `store` keeps it, joins the state cache. Token ids
    /// go up [`CHAIN_SEGMENTS`] segments at a time; each chunk's new memories come back once, into `store`.
    fn retrieval_chain(&mut self, memory: &mut [f32], store: &mut RowStore, tokens: &[u32], seg: usize) -> Result<()> {
        let d = self.d();
        let m = memory.len() / d;
        let md = m * d;
        let rows = 2 * m + seg + m;
        assert_eq!(self.states.as_ref().map_or(0, |s| s.rows), store.rows(), "the state cache follows the store");
        let bf16_store = KernelArg::I32((store.dtype() == StoreDtype::Bf16) as i32);
        self.upload_inputs(&[], memory, 1)?;
        let mut written = vec![0u8; CHAIN_SEGMENTS * md * 4];
        for chunk in tokens.chunks(CHAIN_SEGMENTS * seg) {
            let segments = chunk.len() / seg;
            // every row of a link: [M | R | tokens | M], M and R read from rows 0..m and m..2m of `mem`
            self.upload_chain_ids(chunk, seg, 2 * m, m)?;
            self.state_cache(store.rows() + segments * m)?;
            for j in 0..segments {
                let (a, s) = (self.act.as_mut().expect("allocated"), self.states.as_mut().expect("allocated"));
                self.m.dev.copy((&a.mem, 0), (&mut s.rx, 0), md * 4)?;
                self.retrieve_launches(m)?;
                let (a, s) = (self.act.as_mut().expect("allocated"), self.states.as_mut().expect("allocated"));
                self.m.dev.copy((&s.rx, 0), (&mut a.mem, md * 4), md * 4)?;
                self.replay_write(GraphKey { streams: 1, rows_per_stream: rows, write_rows: m, chain: true })?;
                let (a, s) = (self.act.as_mut().expect("allocated"), self.states.as_mut().expect("allocated"));
                self.m.dev.copy((&a.mem, 0), (&mut s.chained, j * md * 4), md * 4)?;
                let (a, s) = (self.act.as_ref().expect("allocated"), self.states.as_ref().expect("allocated"));
                let args = [self.ptr(&s.rx), self.ptr(&a.mem), KernelArg::I32(md as i32), bf16_store];
                self.dev().launch("stored_state", [blocks_for(md, 256), 1, 1], [256, 1, 1], &args)?;
                self.push_launches(m)?;
            }
            let chained = &self.states.as_ref().expect("allocated").chained;
            self.m.dev.download(chained, 0, &mut written[..segments * md * 4])?;
            for state in written[..segments * md * 4].chunks_exact(md * 4) {
                let values: Vec<f32> =
                    state.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
                store.push(&values)?;
            }
        }
        download_f32(self.dev(), &self.act.as_ref().expect("allocated").mem, memory)
    }
}

impl<D: Device> Step for CudaStep<D> {
    fn write_segment(&mut self, read: &[f32], tokens: &[u32], write: &[f32], out: &mut [f32]) -> Result<()> {
        let segment = [SegmentInput { read, tokens, write }];
        if self.m.model.config.memory.kind == MemoryKind::Armt {
            return self.associative_write_all(&segment, out);
        }
        self.write_all(&segment, out)
    }

    fn write_segments(&mut self, segments: &[SegmentInput<'_>], out: &mut [f32]) -> Result<()> {
        if self.m.model.config.memory.kind == MemoryKind::Armt {
            return self.associative_write_all(segments, out);
        }
        self.write_all(segments, out)
    }

    fn write_chain(&mut self, memory: &mut [f32], tokens: &[u32], seg: usize) -> Result<()> {
        if self.m.model.config.memory.kind == MemoryKind::Armt {
            // its links would write with the state as memory rows
            return Err(Error::Config("an ARMT stream chains through write_associative_chain".into()));
        }
        self.chain(memory, tokens, seg)
    }

    fn prefill(&mut self, read: &[f32], tokens: &[u32], logits: &mut [f32]) -> Result<()> {
        if self.m.model.config.memory.kind == MemoryKind::Armt {
            // the question segment only reads the state (the authors' generate mode), and so does decoding
            self.upload_associative_state(read, 1)?;
            return self.prefill_rows(&[], tokens, logits);
        }
        self.prefill_rows(read, tokens, logits)
    }

    fn decode(&mut self, token: u32, logits: &mut [f32]) -> Result<()> {
        self.decode_token(token, logits)
    }

    fn push_state(&mut self, state: &[f32]) -> Result<()> {
        self.push(state)
    }

    fn truncate_states(&mut self, n: usize) {
        if let Some(s) = &mut self.states {
            s.rows = s.rows.min(n * self.m.model.config.memory.num_mem_tokens);
        }
    }

    fn retrieve(&mut self, store: &RowStore, cur: &[f32], out: &mut [f32]) -> Result<()> {
        self.retrieve_rows(store.rows(), cur, out)
    }

    fn write_associative_chain(
        &mut self,
        state: &mut [f32],
        write: &[f32],
        tokens: &[u32],
        seg: usize,
    ) -> Result<bool> {
        self.associative_chain(state, write, tokens, seg)?;
        Ok(true)
    }

    fn write_retrieval_chain(
        &mut self,
        memory: &mut [f32],
        store: &mut RowStore,
        tokens: &[u32],
        seg: usize,
    ) -> Result<bool> {
        self.retrieval_chain(memory, store, tokens, seg)?;
        Ok(true)
    }
}
