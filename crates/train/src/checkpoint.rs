//! Crash-safe files: atomic single-file writes and whole-checkpoint directories.
//!
//! Layout of a run directory:
//! ```text
//! RUN_DIR/latest                      name of the newest complete checkpoint (atomic pointer)
//! RUN_DIR/checkpoints/step-00000200/  model.mpk optim.mpk ema.mpk state.json
//! RUN_DIR/loss.csv, RUN_DIR/loss.png  refreshed at every checkpoint
//! ```
//! A checkpoint is written into a temporary directory, synced, renamed into place, and only
//! then does `latest` (itself replaced atomically) point at it; older checkpoints are deleted
//! last. A process killed at any instant leaves `latest` naming a complete checkpoint, so a run
//! loses at most the steps since the previous one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::Backend;

pub const MODEL_FILE: &str = "model.mpk";
pub const OPTIM_FILE: &str = "optim.mpk";
pub const EMA_FILE: &str = "ema.mpk";
pub const STATE_FILE: &str = "state.json";
const LATEST: &str = "latest";
const CHECKPOINTS: &str = "checkpoints";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0} has no checkpoint (no `latest` file): nothing to resume or export")]
    NoCheckpoint(PathBuf),
    #[error("checkpoint file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot serialise {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error(transparent)]
    File(#[from] edgediff_io::FileError),
}

/// Makes a rename durable. Best effort: some file systems refuse to open directories.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Serialises a burn record at full (f32) precision, so a reload is bit-identical.
pub fn record_to_bytes<B: Backend, R: Record<B>>(record: R, what: &'static str) -> Result<Vec<u8>, CheckpointError> {
    Recorder::<B>::record(&NamedMpkBytesRecorder::<FullPrecisionSettings>::default(), record, ())
        .map_err(|e| CheckpointError::Encode { what, reason: e.to_string() })
}

/// Inverse of [`record_to_bytes`]; `path` only names the source in errors.
pub fn record_from_bytes<B: Backend, R: Record<B>>(
    bytes: Vec<u8>,
    path: &Path,
    device: &B::Device,
) -> Result<R, CheckpointError> {
    Recorder::<B>::load(&NamedMpkBytesRecorder::<FullPrecisionSettings>::default(), bytes, device)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_path_buf(), reason: first_line(&e.to_string()) })
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).to_string()
}

/// Creates the run directory (and parents); the error names it.
pub fn create_run_dir(run_dir: &Path) -> Result<(), CheckpointError> {
    let checkpoints = run_dir.join(CHECKPOINTS);
    fs::create_dir_all(&checkpoints).map_err(|e| CheckpointError::Write { path: run_dir.to_path_buf(), source: e })?;
    // Prove the directory is writable now rather than after the first interval of training.
    let probe = run_dir.join(format!(".write-test-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| CheckpointError::Write { path: run_dir.to_path_buf(), source: e })?;
    let _ = fs::remove_file(probe);
    Ok(())
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes one checkpoint: `files` are (file name, bytes). Returns the checkpoint directory.
pub fn save(run_dir: &Path, step: u64, files: &[(&str, &[u8])]) -> Result<PathBuf, CheckpointError> {
    let checkpoints = run_dir.join(CHECKPOINTS);
    let name = step_dir_name(step);
    let final_dir = checkpoints.join(&name);
    let tmp_dir = checkpoints.join(format!(".tmp-{name}-{}", std::process::id()));
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Write { path, source }
    };
    fs::create_dir_all(&checkpoints).map_err(werr(&checkpoints))?;
    if tmp_dir.exists() {
        fs::remove_dir_all(&tmp_dir).map_err(werr(&tmp_dir))?;
    }
    fs::create_dir(&tmp_dir).map_err(werr(&tmp_dir))?;
    for (file, bytes) in files {
        let path = tmp_dir.join(file);
        let mut f = fs::File::create(&path).map_err(werr(&path))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(werr(&path))?;
    }
    sync_dir(&tmp_dir);
    if final_dir.exists() {
        // Same step saved twice (e.g. Ctrl-C right after a periodic save): `latest` may point
        // here, so move it aside first instead of deleting it under the pointer.
        let old = checkpoints.join(format!(".old-{name}-{}", std::process::id()));
        fs::rename(&final_dir, &old).map_err(werr(&final_dir))?;
        fs::rename(&tmp_dir, &final_dir).map_err(werr(&final_dir))?;
        let _ = fs::remove_dir_all(old);
    } else {
        fs::rename(&tmp_dir, &final_dir).map_err(werr(&final_dir))?;
    }
    sync_dir(&checkpoints);
    let latest = run_dir.join(LATEST);
    edgediff_io::write_atomic(&latest, format!("{name}\n").as_bytes())?;
    // Only now is it safe to drop older checkpoints and leftovers of killed runs.
    if let Ok(entries) = fs::read_dir(&checkpoints) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy() != name {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(final_dir)
}

/// Directory of the newest complete checkpoint in `run_dir`.
pub fn latest(run_dir: &Path) -> Result<PathBuf, CheckpointError> {
    let pointer = run_dir.join(LATEST);
    let name = match fs::read_to_string(&pointer) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::NoCheckpoint(run_dir.to_path_buf()))
        }
        Err(e) => return Err(CheckpointError::Read { path: pointer, source: e }),
    };
    if !name.starts_with("step-") || name.contains(['/', '\\']) {
        return Err(CheckpointError::Corrupt { path: pointer, reason: format!("unexpected content {name:?}") });
    }
    Ok(run_dir.join(CHECKPOINTS).join(name))
}

/// Reads one file of a checkpoint directory.
pub fn read(dir: &Path, file: &str) -> Result<Vec<u8>, CheckpointError> {
    let path = dir.join(file);
    fs::read(&path).map_err(|e| CheckpointError::Read { path, source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_and_latest_points_at_newest() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        create_run_dir(&run).unwrap();
        assert!(matches!(latest(&run), Err(CheckpointError::NoCheckpoint(_))));
        save(&run, 2, &[("a.bin", b"two")]).unwrap();
        save(&run, 4, &[("a.bin", b"four")]).unwrap();
        let d = latest(&run).unwrap();
        assert!(d.ends_with("step-00000004"));
        assert_eq!(read(&d, "a.bin").unwrap(), b"four");
        assert!(!run.join("checkpoints/step-00000002").exists(), "older checkpoint removed");
        // Saving the same step again replaces it in place.
        save(&run, 4, &[("a.bin", b"again")]).unwrap();
        assert_eq!(read(&latest(&run).unwrap(), "a.bin").unwrap(), b"again");
        assert_eq!(fs::read_dir(run.join("checkpoints")).unwrap().count(), 1);
    }
}
