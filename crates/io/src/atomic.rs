//! Output that never leaves a partial file: the bytes go to a temporary file in the destination's
//! directory, are synced, and the file is renamed into place, so a reader sees the old content or
//! the complete new one; a failure removes the temporary file.
//!
//! Only a path that is absent or a writable regular file is replaced ([`check_destination`]): a
//! rename would put a regular file in place of a symbolic link, a device, a FIFO or a read-only
//! file, none of which is ours to replace.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::FileError;

/// Writes `bytes` to `path` atomically (see the module doc). The new file gets the permissions a
/// plain `File::create` would give it (0666 less the umask), not the temporary file's 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    check_destination(path)?;
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

/// Whether `path` may be replaced: absent, or a regular file with a write permission bit. A
/// symbolic link, a directory, a device, a FIFO, a socket or a read-only file is an error naming
/// the path and what it is.
pub fn check_destination(path: &Path) -> Result<(), FileError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FileError::new(path, format!("cannot inspect: {e}"))),
    };
    let kind = meta.file_type();
    let refuse = |what: &str| Err(FileError::new(path, format!("is {what}: refusing to replace it")));
    if kind.is_symlink() {
        return refuse("a symbolic link (write to the path it points to instead)");
    }
    if kind.is_dir() {
        return refuse("a directory");
    }
    if !kind.is_file() {
        return refuse("not a regular file (a device, FIFO or socket)");
    }
    if meta.permissions().readonly() {
        return refuse("read-only");
    }
    Ok(())
}

/// Whether `a` and `b` name the same file, existing or not: the same canonical path, or, for a
/// file that does not exist yet, the same file name in the same (canonical) directory.
pub fn same_file(a: &Path, b: &Path) -> bool {
    fn resolved(p: &Path) -> Option<PathBuf> {
        if let Ok(p) = p.canonicalize() {
            return Some(p);
        }
        Some(parent_dir(p).canonicalize().ok()?.join(p.file_name()?))
    }
    match (resolved(a), resolved(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
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

    #[cfg(unix)]
    #[test]
    fn links_devices_directories_and_read_only_files_are_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.bin");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let read_only = dir.path().join("ro.bin");
        std::fs::write(&read_only, b"keep").unwrap();
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();
        for (path, needle) in [
            (link.as_path(), "symbolic link"),
            (dir.path(), "a directory"),
            (Path::new("/dev/null"), "not a regular file"),
            (read_only.as_path(), "read-only"),
        ] {
            let e = write_atomic(path, b"new").unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(&read_only).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn same_file_resolves_directories_for_files_not_written_yet() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("x.png");
        let b = dir.path().join(".").join("x.png");
        assert!(same_file(&a, &b));
        assert!(!same_file(&a, &dir.path().join("y.png")));
        std::fs::write(&a, b"1").unwrap();
        assert!(same_file(&a, &b));
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing/dir/x.npy");
        let e = write_atomic(&p, b"1").unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("does not exist"), "{e}");
    }
}
