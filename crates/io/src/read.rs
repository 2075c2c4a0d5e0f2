//! Input read whole, within a size: only a regular file is read (a FIFO or a device such as
//! `/dev/zero` would never end), and only when it is no larger than the caller can hold.

use std::io::Read;
use std::path::Path;

use crate::FileError;

/// The regular file at `path`, opened for reading, and its metadata. What `path` names is
/// checked before it is opened (opening a FIFO waits for a writer, forever if none comes) and
/// again after, on the open file.
pub fn open_regular(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), FileError> {
    let check = |meta: &std::fs::Metadata| {
        if meta.is_dir() {
            Err(FileError::new(path, "is a directory, expected a file"))
        } else if !meta.is_file() {
            Err(FileError::new(path, "is not a regular file (a device, FIFO or socket)"))
        } else {
            Ok(())
        }
    };
    let cannot = |e: std::io::Error| FileError::new(path, format!("cannot read: {e}"));
    check(&std::fs::metadata(path).map_err(cannot)?)?;
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    check(&meta)?;
    Ok((file, meta))
}

/// The bytes of the regular file at `path`, refused before reading when it holds more than
/// `max_bytes` (also if it grows past that while being read).
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > max_bytes {
        return Err(FileError::new(
            path,
            format!("holds {} bytes, more than the {max_bytes} expected at most", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::new(path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(FileError::new(path, format!("grew past the {max_bytes} bytes expected at most while read")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_large_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        std::fs::write(&p, [1u8; 10]).unwrap();
        assert_eq!(read_regular(&p, 10).unwrap(), vec![1u8; 10]);
        assert!(read_regular(&p, 9).unwrap_err().to_string().contains("more than the 9"));
        assert!(read_regular(dir.path(), 100).unwrap_err().to_string().contains("directory"));
        #[cfg(unix)]
        assert!(read_regular(Path::new("/dev/zero"), 100).unwrap_err().to_string().contains("not a regular file"));
        // A FIFO with no writer is refused, not waited on.
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
            assert!(read_regular(&fifo, 100).unwrap_err().to_string().contains("not a regular file"));
        }
    }
}
