//! The session state file (ENGINEERING.md §3.3): safetensors with `memory` (f32), `store` (RMT-R's past memory
//! states, f32), `tail` (u32 tokens not yet processed) and one metadata entry `rmt-fast-state` holding JSON with
//! the counts, the stream hash and the model's fingerprint. One metadata key keeps the bytes deterministic, so
//! a resumed run can be compared with an uninterrupted one byte for byte.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::weights::write_atomically;
use crate::session::State;

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

/// Serialises a state (made by a model with `fingerprint`) to bytes.
pub fn state_to_bytes(state: &State, fingerprint: u64, n_embd: usize) -> Result<Vec<u8>> {
    let meta = StateMeta {
        format: 1,
        tokens_read: state.tokens_read,
        segments: state.segments,
        tokens_hash: format!("{:016x}", state.tokens_hash),
        model: format!("{fingerprint:016x}"),
        n_embd,
    };
    let (memory, store) = (f32_bytes(&state.memory), f32_bytes(&state.store));
    let tail: Vec<u8> = state.tail.iter().flat_map(|t| t.to_le_bytes()).collect();
    let view = |dtype, shape: Vec<usize>, data| {
        TensorView::new(dtype, shape, data).map_err(|e| Error::Input(e.to_string()))
    };
    let tensors = vec![
        (
            "memory",
            view(
                Dtype::F32,
                vec![state.memory.len() / n_embd, n_embd],
                &memory,
            )?,
        ),
        (
            "store",
            view(Dtype::F32, vec![state.store.len() / n_embd, n_embd], &store)?,
        ),
        ("tail", view(Dtype::U32, vec![state.tail.len()], &tail)?),
    ];
    let metadata = HashMap::from([(
        KEY.to_string(),
        serde_json::to_string(&meta).expect("serialises"),
    )]);
    safetensors::serialize(tensors, Some(metadata)).map_err(|e| Error::Input(e.to_string()))
}

/// Writes a state file atomically (temporary file, then rename).
pub fn save_state(path: &Path, state: &State, fingerprint: u64, n_embd: usize) -> Result<()> {
    write_atomically(path, &state_to_bytes(state, fingerprint, n_embd)?)
}

/// Reads a state file.
pub fn load_state(path: &Path) -> Result<(State, StateMeta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| {
        Error::Input(format!(
            "{}: not an rmt-fast state file: {msg}",
            path.display()
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(KEY))
        .ok_or_else(|| bad(format!("no `{KEY}` metadata")))?;
    let meta: StateMeta = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    if meta.format != 1 {
        return Err(bad(format!(
            "format {} is newer than this build reads (1)",
            meta.format
        )));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let tensor = |name: &str, dtype: Dtype| -> Result<Vec<u8>> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor `{name}` missing")))?;
        if t.dtype() != dtype {
            return Err(bad(format!(
                "tensor `{name}` is {:?}, expected {dtype:?}",
                t.dtype()
            )));
        }
        Ok(t.data().to_vec())
    };
    let floats = |b: Vec<u8>| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let hash =
        u64::from_str_radix(&meta.tokens_hash, 16).map_err(|e| bad(format!("tokens_hash: {e}")))?;
    let state = State {
        memory: floats(tensor("memory", Dtype::F32)?),
        store: floats(tensor("store", Dtype::F32)?),
        tail: tensor("tail", Dtype::U32)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        tokens_read: meta.tokens_read,
        segments: meta.segments,
        tokens_hash: hash,
    };
    Ok((state, meta))
}
