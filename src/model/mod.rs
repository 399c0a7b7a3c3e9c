//! The model: configuration plus weights, loaded from and saved to safetensors files.

pub mod config;
mod init;
mod resize;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;
use serde::Deserialize;

pub use config::{AssociativeWrite, Config, MemoryConfig, MemoryKind, RetrievalVersion};
pub use weights::FileDtype;
use weights::Weights;

use crate::error::{Error, Result};

/// An RMT or RMT-R model on a GPT-2 backbone, in f32 on the host.
///
/// ```no_run
/// let model = rmt_fast::Model::load("model.safetensors")?;
/// println!("{} layers, {} parameters", model.config.n_layer, model.parameter_count());
/// # Ok::<(), rmt_fast::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Model {
    /// Shape and memory settings.
    pub config: Config,
    /// All weights, converted to f32 whatever the file stored.
    pub weights: Weights,
}

/// The fields of a Hugging Face GPT-2 `config.json` that the engine uses.
#[derive(Deserialize)]
struct HfConfig {
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    vocab_size: usize,
    n_positions: usize,
    #[serde(default = "hf_eps")]
    layer_norm_epsilon: f32,
    #[serde(default)]
    eos_token_id: Option<u32>,
    /// Not an HF key: a model trained with another GEN marker may record it here.
    #[serde(default)]
    gen_token_id: Option<u32>,
}

fn hf_eps() -> f32 {
    1e-5
}

impl Model {
    /// Loads a model file whose config is stored in its metadata (as `rmt-fast init` and `convert` write it).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, None)
    }

    /// Loads a model file; `memory` supplies the memory settings when the file has no config metadata, in which
    /// case the GPT-2 shape is read from a Hugging Face `config.json` beside it (`gen_token_id` may be added
    /// there; it defaults to GPT-2's `GEN`, 35353).
    pub fn load_with(path: impl AsRef<Path>, memory: Option<MemoryConfig>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path, memory)
    }

    /// A model from safetensors bytes; `path` names the source in errors and locates a `config.json` when the
    /// bytes carry no config (see [`Model::load_with`]).
    pub fn from_bytes(bytes: &[u8], path: &Path, memory: Option<MemoryConfig>) -> Result<Self> {
        let format = |e: safetensors::SafeTensorError| Error::Format { path: path.into(), msg: e.to_string() };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(format)?;
        let config = match meta.metadata().as_ref().and_then(|m| m.get("config")) {
            Some(json) => Config::from_json(json)?,
            None => Self::config_beside(path, memory)?,
        };
        let st = SafeTensors::deserialize(bytes).map_err(format)?;
        let weights = Weights::read(&st, &config)?;
        Ok(Model { config, weights })
    }

    fn config_beside(path: &Path, memory: Option<MemoryConfig>) -> Result<Config> {
        let json_path = path.with_file_name("config.json");
        let text = std::fs::read_to_string(&json_path).map_err(|e| {
            Error::Config(format!(
                "{} has no `config` metadata and {} could not be read ({e})",
                path.display(),
                json_path.display()
            ))
        })?;
        let hf: HfConfig =
            serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", json_path.display())))?;
        let memory = memory.ok_or_else(|| {
            Error::Config(format!("{} has no memory settings in its metadata: give them explicitly", path.display()))
        })?;
        let cfg = Config {
            n_layer: hf.n_layer,
            n_head: hf.n_head,
            n_embd: hf.n_embd,
            vocab_size: hf.vocab_size,
            n_positions: hf.n_positions,
            layer_norm_epsilon: hf.layer_norm_epsilon,
            memory,
            eos_token_id: hf.eos_token_id.unwrap_or(50256),
            gen_token_id: hf.gen_token_id.unwrap_or(35353),
            question_template: None,
            trained_segments: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A randomly initialised model (GPT-2 init: weights normal(0, 0.02), biases 0, LayerNorms 1/0;
    /// memory = randn · std(wte)), deterministic for a seed.
    pub fn random(config: Config, seed: u64) -> Result<Self> {
        config.validate()?;
        let weights = init::random_weights(&config, seed);
        Ok(Model { config, weights })
    }

    /// Safetensors bytes of this model in `dtype`, config in the metadata.
    pub fn to_bytes(&self, dtype: FileDtype) -> Result<Vec<u8>> {
        let meta = HashMap::from([("config".to_string(), self.config.to_json())]);
        weights::serialize_tensors(&self.weights.named(&self.config), dtype, meta)
    }

    /// Writes the model to `path` (atomically: temporary file, then rename).
    pub fn save(&self, path: impl AsRef<Path>, dtype: FileDtype) -> Result<()> {
        weights::write_atomically(path.as_ref(), &self.to_bytes(dtype)?)
    }

    /// A 64-bit fingerprint of the config and every weight value, to recognise the model a state was made with
    /// (the same weights stored in another dtype are another model: their values differ).
    pub fn fingerprint(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut mix = |word: u32| h = (h ^ word as u64).wrapping_mul(0x0000_0100_0000_01b3);
        self.config.to_json().bytes().for_each(|b| mix(b as u32));
        for (name, _, values) in self.weights.named(&self.config) {
            name.bytes().for_each(|b| mix(b as u32));
            values.iter().for_each(|v| mix(v.to_bits()));
        }
        h
    }

    /// Number of stored parameters (a tied LM head counted once).
    pub fn parameter_count(&self) -> usize {
        self.weights.named(&self.config).iter().map(|(_, _, x)| x.len()).sum()
    }
}
