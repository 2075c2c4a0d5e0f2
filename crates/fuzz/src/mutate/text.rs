//! Structure-aware mutations of two small text formats: metadata as `key=value` lines, and the
//! header of a `.npy` file (a Python dict literal: element type, order, shape) with its data.

use rand::seq::IndexedRandom;
use rand::Rng as _;

use super::onnx::{meta_value, META_KEYS};
use crate::Rng;

/// A metadata line changed: a value set to an edge or known value, a known key added, a line
/// removed, or a key repeated (the last one wins).
pub fn mutate_props(rng: &mut Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let keyed: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains('=')).collect();
    let &i = keyed.choose(rng)?;
    let key = lines[i].split_once('=').map(|(k, _)| k.to_string()).unwrap_or_default();
    match rng.random_range(0..5) {
        0 => drop(lines.remove(i)),
        1 => lines.push(format!("{key}={}", meta_value(rng))),
        2 => lines.push(format!("{}={}", META_KEYS.choose(rng).copied().unwrap_or("edgediff.format"), meta_value(rng))),
        _ => lines[i] = format!("{key}={}", meta_value(rng)),
    }
    Some((lines.join("\n") + "\n").into_bytes())
}

/// The bytes of a `.npy` file: magic, version, header length (2 bytes in version 1, 4 after),
/// `dict` padded to a multiple of 64 with a newline, then `data`.
pub fn npy_bytes(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let mut text = dict.to_string();
    let fixed = if version == 1 { 10 } else { 12 };
    while !(fixed + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend([version, 0]);
    match version {
        1 => bytes.extend((text.len().min(u16::MAX as usize) as u16).to_le_bytes()),
        _ => bytes.extend((text.len() as u32).to_le_bytes()),
    }
    bytes.extend(text.as_bytes());
    bytes.extend(data);
    bytes
}

/// The parts of a `.npy` header this module changes.
struct Header {
    version: u8,
    descr: String,
    fortran: String,
    shape: String,
}

const DESCRS: &[&str] =
    &["<f4", ">f4", "|f4", "f4", "<f8", "<f2", "<i4", "|u1", "|b1", "<c8", "O", "<U4", "|S4", "<f4 "];
const DIMS: &[&str] = &["0", "1", "2", "3", "8", "16", "65536", "4294967296", "18446744073709551615", "-1", "1e3", ""];

/// One part of a `.npy` file changed (type, order, shape, version), its data sized to the shape
/// more often than not, so cases get past the size check to the data.
pub fn mutate_npy(rng: &mut Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut h = parse_header(bytes)?;
    match rng.random_range(0..5) {
        0 => h.descr = DESCRS.choose(rng).copied().unwrap_or("<f4").into(),
        1 => h.fortran = ["True", "False", "0", "'x'"].choose(rng).copied().unwrap_or("False").into(),
        2 => h.version = [0u8, 1, 2, 3, 4, 255].choose(rng).copied().unwrap_or(1),
        _ => {
            let dims: Vec<&str> =
                (0..rng.random_range(0..5)).map(|_| DIMS.choose(rng).copied().unwrap_or("1")).collect();
            h.shape = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.join(", ")),
            };
        }
    }
    let count: Option<usize> = h
        .shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .try_fold(1usize, |n, d| d.parse::<usize>().ok().and_then(|d| n.checked_mul(d)));
    let len = match count {
        Some(n) if n <= 4096 && rng.random_bool(0.7) => n * 4,
        _ => rng.random_range(0..64),
    };
    let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    let dict = format!("{{'descr': '{}', 'fortran_order': {}, 'shape': {}, }}", h.descr, h.fortran, h.shape);
    Some(npy_bytes(h.version, &dict, &data))
}

fn parse_header(bytes: &[u8]) -> Option<Header> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes[10..bytes.len().min(4096)]);
    let after = |key: &str| text.find(key).map(|i| &text[i + key.len()..]);
    let descr = after("'descr': '").and_then(|s| s.split('\'').next()).unwrap_or("<f4");
    let fortran = after("'fortran_order': ").and_then(|s| s.split(',').next()).unwrap_or("False");
    let shape = after("'shape': ").and_then(|s| s.split_inclusive(')').next()).unwrap_or("(2,)");
    Some(Header { version: bytes[6], descr: descr.into(), fortran: fortran.into(), shape: shape.into() })
}
