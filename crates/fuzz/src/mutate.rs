//! Mutations. Byte-level ones here work on any input (bit flips, edge bytes and words, inserted,
//! deleted and duplicated ranges, splices of two inputs, numbers swapped for edge values); the
//! submodules know a format and change what a byte mutation would rarely reach intact: an ONNX
//! model's fields, a JSON configuration's values, metadata lines, a `.npy` header, an argv.

pub mod argv;
pub mod json;
pub mod onnx;
pub mod text;

use rand::seq::IndexedRandom;
use rand::Rng as _;

use crate::Rng;

/// Numbers at the edges number parsers and size arithmetic get wrong, as text.
pub const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "7",
    "255",
    "256",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "3.5e38",
    "1e308",
    "1e-45",
    "-1e308",
    "0.5",
    "1e999",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "",
    " ",
    "+1",
    "1.",
    ".5",
    "1e",
    "0x10",
    "1_000",
];

/// Integers at the edges of the widths binary formats use.
pub const EDGE_INTS: &[i64] =
    &[0, -1, 1, 2, 127, 128, 255, 256, 65535, 65536, i32::MAX as i64, 1 << 31, 1 << 32, 1 << 40, i64::MAX, i64::MIN];

/// Bytes at the edges: zero, all ones, the signed limits, and a few delimiters.
const EDGE_BYTES: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'0', b'-', b',', b'=', b'\n', b'"', b'{', b'['];

pub fn edge_number(rng: &mut Rng) -> &'static str {
    EDGE_NUMBERS.choose(rng).copied().unwrap_or("0")
}

pub fn edge_int(rng: &mut Rng) -> i64 {
    EDGE_INTS.choose(rng).copied().unwrap_or(0)
}

/// One byte-level mutation of `data`; `other` is another input to splice with.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if data.is_empty() {
        data.extend(other.iter().take(64));
        data.push(rng.random());
        return;
    }
    let len = data.len();
    let at = rng.random_range(0..len);
    match rng.random_range(0..10) {
        0 => data[at] ^= 1 << rng.random_range(0..8),
        1 => data[at] = EDGE_BYTES.choose(rng).copied().unwrap_or(0),
        2 => {
            let width = [2usize, 4, 8].choose(rng).copied().unwrap_or(4);
            let bytes = edge_int(rng).to_le_bytes();
            let end = (at + width).min(len);
            data[at..end].copy_from_slice(&bytes[..end - at]);
        }
        3 => {
            let n = rng.random_range(1..=16);
            let fresh: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(at..at, fresh);
        }
        4 => {
            let end = (at + span(rng)).min(len);
            data.drain(at..end);
        }
        5 => {
            let end = (at + span(rng)).min(len);
            let copy = data[at..end].to_vec();
            let to = rng.random_range(0..=len);
            data.splice(to..to, copy);
        }
        6 => splice(rng, data, other),
        7 => replace_number(rng, data),
        8 => data.truncate(at),
        _ => data[at] = data[at].wrapping_add(rng.random_range(1..=16)).wrapping_sub(8),
    }
}

/// A range length, mostly short.
fn span(rng: &mut Rng) -> usize {
    if rng.random_bool(0.8) {
        rng.random_range(1..=8)
    } else {
        rng.random_range(1..=512)
    }
}

/// `data`'s head, then `other`'s tail.
fn splice(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if other.is_empty() {
        return;
    }
    let cut = rng.random_range(0..=data.len());
    let from = rng.random_range(0..other.len());
    data.truncate(cut);
    data.extend_from_slice(&other[from..]);
}

/// Replaces a run of ASCII digits (with its sign and fraction) by an [`EDGE_NUMBERS`] entry.
fn replace_number(rng: &mut Rng, data: &mut Vec<u8>) {
    let starts: Vec<usize> =
        (0..data.len()).filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit())).collect();
    let Some(&start) = starts.choose(rng) else { return };
    let number = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+');
    let end = (start..data.len()).find(|&i| !number(data[i])).unwrap_or(data.len());
    let start = if start > 0 && data[start - 1] == b'-' { start - 1 } else { start };
    data.splice(start..end, edge_number(rng).bytes());
}
