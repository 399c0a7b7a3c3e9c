//! Model weights as plain structs (candle style), and their reading from / writing to safetensors files with the
//! names of ENGINEERING.md §3.1. Every tensor is checked against the config; anything missing, misshapen, of
//! another dtype or unexpected is an error that names the tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::config::{Config, MemoryKind, RetrievalVersion};
use crate::error::{Error, Result};

/// How a linear layer's weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[in, out]`, y = x·W + b: GPT-2's `Conv1D`.
    InOut,
    /// `[out, in]`, y = x·Wᵀ + b: torch `nn.Linear` (the retrieval block) and the LM head.
    OutIn,
}

/// A dense layer `y = x·W + b`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Weight values in `layout` order.
    pub w: Vec<f32>,
    /// Bias (`n_out` values), if any.
    pub b: Option<Vec<f32>>,
    /// Input width.
    pub n_in: usize,
    /// Output width.
    pub n_out: usize,
    /// Storage order of `w`.
    pub layout: Layout,
}

/// LayerNorm scale and shift.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Scale (γ).
    pub w: Vec<f32>,
    /// Shift (β).
    pub b: Vec<f32>,
}

/// One pre-LN GPT-2 block.
#[derive(Clone, Debug)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Packed Q|K|V projection, `[d, 3d]`.
    pub c_attn: Linear,
    /// Attention output projection, `[d, d]`.
    pub attn_proj: Linear,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP up projection, `[d, 4d]`.
    pub c_fc: Linear,
    /// MLP down projection, `[4d, d]`.
    pub mlp_proj: Linear,
}

/// The extra parts of retrieval version 2.
#[derive(Clone, Debug)]
pub struct RetrievalV2 {
    /// LayerNorm on the query (current memory).
    pub ln_q: LayerNorm,
    /// LayerNorm on the stored states.
    pub ln_kv: LayerNorm,
    /// LayerNorm before the MLP.
    pub ln_mlp: LayerNorm,
    /// MLP up projection `[4d, d]` (nn.Linear layout).
    pub fc_1: Linear,
    /// MLP down projection `[d, 4d]`.
    pub fc_2: Linear,
}

/// RMT-R's retrieval block: cross-attention from the current memory to all stored memory states.
#[derive(Clone, Debug)]
pub struct Retrieval {
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection.
    pub o: Linear,
    /// Present for version 2.
    pub v2: Option<RetrievalV2>,
}

/// One layer's ARMT associative memory (RMT-SPEC §3.1), all `nn.Linear` (`[out, in]`).
#[derive(Clone, Debug)]
pub struct Associative {
    /// Query map `[d_mem, d]`, no bias: every row's query before the block.
    pub w_mq: Linear,
    /// Key map `[d_mem, d]`, no bias: the memory rows' keys after the block.
    pub w_mk: Linear,
    /// Value map `[d, d]`, no bias (zero at initialisation).
    pub w_mv: Linear,
    /// Write strength `[1, d]` + bias: β = σ(M·w + b) per memory row.
    pub w_mb: Linear,
}

/// All weights of an RMT / RMT-R / ARMT model.
#[derive(Clone, Debug)]
pub struct Weights {
    /// Token embeddings `[V, d]`.
    pub wte: Vec<f32>,
    /// Position embeddings `[P, d]`.
    pub wpe: Vec<f32>,
    /// Transformer blocks.
    pub blocks: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// Untied LM head `[V, d]`; `None` means tied to `wte`.
    pub lm_head: Option<Vec<f32>>,
    /// Learned memory `[memory_rows, d]`: the first read block (RMT, RMT-R) or the write rows (ARMT).
    pub memory: Vec<f32>,
    /// RMT-R retrieval block.
    pub retrieval: Option<Retrieval>,
    /// ARMT: one associative memory per block; empty for the other kinds.
    pub associative: Vec<Associative>,
}

/// Buffers that stock HF GPT-2 files carry and that are not weights.
fn is_ignored_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// Reads named tensors out of one safetensors file, converting to f32 and remembering which were used.
struct Reader<'a> {
    st: &'a SafeTensors<'a>,
    used: BTreeSet<String>,
}

