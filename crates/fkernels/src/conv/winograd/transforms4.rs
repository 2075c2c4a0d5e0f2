//! The transforms of the F(4x4, 3x3) form, as [`super::transforms`] does for F(2x2, 3x3): each
//! 4x4 block of outputs from its 6x6 input window, 36 products per channel instead of 144, with
//! Lavin and Gray's matrices (interpolation points 0, ±1, ±2 and ∞). Each transform is one
//! fixed sequence of IEEE additions, subtractions and multiplications by constants (never
//! fused, never reordered by the compiler), written as loops over runs of consecutive values
//! so that the compiler vectorises them: the same bytes on every CPU.

use super::transforms::{ChannelIn, ChannelOut};
use super::Tiles;
use crate::NR;

/// One channel's `V` into `v` (position `ξ` to `v[ξ]`, tile `(ty, tx)` at `ty · tw + tx`,
/// zeros in the lanes past the last tile), by way of `planes` (the padded plane cut by column
/// and row residue mod 4: `[column residue][row residue][th + 1][wide]`, `wide = tw + 1`, plus
/// [`NR`] values, then one padded row of `4 · wide`) and `rows` (`Bᵀ d`:
/// `[column residue][6][th · wide + 1]`).
#[inline(always)]
pub(super) fn transform_channel(input: ChannelIn<'_>, planes: &mut [f32], rows: &mut [f32], v: &mut [&mut [f32]]) {
    let ChannelIn { src, w, pads, tiles } = input;
    let (planes, line) = planes.split_at_mut(16 * tiles.part_len() + NR);
    split_planes(src, w, pads, tiles, planes, line);
    let (block, wide, tw) = (tiles.part_len(), tiles.wide(), tiles.tw);
    let part = tiles.th * wide + 1;
    // Bᵀ d for every tile and column of the channel at once: window row k of tile row ty is
    // padded row 4ty + k, residue k % 4, row ty + k / 4 of its plane.
    for residue in 0..4 {
        let d: [&[f32]; 6] = std::array::from_fn(|k| &planes[(residue * 4 + k % 4) * block + k / 4 * wide..][..part]);
        let mut runs = rows[residue * 6 * part..].chunks_exact_mut(part);
        let out: [&mut [f32]; 6] = std::array::from_fn(|_| runs.next().expect("six runs"));
        transform_six(d, out);
    }
    // (Bᵀ d) B for one row of tiles at a time: window column k of tile tx is residue k % 4,
    // column tx + k / 4.
    for i in 0..6 {
        for ty in 0..tiles.th {
            let e: [&[f32]; 6] = std::array::from_fn(|k| &rows[(k % 4 * 6 + i) * part + ty * wide + k / 4..][..tw]);
            let (_, rest) = v.split_at_mut(6 * i);
            let out: [&mut [f32]; 6] = match &mut rest[..6] {
                [a, b, c, d, e, f] => [a, b, c, d, e, f].map(|s| &mut s[ty * tw..][..tw]),
                _ => unreachable!("six positions"),
            };
            transform_six(e, out);
        }
    }
    for v in v.iter_mut() {
        // The lanes past the last tile: zeros, so that `V` need not start zeroed.
        v[tiles.th * tiles.tw..].fill(0.0);
    }
}

/// `Bᵀ` applied to six runs, lane by lane:
/// `4d0 - 5d2 + d4`, `(d4 - 4d2) ± (d3 - 4d1)`, `(d4 - d2) ± 2(d3 - d1)`, `4d1 - 5d3 + d5`.
#[inline(always)]
fn transform_six(d: [&[f32]; 6], out: [&mut [f32]; 6]) {
    let n = out[0].len();
    let d: [&[f32]; 6] = d.map(|d| &d[..n]);
    let [o0, o1, o2, o3, o4, o5] = out;
    let (o1, o2, o3, o4, o5) = (&mut o1[..n], &mut o2[..n], &mut o3[..n], &mut o4[..n], &mut o5[..n]);
    for i in 0..n {
        let [d0, d1, d2, d3, d4, d5] = [d[0][i], d[1][i], d[2][i], d[3][i], d[4][i], d[5][i]];
        let (a, b) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
        let (c, e) = (d4 - d2, 2.0 * (d3 - d1));
        o0[i] = (4.0 * d0 - 5.0 * d2) + d4;
        o1[i] = a + b;
        o2[i] = a - b;
        o3[i] = c + e;
        o4[i] = c - e;
        o5[i] = (4.0 * d1 - 5.0 * d3) + d5;
    }
}

