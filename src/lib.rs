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
pub use model::{AssociativeWrite, Config, FileDtype, MemoryConfig, MemoryKind, Model, RetrievalVersion};
pub use session::{hash_tokens, Answer, Session, State, EMPTY_STREAM_HASH};

/// Where segment steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend with its fast kernels (within a few f32 ulps of the reference).
    Cpu,
    /// The exact f32 CPU reference: the oracle the other paths are tested against.
    CpuReference,
}

/// Makes one [`backend::Step`] per session.
type StepFactory = Arc<dyn Fn() -> Box<dyn backend::Step> + Send + Sync>;

/// What an engine's sessions run on.
enum Backend {
    Cpu(Kernels),
    Steps(StepFactory),
}

/// A loaded model on a device; opens sessions (one per stream).
pub struct Engine {
    model: Arc<Model>,
    backend: Backend,
    store: store::StoreConfig,
}

impl Engine {
    /// An engine running `model` on `device`.
    pub fn new(model: Model, device: Device) -> Self {
        let kernels = match device {
            Device::Cpu => Kernels::Fast,
            Device::CpuReference => Kernels::Reference,
        };
        Engine { model: Arc::new(model), backend: Backend::Cpu(kernels), store: store::StoreConfig::default() }
    }

    /// An engine on the first CUDA GPU, with weights and activations stored in `precision` (bf16 is the fast
    /// mode, f32 the checking one). A machine without a driver or GPU gets an [`Error::Device`] saying why.
    pub fn cuda(model: Model, precision: backend::cuda::Precision) -> Result<Self> {
        // memory the kernels do not cover is refused before the GPU is looked for; the shape once the GPU is there
        backend::cuda::supports_memory(&model.config)?;
        let model = Arc::new(model);
        let gpu = backend::cuda::Gpu::new(0, precision)?;
        let uploaded = backend::cuda::CudaModel::new(gpu, Arc::clone(&model))?;
        Ok(Self::with_steps(model, move || Box::new(backend::cuda::CudaStep::new(Arc::clone(&uploaded)))))
    }

    /// An engine whose sessions run on steps made by `steps`: a backend of your own (another device, an
    /// instrumented or emulated one) behind the [`backend::Step`] seam.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use rmt_fast::{backend::cpu::{CpuStep, Kernels}, store::StoreConfig, Config, Engine, Model};
    /// # let cfg = Config::from_json(r#"{"n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 64,
    /// #   "n_positions": 40, "eos_token_id": 63, "gen_token_id": 62,
    /// #   "memory": {"kind": "rmt", "num_mem_tokens": 2, "segment_size": 8}}"#).unwrap();
    /// let model = Arc::new(Model::random(cfg, 0)?);
    /// let m = Arc::clone(&model);
    /// let engine = Engine::with_steps(model, move || {
    ///     Box::new(CpuStep::new(Arc::clone(&m), Kernels::Reference, &StoreConfig::default()))
    /// });
    /// engine.session().read(&[1, 2, 3, 4, 5, 6, 7, 8, 9])?;
    /// # Ok::<(), rmt_fast::Error>(())
    /// ```
    pub fn with_steps(model: Arc<Model>, steps: impl Fn() -> Box<dyn backend::Step> + Send + Sync + 'static) -> Self {
        Engine { model, backend: Backend::Steps(Arc::new(steps)), store: store::StoreConfig::default() }
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

    /// How many segments a caller should hand a session per [`Session::read`]: 1 on the CPU (nothing to gain, and
    /// a caller that checks for Ctrl-C between reads stays responsive), 64 on other backends, which may run the
    /// segments of one read back to back without the host in between ([`backend::Step::write_chain`], and for
    /// RMT-R and ARMT `write_retrieval_chain` and `write_associative_chain`).
    pub fn segments_per_read(&self) -> usize {
        match self.backend {
            Backend::Cpu(_) => 1,
            Backend::Steps(_) => 64,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn step(&self) -> Box<dyn backend::Step> {
        match &self.backend {
            Backend::Cpu(kernels) => Box::new(CpuStep::new(Arc::clone(&self.model), *kernels, &self.store)),
            Backend::Steps(make) => make(),
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
