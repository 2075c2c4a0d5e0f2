//! Output that never leaves a partial file: the bytes go to a temporary file in the destination's
//! directory, are synced, and the file is renamed into place, so a reader sees the old content or
//! the complete new one; a failure removes the temporary file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::FileError;

/// Writes `bytes` to `path` atomically (see the module doc). The new file gets the permissions a
/// plain `File::create` would give it (0666 less the umask), not the temporary file's 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(FileError::new(path, "directory does not exist"));
    }
    let name = path.file_name().ok_or_else(|| FileError::new(path, "not a file name"))?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let cannot = |e: &dyn std::fmt::Display| FileError::new(path, format!("cannot write: {e}"));
    // The temporary file is removed when `tmp` drops, on every early return.
    let mut tmp = builder.tempfile_in(&dir).map_err(|e| cannot(&e))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(|e| cannot(&e))?;
    tmp.persist(path).map_err(|e| cannot(&e.error))?;
    sync_dir(&dir);
    Ok(())
}

/// The directory `path` is written in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes the rename durable. Best effort: some file systems refuse to open directories.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.bin")], "only the output remains");
    }

    #[cfg(unix)]
    #[test]
    fn output_is_readable_like_a_created_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ours, plain) = (dir.path().join("ours"), dir.path().join("plain"));
        write_atomic(&ours, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain));
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing/dir/x.npy");
        let e = write_atomic(&p, b"1").unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("does not exist"), "{e}");
    }
}
