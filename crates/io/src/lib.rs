//! The files edgediff reads and writes, in one place for every crate and tool:
//! - [`write_atomic`]: an output appears whole or not at all (temporary file, sync, rename), and
//!   only replaces what is ours to replace;
//! - [`read_regular`]: an input read whole only when it is a regular file of a bounded size;
//! - [`npy`]: the float32 `.npy` vectors the sampler, the trainer and the parity tools exchange
//!   (x_T and x_0, little-endian, C order);
//! - [`sha256_hex`]: the digest that names a model file in PNGs, reports and references.
//!
//! Every error names the file it is about, on one line.

mod atomic;
pub mod npy;
mod read;

use std::path::{Path, PathBuf};

pub use atomic::{check_destination, same_file, write_atomic};
pub use read::{open_regular, read_regular};

/// A file that could not be read or written: the path and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl FileError {
    pub fn new(path: &Path, message: impl std::fmt::Display) -> Self {
        FileError { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// The SHA-256 digest of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 digest of the file at `path`, read in pieces (never whole).
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    use sha2::{Digest, Sha256};
    let (mut file, _) = open_regular(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| FileError::new(path, format!("cannot read: {e}")))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_of_abc() {
        assert_eq!(super::sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
