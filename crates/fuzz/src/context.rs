//! What a target needs besides its input: a scratch folder for the files it writes (the `.npy`
//! and configuration readers take paths) and, for the CLI target, the `sampler` binary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::FuzzError;

/// Environment variable naming the `sampler` binary the CLI target runs.
pub const SAMPLER_ENV: &str = "EDGEDIFF_SAMPLER";

/// A target's surroundings; the scratch folder is removed when the context is dropped.
pub struct Context {
    scratch: tempfile::TempDir,
    sampler: Result<PathBuf, String>,
}

impl Context {
    /// A fresh scratch folder, and the sampler binary looked up (see [`find_sampler`]).
    pub fn new() -> Result<Context, FuzzError> {
        let scratch = tempfile::Builder::new()
            .prefix("edgediff-fuzz-")
            .tempdir()
            .map_err(|e| FuzzError::file(&std::env::temp_dir(), format!("cannot create a scratch folder: {e}")))?;
        Ok(Context { scratch, sampler: find_sampler() })
    }

    /// One context per process, for callers that hold none (libFuzzer targets, tests). Its
    /// folder lives as long as the process.
    pub fn shared() -> &'static Context {
        static SHARED: OnceLock<Context> = OnceLock::new();
        SHARED.get_or_init(|| Context::new().expect("create the fuzz scratch folder"))
    }

    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// The `sampler` binary, or why it was not found.
    pub fn sampler(&self) -> Result<&Path, FuzzError> {
        self.sampler.as_deref().map_err(|e| FuzzError::NoSampler(e.clone()))
    }
}

/// `$EDGEDIFF_SAMPLER`, else `sampler` beside this executable (`target/release/`) or one folder
/// up (a test binary in `target/release/deps/`), else the workspace's `target/release/sampler`.
pub fn find_sampler() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(SAMPLER_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("${SAMPLER_ENV}={} is not a file", path.display())) };
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(Path::parent);
    let candidates = [beside.map(Path::to_path_buf), beside.and_then(Path::parent).map(Path::to_path_buf)]
        .into_iter()
        .flatten()
        .chain([workspace_root().join("target").join("release")])
        .map(|dir| dir.join("sampler"));
    let tried: Vec<PathBuf> = candidates.collect();
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let names: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        format!("looked at {}", names.join(", "))
    })
}

/// The repository root (this crate is `crates/fuzz`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().nth(2).unwrap_or(manifest).to_path_buf()
}
