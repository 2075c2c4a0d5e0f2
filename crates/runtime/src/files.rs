//! File output that never leaves a partial file, and the `.npy` vectors the sampler and the
//! parity tests exchange (x_T and x_0 as little-endian f32, C order).

use std::io::Write;
use std::path::{Path, PathBuf};

/// An error that names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl FileError {
    fn new(path: &Path, e: impl std::fmt::Display) -> Self {
        FileError { path: path.to_path_buf(), message: e.to_string() }
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place, so
/// readers see either the old file or the complete new one, never a partial write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(FileError::new(path, "directory does not exist"));
    }
    let name = path.file_name().ok_or_else(|| FileError::new(path, "not a file name"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(FileError::new(path, format!("cannot write: {e}")));
    }
    Ok(())
}

/// Encodes an f32 array as `.npy` bytes.
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Result<Vec<u8>, String> {
    use npyz::WriterBuilder;
    let mut out = Vec::new();
    {
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(std::io::Cursor::new(&mut out))
            .begin_nd()
            .map_err(|e| e.to_string())?;
        w.extend(data.iter().copied()).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Writes an f32 array as `.npy`, atomically.
pub fn write_npy(path: &Path, data: &[f32], shape: &[usize]) -> Result<(), FileError> {
    let bytes = npy_bytes(data, shape).map_err(|e| FileError::new(path, e))?;
    write_atomic(path, &bytes)
}

/// Reads an f32 `.npy` file: (values, shape).
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, Vec<usize>), FileError> {
    let bytes = std::fs::read(path).map_err(|e| FileError::new(path, format!("cannot read: {e}")))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| FileError::new(path, format!("not a .npy file: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    match npy.dtype() {
        npyz::DType::Plain(ts) if ts.to_string() == "<f4" => {}
        other => {
            return Err(FileError::new(path, format!("expected little-endian float32 data (<f4), found {other:?}")))
        }
    }
    let data: Vec<f32> = npy.into_vec().map_err(|e| FileError::new(path, format!("truncated or corrupt data: {e}")))?;
    Ok((data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_and_names_bad_files() {
        let dir = tempfile_dir();
        let p = dir.join("x.npy");
        write_npy(&p, &[1.0, -2.5, 3.25, 0.0, 5.0, 6.0], &[1, 2, 3]).unwrap();
        let (d, s) = read_npy(&p).unwrap();
        assert_eq!(d, vec![1.0, -2.5, 3.25, 0.0, 5.0, 6.0]);
        assert_eq!(s, vec![1, 2, 3]);
        std::fs::write(&p, b"garbage").unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("not a .npy"), "{e}");
        let e = write_atomic(&dir.join("missing/dir/x.npy"), b"1").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("edgediff-files-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
