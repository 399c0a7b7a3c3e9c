//! The session state file (ENGINEERING.md §3.3): safetensors with `memory` (f32), `store` (RMT-R's past memory
//! states, f32 or bf16), `tail` (u32 tokens not yet processed) and one metadata entry `rmt-fast-state` holding JSON with
//! the counts, the stream hash and the model's fingerprint. One metadata key keeps the bytes deterministic, so
//! a resumed run can be compared with an uninterrupted one byte for byte.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::session::State;
use crate::store::{RowStore, StoreConfig, StoreDtype};

const KEY: &str = "rmt-fast-state";

/// What a state file records beside the tensors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// File format version.
    pub format: u32,
    /// Tokens read in total.
    pub tokens_read: u64,
    /// Segments processed with write memory.
    pub segments: u64,
    /// Hash of every token read (hex), see [`crate::hash_tokens`].
    pub tokens_hash: String,
    /// [`crate::Model::fingerprint`] of the model that made the state (hex).
    pub model: String,
    /// Model width, to shape the tensors.
    pub n_embd: usize,
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes a state file (made by a model with `fingerprint`) atomically: temporary file, then rename. The store
/// is copied straight from where it lives (RAM or spill file) without another copy in memory.
pub fn save_state(path: &Path, state: &State, fingerprint: u64, n_embd: usize) -> Result<()> {
    let meta = StateMeta {
        format: 1,
        tokens_read: state.tokens_read,
        segments: state.segments,
        tokens_hash: format!("{:016x}", state.tokens_hash),
        model: format!("{fingerprint:016x}"),
        n_embd,
    };
    let memory = f32_bytes(&state.memory);
    let store = state.store.encoded();
    let tail: Vec<u8> = state.tail.iter().flat_map(|t| t.to_le_bytes()).collect();
    let store_dtype = match state.store.dtype() {
        StoreDtype::F32 => "F32",
        StoreDtype::Bf16 => "BF16",
    };
    let (a, b, c) = (memory.len(), memory.len() + store.len(), memory.len() + store.len() + tail.len());
    // rows of memory (RMT, RMT-R); ARMT's associative state is no whole number of rows and is stored flat
    let n = state.memory.len();
    let memory_shape = if n.is_multiple_of(n_embd) { vec![n / n_embd, n_embd] } else { vec![n] };
    // serde_json's map is ordered by key: the header, and so the file, is the same for the same state
    let header = json!({
        "__metadata__": { KEY: serde_json::to_string(&meta).expect("serialises") },
        "memory": {"dtype": "F32", "shape": memory_shape, "data_offsets": [0, a]},
        "store": {"dtype": store_dtype, "shape": [state.store.rows(), n_embd], "data_offsets": [a, b]},
        "tail": {"dtype": "U32", "shape": [state.tail.len()], "data_offsets": [b, c]},
    });
    let mut head = header.to_string().into_bytes();
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let tmp = path.with_extension("tmp-partial");
    let io = |e| Error::io(&tmp, e);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
    for part in [&(head.len() as u64).to_le_bytes()[..], &head, &memory, store, &tail] {
        out.write_all(part).map_err(io)?;
    }
    out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a state file (memory-mapped); the store is kept as `store` configures (its dtype is the file's).
pub fn load_state(path: &Path, store: &StoreConfig) -> Result<(State, StateMeta)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map of a file this process does not modify while reading.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Input(format!("{}: not an rmt-fast state file: {msg}", path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let json =
        header.metadata().as_ref().and_then(|m| m.get(KEY)).ok_or_else(|| bad(format!("no `{KEY}` metadata")))?;
    let meta: StateMeta = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    if meta.format != 1 {
        return Err(bad(format!("format {} is newer than this build reads (1)", meta.format)));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let tensor = |name: &str| st.tensor(name).map_err(|_| bad(format!("tensor `{name}` missing")));
    let expect = |t: &safetensors::tensor::TensorView<'_>, name: &str, dtypes: &[Dtype]| {
        if dtypes.contains(&t.dtype()) {
            Ok(())
        } else {
            Err(bad(format!("tensor `{name}` is {:?}, expected {dtypes:?}", t.dtype())))
        }
    };
    let (memory, stored, tail) = (tensor("memory")?, tensor("store")?, tensor("tail")?);
    expect(&memory, "memory", &[Dtype::F32])?;
    expect(&stored, "store", &[Dtype::F32, Dtype::BF16])?;
    expect(&tail, "tail", &[Dtype::U32])?;
    let dtype = if stored.dtype() == Dtype::BF16 { StoreDtype::Bf16 } else { StoreDtype::F32 };
    let mut rows = RowStore::new(meta.n_embd, StoreConfig { dtype, ..store.clone() });
    rows.push_encoded(stored.data()).map_err(|e| bad(e.to_string()))?;
    let hash = u64::from_str_radix(&meta.tokens_hash, 16).map_err(|e| bad(format!("tokens_hash: {e}")))?;
    let state = State {
        memory: memory.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        store: rows,
        tail: tail.data().chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect(),
        tokens_read: meta.tokens_read,
        segments: meta.segments,
        tokens_hash: hash,
    };
    Ok((state, meta))
}
