//! Model configuration: the GPT-2 shape plus the memory settings (ENGINEERING.md §3.1), stored as JSON in the
//! safetensors metadata under the key `config`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which recurrent memory the model carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryKind {
    /// RMT: the same `m` memory rows are read at the start and written at the end of each segment.
    #[serde(rename = "rmt")]
    Rmt,
    /// RMT-R: reads `[M_t ; R_t]` (2m rows: recurrent + retrieved from all past states), writes `m` rows.
    #[serde(rename = "rmt-r")]
    RmtR,
    /// ARMT (RMT-SPEC §3.1): every block reads a per-layer associative matrix before it and, in segments that
    /// write, `m` learned memory rows appended after the tokens update it with the delta rule after it.
    #[serde(rename = "armt")]
    Armt,
}

/// RMT-R retrieval block (RMT-SPEC §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetrievalVersion {
    /// Single-head cross-attention, gelu on every projection, no LayerNorm.
    #[serde(rename = "v1")]
    V1,
    /// Pre-LN cross-attention with residual, then a residual MLP.
    #[serde(rename = "v2")]
    V2,
}

/// Memory settings of an RMT / RMT-R model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// RMT or RMT-R.
    pub kind: MemoryKind,
    /// `m`: memory rows written per segment (16 in the papers).
    pub num_mem_tokens: usize,
    /// Tokens per segment (512 in the papers).
    pub segment_size: usize,
    /// Retrieval block version; required for RMT-R, absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalVersion>,
    /// ARMT: width of the key projections before the DPFP map (64 in the paper); the associative keys are
    /// [`DPFP_NU`]` · 2 ·` this wide. Required for ARMT, absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_mem: Option<usize>,
    /// ARMT: how a write weighs each memory row's delta (absent: the authors' rule).
    #[serde(default, skip_serializing_if = "AssociativeWrite::is_delta")]
    pub write: AssociativeWrite,
    /// ARMT: rmt-fast's forgetting factor λ (not in the authors' code; absent: 1, theirs). Each write first scales
    /// the layer's `A` and `z` by λ, so a write `n` segments back weighs `λⁿ` of a fresh one: the state stays the
    /// size of about `1 / (1 − λ)` segments' writes on a stream of any length, as in gated delta-rule models. A key
    /// that nothing rewrites reads the same value (`A` and `z` shrink together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<f32>,
}

/// How an ARMT write weighs each memory row's delta `β_j k_jᵀ (v_j − v_old_j)` (RMT-SPEC §3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssociativeWrite {
    /// The authors' delta rule, as written. Reading a written key afterwards moves it only `β‖k‖² / (k·z)` of the
    /// way from the old value to the new one: a fraction of a percent once `z` holds many keys, so on long
    /// streams `A` sums its writes and grows (models/README.md).
    #[default]
    #[serde(rename = "delta")]
    Delta,
    /// rmt-fast's replacing write (not in the authors' code): each row's delta is scaled by
    /// `s = max(1, k·z / (‖k‖² + ε))`, so that reading its own key afterwards moves `β` of the way to the new value,
    /// as a normalised delta rule does. No gradient flows through `s` (as through the authors' `γ`). With `z = 0`
    /// (the first segment) `s = 1`: the first write is the authors'.
    #[serde(rename = "replacing")]
    Replacing,
}

impl AssociativeWrite {
    fn is_delta(&self) -> bool {
        *self == AssociativeWrite::Delta
    }
}

/// ARMT's DPFP order ν (RMT-SPEC §3.1: 3 in every released config).
pub const DPFP_NU: usize = 3;

impl MemoryConfig {
    /// ARMT: the factor each write scales the state by first ([`MemoryConfig::decay`]; 1 when absent).
    pub fn decay_factor(&self) -> f32 {
        self.decay.unwrap_or(1.0)
    }

    /// Rows of the read block before the tokens: `m` for RMT, `2m` for RMT-R, none for ARMT.
    pub fn read_rows(&self) -> usize {
        match self.kind {
            MemoryKind::Rmt => self.num_mem_tokens,
            MemoryKind::RmtR => 2 * self.num_mem_tokens,
            MemoryKind::Armt => 0,
        }
    }

    /// Rows of the learned `memory` tensor: the first read block (RMT, RMT-R) or the write rows (ARMT).
    pub fn memory_rows(&self) -> usize {
        match self.kind {
            MemoryKind::Armt => self.num_mem_tokens,
            _ => self.read_rows(),
        }
    }

    /// ARMT: width of the associative keys (`2 · ν · d_mem`); 0 for the other kinds.
    pub fn key_width(&self) -> usize {
        self.d_mem.map_or(0, |k| 2 * DPFP_NU * k)
    }
}

/// The whole model configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Model width `d`.
    pub n_embd: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Learned positions (`wpe` rows); positions restart at 0 every segment.
    pub n_positions: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    /// Memory settings.
    pub memory: MemoryConfig,
    /// End of text: stops generation.
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    /// The marker after the question that asks for the answer (`GEN` = 35353 for GPT-2's BPE).
    #[serde(default = "default_gen")]
    pub gen_token_id: u32,
    /// How a plain-text question becomes the text the model was trained on, with `{question}` standing for the
    /// trimmed question (bAbI-trained models: `"{question} "`, since bAbI writes "Where is Mary? ").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_template: Option<String>,
    /// The longest samples the model was trained on, in segments: `rmt-fast train` records the longest stage of the
    /// run that made the file (not of the model it started from); absent: not known.
    /// A memory trained on shorter streams may not hold over longer ones: see [`Config::length_warning`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_segments: Option<u64>,
}

