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

/// Reads a float32 `.npy` file: its values and shape. Any other element type, a shape the data
/// does not fill exactly (short data, or bytes after it), or a C-order flag other than C order,
/// is an error naming the file. The data's size is checked against the file before anything is
/// allocated for it.
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, Vec<usize>), FileError> {
    read_f32_at_most(path, u64::MAX)
}

/// As [`read_f32`], refusing a file of more than `max_bytes` before reading it (a caller that
/// knows the shape it expects passes its size and a header's worth more).
pub fn read_f32_at_most(path: &Path, max_bytes: u64) -> Result<(Vec<f32>, Vec<usize>), FileError> {
    let bytes = crate::read_regular(path, max_bytes)?;
    // npyz allocates the header's stated length before reading it: check it against the file.
    match header_len(&bytes) {
        Some(header) if header <= bytes.len() => {}
        Some(header) => {
            return Err(FileError::new(path, format!("header says {header} bytes, the file holds {}", bytes.len())))
        }
        None => return Err(FileError::new(path, "not a .npy file: no magic string and version 1, 2 or 3")),
    }
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| FileError::new(path, format!("not a .npy file: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    match npy.dtype() {
        npyz::DType::Plain(ts) if ts.to_string() == "<f4" => {}
        other => {
            return Err(FileError::new(path, format!("expected little-endian float32 data (<f4), found {other:?}")))
        }
    }
    if npy.order() != npyz::Order::C {
        return Err(FileError::new(path, "expected C-order data (fortran_order False)"));
    }
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let data_bytes = count.and_then(|n| n.checked_mul(4));
    match (data_bytes, header_len(&bytes)) {
        (Some(data), Some(header)) if header.checked_add(data) == Some(bytes.len()) => {}
        (Some(data), Some(header)) => {
            return Err(FileError::new(
                path,
                format!(
                    "shape {shape:?} needs {data} bytes of data, the file holds {}",
                    bytes.len().saturating_sub(header)
                ),
            ))
        }
        _ => return Err(FileError::new(path, format!("shape {shape:?} is too large"))),
    }
    let data: Vec<f32> = npy.into_vec().map_err(|e| FileError::new(path, format!("truncated or corrupt data: {e}")))?;
    Ok((data, shape))
}

/// Where the data of a `.npy` file starts: the magic string, the version, the header length
/// (2 bytes in version 1, 4 after) and the header.
fn header_len(bytes: &[u8]) -> Option<usize> {
    let le = |b: &[u8]| b.iter().rev().fold(0usize, |n, &x| n << 8 | usize::from(x));
    match bytes.get(6)? {
        1 => Some(10 + le(bytes.get(8..10)?)),
        2 | 3 => Some(12 + le(bytes.get(8..12)?)),
        _ => None,
    }
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
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, [good.as_slice(), &[0, 0, 0, 0]].concat()).unwrap();
        let e = read_f32(&p).unwrap_err().to_string();
        assert!(e.contains("needs 24 bytes of data, the file holds 28"), "{e}");
        std::fs::write(&p, &good[..good.len() - 4]).unwrap();
        let e = read_f32(&p).unwrap_err().to_string();
        assert!(e.contains("holds 20"), "{e}");
        std::fs::write(&p, b"garbage").unwrap();
        let e = read_f32(&p).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("not a .npy"), "{e}");
    }

    #[test]
    fn a_huge_shape_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.npy");
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{header:<118}\n");
        bytes.extend((padded.len() as u16).to_le_bytes());
        bytes.extend(padded.as_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = read_f32(&p).unwrap_err().to_string();
        assert!(e.contains("too large") || e.contains("needs"), "{e}");
    }
}
