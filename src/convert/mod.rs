//! Importing the authors' PyTorch checkpoints (RMT-SPEC §6) without Python: a `torch.save` zip archive holding a
//! pickled state dict (`memory_cell.memory`, `memory_cell.model.transformer.*`, an optional untied
//! `memory_cell.model.lm_head.weight`; RMT-R's `q_proj`, …, `ln_mlp`), usually bf16. Tensors keep their stored
//! dtype byte for byte; the result is checked like any model file.

mod pickle;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::model::{Config, MemoryConfig, MemoryKind, Model, RetrievalVersion};
use pickle::{TensorRef, Value};

/// Settings a checkpoint does not record.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// A full config; when given, the settings below are not used.
    pub config: Option<Config>,
    /// Tokens per segment (the papers use 512).
    pub segment_size: usize,
    /// Attention heads; default `n_embd / 64`, as in every GPT-2 size.
    pub n_head: Option<usize>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { config: None, segment_size: 512, n_head: None }
    }
}

/// A converted checkpoint.
pub struct Converted {
    /// The model, checked.
    pub model: Model,
    /// The safetensors file to write (tensors in the checkpoint's dtype, config in the metadata).
    pub bytes: Vec<u8>,
    /// Dtypes found in the checkpoint.
    pub dtypes: Vec<String>,
    /// Whether a stored `lm_head` equal to `wte` was dropped (tied).
    pub tied_duplicate_head: bool,
}

const RETRIEVAL_PARTS: [&str; 9] = ["q_proj", "k_proj", "v_proj", "o_proj", "fc_1", "fc_2", "ln_q", "ln_kv", "ln_mlp"];

/// Our name for a checkpoint key; `None` for buffers that are not weights.
fn map_name(key: &str) -> std::result::Result<Option<String>, String> {
    if key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias") {
        return Ok(None);
    }
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() >= 2 && RETRIEVAL_PARTS.contains(&parts[parts.len() - 2]) {
        return Ok(Some(format!("retrieval.{}.{}", parts[parts.len() - 2], parts[parts.len() - 1])));
    }
    let rest = key.strip_prefix("memory_cell.").unwrap_or(key);
    if rest == "memory" {
        return Ok(Some("memory".into()));
    }
    let rest = rest.strip_prefix("model.").unwrap_or(rest);
    if rest == "lm_head.weight" {
        return Ok(Some(rest.into()));
    }
    match rest.strip_prefix("transformer.") {
        Some(name) => Ok(Some(name.into())),
        None => Err(format!("checkpoint key `{key}` is not part of an RMT / RMT-R GPT-2 model")),
    }
}

fn dtype_of(storage: &str) -> Option<(Dtype, usize)> {
    match storage {
        "FloatStorage" => Some((Dtype::F32, 4)),
        "BFloat16Storage" => Some((Dtype::BF16, 2)),
        "HalfStorage" => Some((Dtype::F16, 2)),
        _ => None,
    }
}

