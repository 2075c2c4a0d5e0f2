//! Errors of the harness: each renders as one line that says what is wrong and how to fix it.

use std::path::PathBuf;

/// apt packages the harness needs on the host (Debian/Ubuntu names).
pub const APT_INSTALL: &str = "apt-get install -y qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc";

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown profile `{name}` (known: {known})")]
    UnknownProfile { name: String, known: String },
    #[error("profile {path}: {message}")]
    BadProfile { path: PathBuf, message: String },
    #[error("missing tools: {missing}; install with: {install}")]
    MissingTools { missing: String, install: String },
    #[error("reference {dir}: {message}")]
    Reference { dir: PathBuf, message: String },
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<edgediff_io::FileError> for SimError {
    fn from(e: edgediff_io::FileError) -> Self {
        SimError::File { path: e.path, message: e.message }
    }
}

impl SimError {
    pub(crate) fn file(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        SimError::File { path: path.to_path_buf(), message: e.to_string() }
    }
}
