//! The crate's error type: every failure names what was wrong and where, never a panic.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when loading models and running streams.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file (truncated, bad header, overlapping data).
    #[error("{path}: not a valid safetensors file: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        msg: String,
    },
    /// The model configuration is missing, unreadable or inconsistent.
    #[error("model config: {0}")]
    Config(String),
    /// A tensor is missing, misshapen, of an unsupported dtype, or not expected.
    #[error("tensor `{name}`: {msg}")]
    Tensor {
        /// The tensor's name as stored in the file.
        name: String,
        /// What is wrong with it.
        msg: String,
    },
    /// An input (tokens, state, question) does not fit the model.
    #[error("{0}")]
    Input(String),
    /// The CUDA device is missing, or failed (driver, NVRTC, memory, a launch).
    #[error("CUDA: {0}")]
    Device(String),
}

impl Error {
    pub(crate) fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { name: name.into(), msg: msg.into() }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