/// One channel of the image into `planes` (see [`transform_channel`]), zeros where the padding
/// is, plus [`NR`] zeros. Padded column `px` of padded row `py` lies in plane
/// `(px % 4, py % 4)` at `py / 4 · wide + px / 4`. Each image row is first laid out padded in
/// `line` (`4 · wide` values), then dealt to the four planes sixteen values at a time.
#[inline(always)]
fn split_planes(src: &[f32], w: usize, pads: [usize; 4], tiles: Tiles, planes: &mut [f32], line: &mut [f32]) {
    planes.fill(0.0);
    let (block, wide) = (tiles.part_len(), tiles.wide());
    let line = &mut line[..4 * wide];
    line.fill(0.0);
    let (p, copied) = (pads[1], w.min(4 * wide - pads[1]));
    for (yy, row) in src.chunks_exact(w).enumerate() {
        let py = yy + pads[0];
        line[p..p + copied].copy_from_slice(&row[..copied]);
        let at = |residue: usize| (residue * 4 + py % 4) * block + py / 4 * wide;
        for (k, sixteen) in line.chunks_exact(16).enumerate() {
            let sixteen: &[f32; 16] = sixteen.try_into().expect("16 values");
            for residue in 0..4 {
                let four: [f32; 4] = std::array::from_fn(|i| sixteen[4 * i + residue]);
                planes[at(residue) + 4 * k..][..4].copy_from_slice(&four);
            }
        }
        for x in line.len() / 16 * 16..line.len() {
            planes[at(x % 4) + x / 4] = line[x];
        }
    }
}

/// `U = G g Gᵀ` of one block's weights (blocks of `R` rows) for one pass, from the direct
/// form's packing `[pass channels][3][3][R]`: channel `c`'s position `ξ` to
/// `u[(ξ · stride + c) · R..]`. Every step is one operation on `R` lanes; one row of `G g` at
/// a time, each row and position a separate constant (straight-line code with few values live:
/// all 36 at once spill registers).
#[inline(always)]
pub(super) fn transform_weights<const R: usize>(packed: &[f32], channels: usize, stride: usize, u: &mut [f32]) {
    for c in 0..channels {
        let g: [[f32; R]; 9] = std::array::from_fn(|p| packed[(c * 9 + p) * R..][..R].try_into().expect("R values"));
        let u = &mut u[c * R..];
        u_row::<0, R>(&g, stride, u);
        u_row::<1, R>(&g, stride, u);
        u_row::<2, R>(&g, stride, u);
        u_row::<3, R>(&g, stride, u);
        u_row::<4, R>(&g, stride, u);
        u_row::<5, R>(&g, stride, u);
    }
}

/// Row `I` of `G g`, then its six values of `U` (`G` applied to the row) to positions
/// `6I..6I + 6`, `stride · R` apart in `u`.
#[inline(always)]
fn u_row<const I: usize, const R: usize>(g: &[[f32; R]; 9], stride: usize, u: &mut [f32]) {
    let row = [g_row::<I, R>(g[0], g[3], g[6]), g_row::<I, R>(g[1], g[4], g[7]), g_row::<I, R>(g[2], g[5], g[8])];
    let mut store = |j: usize, values: [f32; R]| u[(6 * I + j) * stride * R..][..R].copy_from_slice(&values);
    store(0, g_row::<0, R>(row[0], row[1], row[2]));
    store(1, g_row::<1, R>(row[0], row[1], row[2]));
    store(2, g_row::<2, R>(row[0], row[1], row[2]));
    store(3, g_row::<3, R>(row[0], row[1], row[2]));
    store(4, g_row::<4, R>(row[0], row[1], row[2]));
    store(5, g_row::<5, R>(row[0], row[1], row[2]));
}

/// Row `I` of `G (a, b, c)ᵀ`, lane by lane: `a/4`, `-(a + c + b)/6`, `-(a + c - b)/6`,
/// `(a/4 + c + b/2)/6`, `(a/4 + c - b/2)/6`, `c`.
#[inline(always)]
fn g_row<const I: usize, const R: usize>(a: [f32; R], b: [f32; R], c: [f32; R]) -> [f32; R] {
    const SIXTH: f32 = 1.0 / 6.0;
    match I {
        0 => std::array::from_fn(|r| a[r] * 0.25),
        1 => std::array::from_fn(|r| -(((a[r] + c[r]) + b[r]) * SIXTH)),
        2 => std::array::from_fn(|r| -(((a[r] + c[r]) - b[r]) * SIXTH)),
        3 => std::array::from_fn(|r| ((a[r] * 0.25 + c[r]) + b[r] * 0.5) * SIXTH),
        4 => std::array::from_fn(|r| ((a[r] * 0.25 + c[r]) - b[r] * 0.5) * SIXTH),
        _ => c,
    }
}

