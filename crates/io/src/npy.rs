//! Float32 `.npy` vectors (little-endian, C order): what `sampler --save-raw`/`--init-noise`,
//! the reference vectors of `train sample` and firmware-sim's parity checks exchange.
//!
//! Built on `npyz` rather than `ndarray-npy`: the project's buffers are flat `Vec<f32>` with a
//! shape beside them, so `ndarray` would only be a conversion step; `npyz` reads and writes the
//! same format from plain slices.

use std::path::Path;

use npyz::WriterBuilder;

use crate::{write_atomic, FileError};

/// The `.npy` bytes of `data` with `shape` (the product of `shape` must be `data.len()`).
pub fn encode_f32(data: &[f32], shape: &[usize]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::Cursor::new(&mut out))
        .begin_nd()
        .map_err(|e| e.to_string())?;
    w.extend(data.iter().copied()).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Writes `data` with `shape` as `.npy`, atomically.
pub fn write_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<(), FileError> {
    let bytes = encode_f32(data, shape).map_err(|e| FileError::new(path, e))?;
    write_atomic(path, &bytes)
}

/// Reads a float32 `.npy` file: its values and shape. Any other element type, or data that does
/// not fill the shape, is an error naming the file.
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, Vec<usize>), FileError> {
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
    if Some(data.len()) != shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        return Err(FileError::new(path, format!("{} values do not fill the shape {shape:?}", data.len())));
    }
    Ok((data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write_f32(&p, &[1.0, -2.5, 3.25, 0.0, 5.0, 6.0], &[1, 2, 3]).unwrap();
        let (d, s) = read_f32(&p).unwrap();
        assert_eq!(d, vec![1.0, -2.5, 3.25, 0.0, 5.0, 6.0]);
        assert_eq!(s, vec![1, 2, 3]);
        std::fs::write(&p, b"garbage").unwrap();
        let e = read_f32(&p).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("not a .npy"), "{e}");
    }
}