impl Reader<'_> {
    /// The stored name of a GPT-2 tensor: as given, or with the `transformer.` prefix of stock HF files.
    fn resolve(&self, name: &str) -> Option<String> {
        [name.to_string(), format!("transformer.{name}")].into_iter().find(|n| self.st.tensor(n).is_ok())
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let stored = self.resolve(name).ok_or_else(|| Error::tensor(name, "missing from the model file"))?;
        let view = self.st.tensor(&stored).map_err(|e| Error::tensor(&stored, e.to_string()))?;
        if view.shape() != shape {
            return Err(Error::tensor(
                &stored,
                format!("shape {:?} in the file, but the config needs {:?}", view.shape(), shape),
            ));
        }
        let values = to_f32(&view).map_err(|msg| Error::tensor(&stored, msg))?;
        self.used.insert(stored);
        Ok(values)
    }

    fn optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        match self.resolve(name) {
            Some(_) => self.take(name, shape).map(Some),
            None => Ok(None),
        }
    }

    fn layer_norm(&mut self, prefix: &str, d: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: self.take(&format!("{prefix}.weight"), &[d])?,
            b: self.take(&format!("{prefix}.bias"), &[d])?,
        })
    }

    fn linear(&mut self, prefix: &str, n_in: usize, n_out: usize, layout: Layout) -> Result<Linear> {
        let shape = match layout {
            Layout::InOut => [n_in, n_out],
            Layout::OutIn => [n_out, n_in],
        };
        let w = self.take(&format!("{prefix}.weight"), &shape)?;
        let b = Some(self.take(&format!("{prefix}.bias"), &[n_out])?);
        Ok(Linear { w, b, n_in, n_out, layout })
    }

    /// An `nn.Linear` without bias.
    fn linear_no_bias(&mut self, prefix: &str, n_in: usize, n_out: usize) -> Result<Linear> {
        let w = self.take(&format!("{prefix}.weight"), &[n_out, n_in])?;
        Ok(Linear { w, b: None, n_in, n_out, layout: Layout::OutIn })
    }

    /// Every tensor in the file must have been read (or be a known non-weight buffer).
    fn finish(self) -> Result<()> {
        let mut names: Vec<&str> = self.st.names();
        names.sort_unstable();
        match names.into_iter().find(|n| !self.used.contains(*n) && !is_ignored_buffer(n)) {
            Some(extra) => {
                Err(Error::tensor(extra, "not expected for this config (wrong memory kind or retrieval version?)"))
            }
            None => Ok(()),
        }
    }
}

fn to_f32(view: &TensorView<'_>) -> std::result::Result<Vec<f32>, String> {
    let bytes = view.data();
    let pairs = || bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    Ok(match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => pairs().map(|b| half::bf16::from_bits(b).to_f32()).collect(),
        Dtype::F16 => pairs().map(|b| half::f16::from_bits(b).to_f32()).collect(),
        other => return Err(format!("dtype {other:?} is not supported (use f32, bf16 or f16)")),
    })
}

