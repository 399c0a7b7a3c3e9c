//! # rmt-fast
//!
//! Recurrent Memory Transformer inference on a GPT-2 backbone: RMT and RMT with self-retrieval (RMT-R, both
//! retrieval versions), reading a token stream segment by segment in linear time and constant memory, exactly as
//! the authors' PyTorch code computes it (see `RMT-SPEC.md`).
//!
//! ```
//! use rmt_fast::{Config, Engine, Model};
//!
//! // A tiny random model (use `Model::load("model.safetensors")` for a real one).
//! let config = Config::from_json(r#"{"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 64,
//!     "n_positions": 64, "eos_token_id": 63, "gen_token_id": 62,
//!     "memory": {"kind": "rmt", "num_mem_tokens": 4, "segment_size": 16}}"#)?;
//! let engine = Engine::cpu(Model::random(config, 42)?);
//!
//! let mut session = engine.session();
//! session.read(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18])?; // one segment + a tail of 2
//! let saved = session.snapshot();
//! let answer = session.ask(&[20, 21, 22], 5)?; // the state is not disturbed by asking
//! assert_eq!(session.snapshot(), saved);
//!
//! // A restored session continues exactly as the original.
//! let mut again = engine.restore(saved)?;
//! assert_eq!(again.ask(&[20, 21, 22], 5)?, answer);
//! # Ok::<(), rmt_fast::Error>(())
//! ```

#![warn(missing_docs)]

pub mod babilong;
pub mod backend;
mod batch;
pub mod convert;
mod error;
pub mod model;
pub mod rng;
mod session;
pub mod state_file;
pub mod store;
pub mod stream;
pub mod train;

use std::sync::Arc;

use backend::cpu::{CpuStep, Kernels};

pub use batch::Batch;
pub use error::{Error, Result};
pub use model::{Config, FileDtype, MemoryConfig, MemoryKind, Model, RetrievalVersion};
pub use session::{hash_tokens, Answer, Session, State, EMPTY_STREAM_HASH};

/// Where segment steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend with its fast kernels (within a few f32 ulps of the reference).
    Cpu,
    /// The exact f32 CPU reference: the oracle the other paths are tested against.
    CpuReference,
}

/// A loaded model on a device; opens sessions (one per stream).
pub struct Engine {
    model: Arc<Model>,
    device: Device,
    store: store::StoreConfig,
}

impl Engine {
    /// An engine running `model` on `device`.
    pub fn new(model: Model, device: Device) -> Self {
        Engine { model: Arc::new(model), device, store: store::StoreConfig::default() }
    }

    /// An engine on the CPU backend (fast kernels).
    pub fn cpu(model: Model) -> Self {
        Self::new(model, Device::Cpu)
    }

    /// An engine on the exact f32 CPU reference.
    pub fn cpu_reference(model: Model) -> Self {
        Self::new(model, Device::CpuReference)
    }

    /// How sessions keep RMT-R stores (dtype, RAM budget, spill directory); default f32, 2 GiB, the system's
    /// temporary directory.
    pub fn with_store(mut self, store: store::StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn step(&self) -> Box<dyn backend::Step> {
        match self.device {
            Device::Cpu => Box::new(CpuStep::new(Arc::clone(&self.model), Kernels::Fast, &self.store)),
            Device::CpuReference => Box::new(CpuStep::new(Arc::clone(&self.model), Kernels::Reference, &self.store)),
        }
    }

    /// `n` new sessions read together in lockstep (throughput mode): see [`Batch`].
    ///
    /// ```
    /// # use rmt_fast::{Config, Engine, Model};
    /// # let cfg = Config::from_json(r#"{"n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 64,
    /// #   "n_positions": 40, "eos_token_id": 63, "gen_token_id": 62,
    /// #   "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 8}}"#).unwrap();
    /// let engine = Engine::cpu(Model::random(cfg, 0)?);
    /// let mut batch = engine.batch(2);
    /// batch.read(&[&[1, 2, 3, 4, 5, 6, 7, 8, 9], &[9, 8, 7, 6, 5, 4, 3, 2, 1]])?; // one segment each, in one step
    /// let answers: Vec<_> = batch.sessions().iter_mut().map(|s| s.ask(&[10, 11], 3)).collect();
    /// # Ok::<(), rmt_fast::Error>(())
    /// ```
    pub fn batch(&self, n: usize) -> Batch {
        Batch::new((0..n).map(|_| self.session()).collect(), self.step())
    }

    /// A new session at the start of a stream.
    pub fn session(&self) -> Session {
        Session::new(Arc::clone(&self.model), self.step(), &self.store)
    }

    /// A session continuing from `state` (checked against the model).
    pub fn restore(&self, state: State) -> Result<Session> {
        Session::restore(Arc::clone(&self.model), self.step(), state)
    }
}