/// Row `r` of one block's `M[ξ]` to its output channel's `plane`: `Aᵀ M A` (plus the bias) for
/// every tile into `y` (`[16][tiles.lanes · NR]`: output `(i, j)` of each tile at `y[4i + j]`),
/// then each output row from four of them.
#[inline(always)]
pub(super) fn write_channel(channel: ChannelOut<'_>) {
    let ChannelOut { sums, rows, r, bias, tiles, y, plane, ow } = channel;
    let lanes = tiles.lanes;
    for lane in 0..lanes {
        // One output row at a time (few values live at once): row I of Aᵀ M for each column
        // j, then Aᵀ applied to that row.
        let m = &sums[(lane * rows + r) * NR..];
        let (step, y) = (lanes * rows * NR, &mut y[lane * NR..]);
        out_row::<0>(m, step, lanes, bias, y);
        out_row::<1>(m, step, lanes, bias, y);
        out_row::<2>(m, step, lanes, bias, y);
        out_row::<3>(m, step, lanes, bias, y);
    }
    for (py, row) in plane.chunks_exact_mut(ow).enumerate() {
        let (ty, i) = (py / 4, py % 4);
        let at = |j: usize| &y[((4 * i + j) * lanes) * NR + ty * tiles.tw..][..tiles.tw];
        for (tx, out) in row.chunks_mut(4).enumerate() {
            for (j, o) in out.iter_mut().enumerate() {
                *o = at(j)[tx];
            }
        }
    }
}

/// Output row `I` of one lane of tiles: row `I` of `Aᵀ M` (`M[ξ]` at `m[ξ · step..]`,
/// `ξ = 6i + j`), then `Aᵀ` applied to it, plus the bias, to `y[((4I + j) · lanes) · NR..]`.
#[inline(always)]
fn out_row<const I: usize>(m: &[f32], step: usize, lanes: usize, bias: Option<f32>, y: &mut [f32]) {
    let row = [
        m_column::<I>(m, step, 0),
        m_column::<I>(m, step, 1),
        m_column::<I>(m, step, 2),
        m_column::<I>(m, step, 3),
        m_column::<I>(m, step, 4),
        m_column::<I>(m, step, 5),
    ];
    store_output(a_row::<0>(&row), bias, &mut y[(4 * I) * lanes * NR..]);
    store_output(a_row::<1>(&row), bias, &mut y[(4 * I + 1) * lanes * NR..]);
    store_output(a_row::<2>(&row), bias, &mut y[(4 * I + 2) * lanes * NR..]);
    store_output(a_row::<3>(&row), bias, &mut y[(4 * I + 3) * lanes * NR..]);
}

/// Row `I` of `Aᵀ` applied to column `j` of `M` (`M[6i + j]` at `m[(6i + j) · step..]`).
#[inline(always)]
fn m_column<const I: usize>(m: &[f32], step: usize, j: usize) -> [f32; NR] {
    let at = |i: usize| -> [f32; NR] { m[(6 * i + j) * step..][..NR].try_into().expect("NR values") };
    a_row::<I>(&[at(0), at(1), at(2), at(3), at(4), at(5)])
}

/// `values` plus the bias, if any, to `dst[..NR]`.
#[inline(always)]
fn store_output(values: [f32; NR], bias: Option<f32>, dst: &mut [f32]) {
    let dst: &mut [f32; NR] = (&mut dst[..NR]).try_into().expect("NR values");
    *dst = match bias {
        Some(b) => std::array::from_fn(|l| values[l] + b),
        None => values,
    };
}

/// Row `I` of `Aᵀ` applied to six rows of lanes: with `a = m1 + m2`, `b = m1 - m2`,
/// `c = m3 + m4`, `d = m3 - m4`: `m0 + a + c`, `b + 2d`, `a + 4c`, `b + 8d + m5`.
#[inline(always)]
fn a_row<const I: usize>(m: &[[f32; NR]; 6]) -> [f32; NR] {
    match I {
        0 => std::array::from_fn(|l| (m[0][l] + (m[1][l] + m[2][l])) + (m[3][l] + m[4][l])),
        1 => std::array::from_fn(|l| (m[1][l] - m[2][l]) + 2.0 * (m[3][l] - m[4][l])),
        2 => std::array::from_fn(|l| (m[1][l] + m[2][l]) + 4.0 * (m[3][l] + m[4][l])),
        _ => std::array::from_fn(|l| ((m[1][l] - m[2][l]) + 8.0 * (m[3][l] - m[4][l])) + m[5][l]),
    }
}