impl Weights {
    /// Reads and checks every tensor the config calls for.
    pub(crate) fn read(st: &SafeTensors<'_>, cfg: &Config) -> Result<Self> {
        let (d, v) = (cfg.n_embd, cfg.vocab_size);
        let mut r = Reader { st, used: BTreeSet::new() };
        let wte = r.take("wte.weight", &[v, d])?;
        let wpe = r.take("wpe.weight", &[cfg.n_positions, d])?;
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let p = format!("h.{i}");
                Ok(Block {
                    ln_1: r.layer_norm(&format!("{p}.ln_1"), d)?,
                    c_attn: r.linear(&format!("{p}.attn.c_attn"), d, 3 * d, Layout::InOut)?,
                    attn_proj: r.linear(&format!("{p}.attn.c_proj"), d, d, Layout::InOut)?,
                    ln_2: r.layer_norm(&format!("{p}.ln_2"), d)?,
                    c_fc: r.linear(&format!("{p}.mlp.c_fc"), d, 4 * d, Layout::InOut)?,
                    mlp_proj: r.linear(&format!("{p}.mlp.c_proj"), 4 * d, d, Layout::InOut)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = r.layer_norm("ln_f", d)?;
        let lm_head = r.optional("lm_head.weight", &[v, d])?;
        let memory = r.take("memory", &[cfg.memory.memory_rows(), d])?;
        let retrieval = match (cfg.memory.kind, cfg.memory.retrieval) {
            (MemoryKind::RmtR, Some(version)) => Some(Retrieval::read(&mut r, d, version)?),
            _ => None,
        };
        let associative = match cfg.memory.d_mem {
            Some(k) => (0..cfg.n_layer)
                .map(|i| {
                    let p = format!("h.{i}");
                    Ok(Associative {
                        w_mq: r.linear_no_bias(&format!("{p}.W_mq"), d, k)?,
                        w_mk: r.linear_no_bias(&format!("{p}.W_mk"), d, k)?,
                        w_mv: r.linear_no_bias(&format!("{p}.W_mv"), d, d)?,
                        w_mb: r.linear(&format!("{p}.W_mb"), d, 1, Layout::OutIn)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        r.finish()?;
        Ok(Weights { wte, wpe, blocks, ln_f, lm_head, memory, retrieval, associative })
    }

    /// Every tensor, mutable, in the order of [`Weights::named`] (for optimizers and gradient buffers).
    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out: Vec<&mut Vec<f32>> = vec![&mut self.wte, &mut self.wpe];
        for b in &mut self.blocks {
            out.extend([&mut b.ln_1.w, &mut b.ln_1.b]);
            out.extend(lin(&mut b.c_attn));
            out.extend(lin(&mut b.attn_proj));
            out.extend([&mut b.ln_2.w, &mut b.ln_2.b]);
            out.extend(lin(&mut b.c_fc));
            out.extend(lin(&mut b.mlp_proj));
        }
        out.extend([&mut self.ln_f.w, &mut self.ln_f.b]);
        out.extend(self.lm_head.as_mut());
        out.push(&mut self.memory);
        if let Some(r) = &mut self.retrieval {
            for l in [&mut r.q, &mut r.k, &mut r.v, &mut r.o] {
                out.extend(lin(l));
            }
            if let Some(x) = &mut r.v2 {
                out.extend([
                    &mut x.ln_q.w,
                    &mut x.ln_q.b,
                    &mut x.ln_kv.w,
                    &mut x.ln_kv.b,
                    &mut x.ln_mlp.w,
                    &mut x.ln_mlp.b,
                ]);
                out.extend(lin(&mut x.fc_1));
                out.extend(lin(&mut x.fc_2));
            }
        }
        for a in &mut self.associative {
            for l in [&mut a.w_mq, &mut a.w_mk, &mut a.w_mv, &mut a.w_mb] {
                out.extend(lin(l));
            }
        }
        out
    }

    /// The same shapes, all zeros (a gradient buffer).
    pub fn zeros_like(&self) -> Self {
        let mut z = self.clone();
        z.tensors_mut().into_iter().for_each(|t| t.fill(0.0));
        z
    }

    /// Every tensor under its file name, in row-major f32, with its shape.
    pub fn named(&self, cfg: &Config) -> Vec<(String, Vec<usize>, &[f32])> {
        let (d, v) = (cfg.n_embd, cfg.vocab_size);
        let mut out: Vec<(String, Vec<usize>, &[f32])> = vec![
            ("wte.weight".into(), vec![v, d], &self.wte),
            ("wpe.weight".into(), vec![cfg.n_positions, d], &self.wpe),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("h.{i}");
            push_ln(&mut out, &format!("{p}.ln_1"), &b.ln_1);
            push_linear(&mut out, &format!("{p}.attn.c_attn"), &b.c_attn);
            push_linear(&mut out, &format!("{p}.attn.c_proj"), &b.attn_proj);
            push_ln(&mut out, &format!("{p}.ln_2"), &b.ln_2);
            push_linear(&mut out, &format!("{p}.mlp.c_fc"), &b.c_fc);
            push_linear(&mut out, &format!("{p}.mlp.c_proj"), &b.mlp_proj);
        }
        push_ln(&mut out, "ln_f", &self.ln_f);
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".into(), vec![v, d], h));
        }
        out.push(("memory".into(), vec![cfg.memory.memory_rows(), d], &self.memory));
        if let Some(r) = &self.retrieval {
            for (n, l) in [("q_proj", &r.q), ("k_proj", &r.k), ("v_proj", &r.v), ("o_proj", &r.o)] {
                push_linear(&mut out, &format!("retrieval.{n}"), l);
            }
            if let Some(x) = &r.v2 {
                for (n, l) in [("ln_q", &x.ln_q), ("ln_kv", &x.ln_kv), ("ln_mlp", &x.ln_mlp)] {
                    push_ln(&mut out, &format!("retrieval.{n}"), l);
                }
                push_linear(&mut out, "retrieval.fc_1", &x.fc_1);
                push_linear(&mut out, "retrieval.fc_2", &x.fc_2);
            }
        }
        for (i, a) in self.associative.iter().enumerate() {
            for (n, l) in [("W_mq", &a.w_mq), ("W_mk", &a.w_mk), ("W_mv", &a.w_mv), ("W_mb", &a.w_mb)] {
                push_linear(&mut out, &format!("h.{i}.{n}"), l);
            }
        }
        out
    }
}

/// A linear layer's weight and bias.
fn lin(l: &mut Linear) -> Vec<&mut Vec<f32>> {
    let mut v = vec![&mut l.w];
    v.extend(l.b.as_mut());
    v
}

fn push_ln<'a>(out: &mut Vec<(String, Vec<usize>, &'a [f32])>, prefix: &str, ln: &'a LayerNorm) {
    out.push((format!("{prefix}.weight"), vec![ln.w.len()], &ln.w));
    out.push((format!("{prefix}.bias"), vec![ln.b.len()], &ln.b));
}

fn push_linear<'a>(out: &mut Vec<(String, Vec<usize>, &'a [f32])>, prefix: &str, l: &'a Linear) {
    let shape = match l.layout {
        Layout::InOut => vec![l.n_in, l.n_out],
        Layout::OutIn => vec![l.n_out, l.n_in],
    };
    out.push((format!("{prefix}.weight"), shape, &l.w));
    if let Some(b) = &l.b {
        out.push((format!("{prefix}.bias"), vec![l.n_out], b));
    }
}

impl Retrieval {
    fn read(r: &mut Reader<'_>, d: usize, version: RetrievalVersion) -> Result<Self> {
        let lin = |r: &mut Reader<'_>, n: &str, i, o| r.linear(&format!("retrieval.{n}"), i, o, Layout::OutIn);
        let (q, k) = (lin(r, "q_proj", d, d)?, lin(r, "k_proj", d, d)?);
        let (v, o) = (lin(r, "v_proj", d, d)?, lin(r, "o_proj", d, d)?);
        let v2 = match version {
            RetrievalVersion::V1 => None,
            RetrievalVersion::V2 => Some(RetrievalV2 {
                ln_q: r.layer_norm("retrieval.ln_q", d)?,
                ln_kv: r.layer_norm("retrieval.ln_kv", d)?,
                ln_mlp: r.layer_norm("retrieval.ln_mlp", d)?,
                fc_1: lin(r, "fc_1", d, 4 * d)?,
                fc_2: lin(r, "fc_2", 4 * d, d)?,
            }),
        };
        Ok(Retrieval { q, k, v, o, v2 })
    }
}

/// Element type of a written model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDtype {
    /// 32-bit float (exact).
    F32,
    /// bfloat16 (rounded to nearest even).
    Bf16,
    /// IEEE half (rounded to nearest even).
    F16,
}

impl std::str::FromStr for FileDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(FileDtype::F32),
            "bf16" => Ok(FileDtype::Bf16),
            "f16" => Ok(FileDtype::F16),
            _ => Err(format!("unknown dtype `{s}` (f32, bf16 or f16)")),
        }
    }
}

/// Serialises named f32 tensors to safetensors bytes in the given dtype, with string metadata.
pub fn serialize_tensors(
    tensors: &[(String, Vec<usize>, &[f32])],
    dtype: FileDtype,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let encoded: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, x)| match dtype {
            FileDtype::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FileDtype::Bf16 => x.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
            FileDtype::F16 => x.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        })
        .collect();
    let st_dtype = match dtype {
        FileDtype::F32 => Dtype::F32,
        FileDtype::Bf16 => Dtype::BF16,
        FileDtype::F16 => Dtype::F16,
    };
    let views = tensors
        .iter()
        .zip(&encoded)
        .map(|((name, shape, _), bytes)| {
            let view =
                TensorView::new(st_dtype, shape.clone(), bytes).map_err(|e| Error::tensor(name, e.to_string()))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Config(e.to_string()))
}

/// Writes bytes to `path` through a temporary file and a rename, so a crash never leaves half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-partial");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