fn default_eps() -> f32 {
    1e-5
}
fn default_eos() -> u32 {
    50256
}
fn default_gen() -> u32 {
    35353
}

impl Config {
    /// Parses the JSON form and checks it.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Config = serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The JSON form stored in model files.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }

    /// The text to tokenize for a question typed as plain text (see `question_template`).
    pub fn format_question(&self, question: &str) -> String {
        match &self.question_template {
            Some(t) => t.replace("{question}", question.trim()),
            None => question.to_string(),
        }
    }

    /// A warning when a stream of `segments` segments is longer than the model's training samples
    /// (`trained_segments`): its memory was never trained to hold that long, and answers often fail past it
    /// (the bundled model's card measures how). `None` within the trained length or when it is not recorded.
    ///
    /// ```
    /// let mut cfg = rmt_fast::Model::load("models/default.safetensors")?.config;
    /// cfg.trained_segments = Some(4096);
    /// assert!(cfg.length_warning(4096).is_none());
    /// assert!(cfg.length_warning(7813).unwrap().contains("4096 segments"));
    /// # Ok::<(), rmt_fast::Error>(())
    /// ```
    pub fn length_warning(&self, segments: u64) -> Option<String> {
        let trained = self.trained_segments.filter(|&t| segments > t)?;
        let tokens = |n: u64| n * self.memory.segment_size as u64;
        Some(format!(
            "the stream is {segments} segments ({} tokens) long, {:.1}× the longest samples this model was trained on \
             ({trained} segments, {} tokens): its memory may not hold that long, and its answers are less reliable",
            tokens(segments),
            segments as f64 / trained as f64,
            tokens(trained)
        ))
    }

    /// ARMT: values of the associative state, per layer `A` (`key_width × d`, row-major) then `z` (`key_width`);
    /// 0 for the other kinds.
    pub fn associative_state_len(&self) -> usize {
        self.n_layer * self.memory.key_width() * (self.n_embd + 1)
    }

    /// Values a segment step writes, what the next segment reads: `m` memory rows (RMT, RMT-R), or the whole
    /// associative state (ARMT).
    pub fn written_len(&self) -> usize {
        match self.memory.kind {
            MemoryKind::Armt => self.associative_state_len(),
            _ => self.memory.num_mem_tokens * self.n_embd,
        }
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks that the shape is usable: widths divide, positions cover a whole segment, ids are in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let mem = &self.memory;
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || self.vocab_size == 0 {
            return bad("n_layer, n_head, n_embd and vocab_size must be positive".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd {} is not a multiple of n_head {}", self.n_embd, self.n_head));
        }
        if mem.num_mem_tokens == 0 || mem.segment_size == 0 {
            return bad("memory.num_mem_tokens and memory.segment_size must be positive".into());
        }
        let span = mem.read_rows() + mem.segment_size + mem.num_mem_tokens;
        if span > self.n_positions {
            return bad(format!(
                "a segment spans {span} positions (read {} + segment {} + write {}) but n_positions is {}",
                mem.read_rows(),
                mem.segment_size,
                mem.num_mem_tokens,
                self.n_positions
            ));
        }
        match (mem.kind, mem.retrieval) {
            (MemoryKind::RmtR, None) => return bad("memory.kind rmt-r needs memory.retrieval (v1 or v2)".into()),
            (MemoryKind::Rmt | MemoryKind::Armt, Some(_)) => {
                return bad("memory.retrieval is only for memory.kind rmt-r".into())
            }
            _ => {}
        }
        match (mem.kind, mem.d_mem) {
            (MemoryKind::Armt, None | Some(0)) => return bad("memory.kind armt needs a positive memory.d_mem".into()),
            (MemoryKind::Rmt | MemoryKind::RmtR, Some(_)) => {
                return bad("memory.d_mem is only for memory.kind armt".into())
            }
            _ => {}
        }
        if mem.kind != MemoryKind::Armt && !mem.write.is_delta() {
            return bad("memory.write is only for memory.kind armt".into());
        }
        if let Some(decay) = mem.decay {
            if mem.kind != MemoryKind::Armt {
                return bad("memory.decay is only for memory.kind armt".into());
            }
            if !(decay > 0.0 && decay <= 1.0) {
                return bad(format!("memory.decay must be in (0, 1]; it is {decay}"));
            }
        }
        for (what, id) in [("eos_token_id", self.eos_token_id), ("gen_token_id", self.gen_token_id)] {
            if id as usize >= self.vocab_size {
                return bad(format!("{what} {id} is outside the vocabulary ({})", self.vocab_size));
            }
        }
        if self.question_template.as_ref().is_some_and(|t| !t.contains("{question}")) {
            return bad("question_template must contain {question}".into());
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return bad("layer_norm_epsilon must be positive".into());
        }
        Ok(())
    }
}
