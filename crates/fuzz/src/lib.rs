//! Fuzz targets for every reader of untrusted input in edgediff, and a seeded mutation engine
//! that runs them on the stable toolchain (CI has no nightly, so no libFuzzer).
//!
//! A target takes arbitrary bytes and must return on every input: an error is the reader doing
//! its job, while a panic, an abort, a hang or an allocation beyond the worker's address-space
//! limit is a finding. Each target returns a [`Stage`], how far the input got, so a run can show
//! whether its cases reach the deep code or are all refused at the first check.
//!
//! - [`targets::model`]: ONNX bytes through the whole loader, planning, one evaluation and a
//!   two-step sampling loop;
//! - [`targets::meta`]: `key=value` lines as model metadata, then every scheduler built from it;
//! - [`targets::npy`]: a `.npy` file through the float32 reader and back;
//! - [`targets::scheduler_config`]: JSON as diffusers' `scheduler_config.json`, the U-Net's
//!   `config.json` and `model_index.json`, merged into metadata as the runtime does;
//! - [`targets::cli`]: newline-separated words as the `sampler` binary's arguments, run as a
//!   subprocess whose exit code, stderr and leftover files are checked.
//!
//! The engine ([`engine`]) mutates a committed corpus (`corpus/<target>/`) with byte-level and
//! structure-aware mutations ([`mutate`]); the supervisor ([`supervisor`]) runs each target in a
//! worker process so an abort is recorded and the run goes on.

pub mod context;
pub mod corpus;
pub mod engine;
pub mod findings;
pub mod gen_corpus;
pub mod known;
pub mod mutate;
pub mod supervisor;
pub mod targets;
pub mod worker;

pub use context::Context;
pub use targets::{find_target, Stage, Target, TARGETS};

/// The random generator every mutation draws from: small, fast, seedable, and the same stream
/// on every platform, so a seed names the same cases everywhere.
pub type Rng = rand_xoshiro::Xoshiro256PlusPlus;

/// Errors of the fuzz harness itself (not findings: those are [`findings::Finding`]s).
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("unknown target `{0}`; the targets are {1}")]
    UnknownTarget(String, String),
    #[error("{path}: {message}")]
    File { path: std::path::PathBuf, message: String },
    #[error("the sampler binary was not found ({0}); build it with `cargo build --release --bin sampler` or set EDGEDIFF_SAMPLER")]
    NoSampler(String),
    #[error("worker for `{target}`: {message}")]
    Worker { target: String, message: String },
}

impl FuzzError {
    pub(crate) fn file(path: &std::path::Path, message: impl std::fmt::Display) -> FuzzError {
        FuzzError::File { path: path.to_path_buf(), message: message.to_string() }
    }
}
