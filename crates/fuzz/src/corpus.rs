//! The committed seed inputs, `corpus/<target>/*`, and the regression inputs,
//! `regressions/<target>/*`, of this crate.

use std::path::{Path, PathBuf};

use crate::FuzzError;

/// This crate's folder (`crates/fuzz`).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn corpus_dir() -> PathBuf {
    crate_dir().join("corpus")
}

pub fn regressions_dir() -> PathBuf {
    crate_dir().join("regressions")
}

/// The seeds of `target`, sorted by file name (so a seed picks the same cases on every
/// machine). A target without seeds is an error: mutating nothing finds nothing.
pub fn load(target: &str) -> Result<Vec<Vec<u8>>, FuzzError> {
    let dir = corpus_dir().join(target);
    let files = files_in(&dir)?;
    if files.is_empty() {
        return Err(FuzzError::file(&dir, "holds no seed inputs (run `edgediff-fuzz gen-corpus`)"));
    }
    files.iter().map(|p| std::fs::read(p).map_err(|e| FuzzError::file(p, e))).collect()
}

/// The files directly in `dir`, sorted.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, FuzzError> {
    let entries = std::fs::read_dir(dir).map_err(|e| FuzzError::file(dir, e))?;
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    Ok(files)
}