/// The tensor's elements in row-major order, gathered through its strides.
fn gather(t: &TensorRef, storage: &[u8], width: usize) -> std::result::Result<Vec<u8>, String> {
    let numel: usize = t.size.iter().product();
    let mut out = Vec::with_capacity(numel * width);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        let bytes = storage.get(at * width..(at + 1) * width).ok_or("tensor reaches past its storage")?;
        out.extend_from_slice(bytes);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

/// Derives the config from tensor shapes and the options.
fn infer_config(shapes: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>, opts: &ConvertOptions) -> Result<Config> {
    if let Some(c) = &opts.config {
        return Ok(c.clone());
    }
    let shape =
        |n: &str| shapes.get(n).map(|t| t.1.clone()).ok_or_else(|| Error::tensor(n, "missing from the checkpoint"));
    let (wte, wpe, memory) = (shape("wte.weight")?, shape("wpe.weight")?, shape("memory")?);
    let n_embd = wte[1];
    let n_layer = (0..).take_while(|i| shapes.contains_key(&format!("h.{i}.ln_1.weight"))).count();
    let retrieval = shapes.contains_key("retrieval.q_proj.weight");
    let memory_cfg = MemoryConfig {
        kind: if retrieval { MemoryKind::RmtR } else { MemoryKind::Rmt },
        num_mem_tokens: if retrieval { memory[0] / 2 } else { memory[0] },
        segment_size: opts.segment_size,
        retrieval: retrieval.then(|| {
            if shapes.contains_key("retrieval.ln_q.weight") {
                RetrievalVersion::V2
            } else {
                RetrievalVersion::V1
            }
        }),
        d_mem: None,
        write: Default::default(),
        decay: None,
    };
    let n_head = match opts.n_head {
        Some(h) => h,
        None if n_embd % 64 == 0 => n_embd / 64,
        None => return Err(Error::Config(format!("width {n_embd} is not a GPT-2 size: give the number of heads"))),
    };
    let cfg = Config {
        n_layer,
        n_head,
        n_embd,
        vocab_size: wte[0],
        n_positions: wpe[0],
        layer_norm_epsilon: 1e-5,
        memory: memory_cfg,
        eos_token_id: 50256,
        gen_token_id: 35353,
        question_template: None,
        trained_segments: None,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Reads a PyTorch checkpoint and converts it.
pub fn import_pytorch(path: &Path, opts: &ConvertOptions) -> Result<Converted> {
    let bad = |msg: String| Error::Input(format!("{}: {msg}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        let head = std::fs::read(path).ok().and_then(|b| b.first().copied());
        if head == Some(0x80) {
            bad("legacy (pre-1.6) PyTorch format: re-save it with torch.save(state_dict, path) from a current torch"
                .into())
        } else {
            bad(format!("not a PyTorch checkpoint (zip archive): {e}"))
        }
    })?;
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    let pkl = names.iter().find(|n| n.ends_with("data.pkl")).ok_or_else(|| bad("no data.pkl in the archive".into()))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut entry = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).map_err(|e| bad(format!("archive entry {name}: {e}")))?;
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        Ok(buf)
    };
    if names.contains(&format!("{prefix}byteorder")) && entry(&format!("{prefix}byteorder"))? != b"little" {
        return Err(bad("big-endian checkpoints are not supported".into()));
    }
    let root = pickle::load(&entry(pkl)?).map_err(|e| bad(format!("data.pkl: {e}")))?;
    let dict = match root {
        Value::Dict(d) => d,
        other => return Err(bad(format!("expected a state dict, found {other:?}"))),
    };
    let dict = match dict.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == "state_dict" || s == "model")) {
        Some((_, Value::Dict(inner))) => inner.clone(),
        _ => dict,
    };

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (k, v) in dict {
        let (Value::Str(key), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        let Some(name) = map_name(&key).map_err(bad)? else {
            continue;
        };
        let (dtype, width) = dtype_of(&t.storage)
            .ok_or_else(|| Error::tensor(&key, format!("{} is not supported (float, bfloat16 or half)", t.storage)))?;
        if !storages.contains_key(&t.key) {
            let data = entry(&format!("{prefix}data/{}", t.key))?;
            storages.insert(t.key.clone(), data);
        }
        let bytes = gather(&t, &storages[&t.key], width).map_err(|e| Error::tensor(&key, e))?;
        tensors.insert(name, (dtype, t.size.clone(), bytes));
    }
    let tied = matches!((tensors.get("lm_head.weight"), tensors.get("wte.weight")), (Some(h), Some(w)) if h == w);
    if tied {
        tensors.remove("lm_head.weight");
    }
    let config = infer_config(&tensors, opts)?;
    let mut dtypes: Vec<String> = tensors.values().map(|t| format!("{:?}", t.0)).collect();
    dtypes.sort();
    dtypes.dedup();
    let views = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)).map_err(|e| Error::tensor(n, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("config".to_string(), config.to_json())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))?;
    let model = Model::from_bytes(&bytes, path, None)?;
    Ok(Converted { model, bytes, dtypes, tied_duplicate_head: tied })
}
