//! Findings: inputs on which a target panicked, aborted the process or hung, saved as
//! `<dir>/<target>-<hash>` (the input) and `<dir>/<target>-<hash>.txt` (what happened), and
//! the per-process file that holds the case being run, so an abort can be reproduced.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::FuzzError;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The target panicked (an assertion of the harness, or a bug in the code under test).
    Panic,
    /// The process died: an abort (e.g. an allocation over the address-space limit), a signal.
    Abort,
    /// One case ran longer than the case time limit.
    Timeout,
    /// A panic the code under test caught itself (the runtime's guard around tract): reported,
    /// not fatal, since the program survives it with a one-line error.
    Guarded,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Panic => "panic",
            Kind::Abort => "abort",
            Kind::Timeout => "timeout",
            Kind::Guarded => "guarded-panic",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        [Kind::Panic, Kind::Abort, Kind::Timeout, Kind::Guarded].into_iter().find(|k| k.name() == name)
    }

    /// Whether a run with this finding fails.
    pub fn is_fatal(self) -> bool {
        self != Kind::Guarded
    }
}

/// One saved finding.
#[derive(Debug, Clone)]
pub struct Finding {
    pub target: String,
    pub kind: Kind,
    /// The saved input.
    pub input: PathBuf,
    /// The panic message and location, or the end of the dead process's stderr.
    pub message: String,
}

impl Finding {
    pub fn to_json(&self) -> serde_json::Value {
        json!({"target": self.target, "kind": self.kind.name(), "input": self.input, "message": self.message})
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Finding> {
        Some(Finding {
            target: v.get("target")?.as_str()?.to_string(),
            kind: Kind::parse(v.get("kind")?.as_str()?)?,
            input: PathBuf::from(v.get("input")?.as_str()?),
            message: v.get("message")?.as_str()?.to_string(),
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} ({})",
            self.target,
            self.kind.name(),
            self.message.lines().next().unwrap_or(""),
            self.input.display()
        )
    }
}

/// Saves `input` and `details` under `dir`; the name holds the input's hash, so saving the same
/// input twice keeps one file.
pub fn save(
    dir: &Path,
    target: &str,
    kind: Kind,
    input: &[u8],
    message: &str,
    details: &str,
) -> Result<Finding, FuzzError> {
    let sub = if kind.is_fatal() { dir.to_path_buf() } else { dir.join(kind.name()) };
    std::fs::create_dir_all(&sub).map_err(|e| FuzzError::file(&sub, e))?;
    let hash = edgediff_io::sha256_hex(input);
    let path = sub.join(format!("{target}-{}", &hash[..16]));
    std::fs::write(&path, input).map_err(|e| FuzzError::file(&path, e))?;
    let report = format!(
        "target: {target}\nkind: {}\nreproduce: cargo run --release -p edgediff-fuzz -- replay --target {target} {}\n\n{message}\n\n{details}\n",
        kind.name(),
        path.display()
    );
    let txt = path.with_extension("txt");
    std::fs::write(&txt, report).map_err(|e| FuzzError::file(&txt, e))?;
    Ok(Finding { target: target.to_string(), kind, input: path, message: message.to_string() })
}

/// The case a worker is running, in a file: its index (8 bytes, little-endian), then its bytes.
/// Written before every case with two system calls on an open file, so it is cheap enough for
/// every case and survives an abort, which no in-process handler can catch.
pub struct CurrentCase {
    file: File,
    path: PathBuf,
}

impl CurrentCase {
    pub fn create(path: &Path) -> Result<CurrentCase, FuzzError> {
        let file = File::create(path).map_err(|e| FuzzError::file(path, e))?;
        Ok(CurrentCase { file, path: path.to_path_buf() })
    }

    pub fn write(&self, index: u64, input: &[u8]) -> Result<(), FuzzError> {
        let mut bytes = index.to_le_bytes().to_vec();
        bytes.extend_from_slice(input);
        self.file.write_all_at(&bytes, 0).map_err(|e| FuzzError::file(&self.path, e))?;
        self.file.set_len(bytes.len() as u64).map_err(|e| FuzzError::file(&self.path, e))
    }

    /// The index and bytes of the case a (dead) worker last wrote to `path`.
    pub fn read(path: &Path) -> Result<(u64, Vec<u8>), FuzzError> {
        let bytes = std::fs::read(path).map_err(|e| FuzzError::file(path, e))?;
        if bytes.len() < 8 {
            return Err(FuzzError::file(path, "holds no case"));
        }
        let index = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
        Ok((index, bytes[8..].to_vec()))
    }
}
