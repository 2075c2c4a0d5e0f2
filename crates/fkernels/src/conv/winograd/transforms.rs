//! The transforms of the F(2x2, 3x3) form, in portable Rust written so that the compiler
//! vectorises it (each step one run of consecutive values, no array indexed at run time): the
//! input's `Bᵀ d B`, the weights' `G g Gᵀ`, and the output's `Aᵀ M A`. Each is a fixed sequence of IEEE
//! additions, subtractions and halvings, which the compiler may vectorise but never fuses or
//! reorders: the same bytes on every CPU.

use super::Tiles;
use crate::NR;

/// `V` of one channel `src` (`h x w`, rows `w` long) into `v` (position `ξ` to `v[ξ]`, tile
/// `(ty, tx)` at `ty · tw + tx`, zeros in the lanes past the last tile), by way of `planes`
/// ([`split_planes`]) and `rows` ([`transform_input`]).
#[inline(always)]
pub(super) fn transform_channel(input: ChannelIn<'_>, planes: &mut [f32], rows: &mut [f32], v: &mut [&mut [f32]]) {
    let ChannelIn { src, w, pads, tiles } = input;
    split_planes(src, w, pads, tiles, planes);
    transform_input(planes, rows, tiles, v);
    for v in v.iter_mut() {
        // The lanes past the last tile: zeros, so that `V` need not start zeroed.
        v[tiles.th * tiles.tw..].fill(0.0);
    }
}

/// One channel of the image into `planes`, the padded plane cut by column and row parity:
/// `[column parity][row parity][th + 1][wide]` with `wide = tw + 1` (2 · tiles + 2 covers the
/// padded size; the values past the bottom and right padding reach only outputs past the
/// image), plus [`NR`] zeros. Then the rows each tile row reads, `2ty + k` for `k < 4`, are for
/// all tile rows at once one run of `th · wide` values.
#[inline(always)]
fn split_planes(src: &[f32], w: usize, pads: [usize; 4], tiles: Tiles, planes: &mut [f32]) {
    planes.fill(0.0);
    let (block, wide) = (tiles.part_len(), tiles.wide());
    // Image column xx lies at padded column xx + p: image columns 2i and 2i + 1 lie at columns
    // i + p / 2 and i + ceil(p / 2) of the halves of parity p and p + 1.
    let p = pads[1];
    let (at_left, at_right) = (p / 2, p.div_ceil(2));
    for (yy, row) in src.chunks_exact(w).enumerate() {
        let py = yy + pads[0];
        let at = |column_parity: usize| (column_parity * 2 + py % 2) * block + py / 2 * wide;
        let (left, right) = (at(p % 2) + at_left, at((p + 1) % 2) + at_right);
        deinterleave(row, planes, left, right);
    }
}

/// `planes[even + i] = row[2i]`, `planes[odd + i] = row[2i + 1]`: eight pairs at a time (a
/// fixed-size shuffle the compiler vectorises), then the rest one by one.
#[inline(always)]
fn deinterleave(row: &[f32], planes: &mut [f32], even: usize, odd: usize) {
    let pairs = row.len() / 2;
    if let Some(&last) = row.get(2 * pairs) {
        planes[even + pairs] = last;
    }
    let (e, o) = two_runs(planes, even, odd, pairs);
    let (e8, o8, both) = (e.chunks_exact_mut(8), o.chunks_exact_mut(8), row.chunks_exact(16));
    for ((e8, o8), both) in e8.zip(o8).zip(both) {
        let both: &[f32; 16] = both.try_into().expect("16 values");
        e8.copy_from_slice(&std::array::from_fn::<f32, 8, _>(|i| both[2 * i]));
        o8.copy_from_slice(&std::array::from_fn::<f32, 8, _>(|i| both[2 * i + 1]));
    }
    for i in pairs / 8 * 8..pairs {
        e[i] = row[2 * i];
        o[i] = row[2 * i + 1];
    }
}

/// The runs of `len` values at `a` and at `b` of `values`, which must not overlap.
#[inline(always)]
fn two_runs(values: &mut [f32], a: usize, b: usize, len: usize) -> (&mut [f32], &mut [f32]) {
    if a < b {
        let (first, second) = values.split_at_mut(b);
        (&mut first[a..][..len], &mut second[..len])
    } else {
        let (first, second) = values.split_at_mut(a);
        (&mut second[..len], &mut first[b..][..len])
    }
}

/// `row[2i] = even[i]`, `row[2i + 1] = odd[i]`, for as many values as `row` has: eight pairs
/// at a time, then the rest one by one.
#[inline(always)]
fn interleave(row: &mut [f32], even: &[f32], odd: &[f32]) {
    let pairs = row.len() / 2;
    let (left, right) = (&even[..pairs], &odd[..pairs]);
    let (out16, l8, r8) = (row.chunks_exact_mut(16), left.chunks_exact(8), right.chunks_exact(8));
    for ((out, l), r) in out16.zip(l8).zip(r8) {
        let pairs: [f32; 16] = std::array::from_fn(|k| if k % 2 == 0 { l[k / 2] } else { r[k / 2] });
        out.copy_from_slice(&pairs);
    }
    for i in pairs / 8 * 8..pairs {
        row[2 * i] = left[i];
        row[2 * i + 1] = right[i];
    }
    if !row.len().is_multiple_of(2) {
        row[2 * pairs] = even[pairs];
    }
}

/// `V = Bᵀ d B` of every tile of one channel, into `v` (`v[ξ]`: tile `(ty, tx)` at
/// `ty · tw + tx`), from [`split_planes`]'s form of its padded plane. `rows`
/// (`[4][2][th · wide + 1]`) keeps `Bᵀ d`. Tile `tx` reads padded columns `2tx..2tx + 4`: even
/// `tx`, `tx + 1` and odd `tx`, `tx + 1`, so every step is one run of consecutive values: for
/// the whole channel in `Bᵀ d`, for one row of tiles in `(Bᵀ d) B`.
#[inline(always)]
fn transform_input(planes: &[f32], rows: &mut [f32], tiles: Tiles, v: &mut [&mut [f32]]) {
    let (block, wide, tw) = (tiles.part_len(), tiles.wide(), tiles.tw);
    let count = tiles.th * wide;
    let part = count + 1;
    // Bᵀ d, even and odd columns: d0 - d2, d1 + d2, d2 - d1, d1 - d3, where d_k is rows
    // 2ty + k: row parity k % 2, from row k / 2 on.
    for parity in 0..2 {
        let d = |k: usize| &planes[(parity * 2 + k % 2) * block + k / 2 * wide..][..part];
        let at = |i: usize| (i * 2 + parity) * part;
        combine(&mut rows[at(0)..][..part], d(0), d(2), |a, b| a - b);
        combine(&mut rows[at(1)..][..part], d(1), d(2), |a, b| a + b);
        combine(&mut rows[at(2)..][..part], d(2), d(1), |a, b| a - b);
        combine(&mut rows[at(3)..][..part], d(1), d(3), |a, b| a - b);
    }
    // (Bᵀ d) B: columns even tx - even tx+1, odd tx + even tx+1, even tx+1 - odd tx,
    // odd tx - odd tx+1.
    for i in 0..4 {
        for ty in 0..tiles.th {
            let r = |parity: usize, shift: usize| &rows[(i * 2 + parity) * part + ty * wide + shift..][..tw];
            let (e0, e1, o0, o1) = (r(0, 0), r(0, 1), r(1, 0), r(1, 1));
            let [v0, v1, v2, v3] = &mut v[4 * i..][..4] else { unreachable!("16 positions") };
            let at = ty * tw;
            combine(&mut v0[at..][..tw], e0, e1, |a, b| a - b);
            combine(&mut v1[at..][..tw], o0, e1, |a, b| a + b);
            combine(&mut v2[at..][..tw], e1, o0, |a, b| a - b);
            combine(&mut v3[at..][..tw], o0, o1, |a, b| a - b);
        }
    }
}

/// `dst[i] = f(a[i], b[i])`.
#[inline(always)]
fn combine(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    let (a, b) = (&a[..dst.len()], &b[..dst.len()]);
    for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
        *d = f(a, b);
    }
}

/// `U = G g Gᵀ` of one block's weights (blocks of `R` rows) for one pass, from the direct
/// form's packing `[pass channels][3][3][R]`: channel `c`'s position `ξ` to
/// `u[(ξ · stride + c) · R..]`. Every step is one operation on `R` lanes (the values stay in
/// registers: no step indexes an array at run time).
#[inline(always)]
pub(super) fn transform_weights<const R: usize>(packed: &[f32], channels: usize, stride: usize, u: &mut [f32]) {
    for c in 0..channels {
        let g = |p: usize| -> [f32; R] { packed[(c * 9 + p) * R..][..R].try_into().expect("R values") };
        // G g, one column of g at a time, then the same combinations of each of its rows.
        let (a, b, cc) = (g_rows(g(0), g(3), g(6)), g_rows(g(1), g(4), g(7)), g_rows(g(2), g(5), g(8)));
        let mut store = |i: usize, row: ([f32; R], [f32; R], [f32; R], [f32; R])| {
            for (j, values) in [row.0, row.1, row.2, row.3].iter().enumerate() {
                u[((4 * i + j) * stride + c) * R..][..R].copy_from_slice(values);
            }
        };
        store(0, g_rows(a.0, b.0, cc.0));
        store(1, g_rows(a.1, b.1, cc.1));
        store(2, g_rows(a.2, b.2, cc.2));
        store(3, g_rows(a.3, b.3, cc.3));
    }
}

/// `(a, (a + b + c) / 2, (a - b + c) / 2, c)`, lane by lane, summed left to right.
#[inline(always)]
fn g_rows<const R: usize>(a: [f32; R], b: [f32; R], c: [f32; R]) -> ([f32; R], [f32; R], [f32; R], [f32; R]) {
    let plus = std::array::from_fn(|r| ((a[r] + b[r]) + c[r]) * 0.5);
    let minus = std::array::from_fn(|r| ((a[r] - b[r]) + c[r]) * 0.5);
    (a, plus, minus, c)
}

/// One input channel for an input transform (this form's or F(4x4)'s): `h x w` values, rows
/// `w` long, padded by `pads` (top, left, bottom, right), into `tiles`.
#[derive(Clone, Copy)]
pub(super) struct ChannelIn<'a> {
    pub src: &'a [f32],
    pub w: usize,
    pub pads: [usize; 4],
    pub tiles: Tiles,
}

/// What [`write_channel`] (and the F(4x4) form's) reads and writes for one output channel.
pub(super) struct ChannelOut<'a> {
    /// One block's `M[ξ]`, `[ξ][lanes][rows][NR]`.
    pub sums: &'a [f32],
    pub rows: usize,
    /// The channel's row in the block.
    pub r: usize,
    pub bias: Option<f32>,
    pub tiles: Tiles,
    /// `[outputs per tile][tiles.lanes · NR]` of scratch.
    pub y: &'a mut [f32],
    /// The channel's output plane, `oh x ow`.
    pub plane: &'a mut [f32],
    pub ow: usize,
}

/// Row `r` of one block's `M[ξ]` (`[ξ][lanes][rows][NR]`) to its output channel's `plane`:
/// `Aᵀ M A` (plus the bias) for every tile into `y` (`[4][tiles.lanes · NR]`, the outputs
/// `(0,0), (0,1), (1,0), (1,1)` of each tile), then each output row from two of them. Every
/// step is one operation on [`NR`] lanes held in registers.
#[inline(always)]
pub(super) fn write_channel(channel: ChannelOut<'_>) {
    let ChannelOut { sums, rows, r, bias, tiles, y, plane, ow } = channel;
    let lanes = tiles.lanes;
    for lane in 0..lanes {
        let m = |xi: usize| -> &[f32] { &sums[((xi * lanes + lane) * rows + r) * NR..][..NR] };
        // Aᵀ M: rows m0 + m1 + m2 and m1 - m2 - m3 of each column j.
        let (c0, c1, c2, c3) = (
            column(m(0), m(4), m(8), m(12)),
            column(m(1), m(5), m(9), m(13)),
            column(m(2), m(6), m(10), m(14)),
            column(m(3), m(7), m(11), m(15)),
        );
        // (Aᵀ M) A: the same combinations of the columns, for the top and the bottom row.
        let outputs = [
            first_row(&c0.0, &c1.0, &c2.0),
            second_row(&c1.0, &c2.0, &c3.0),
            first_row(&c0.1, &c1.1, &c2.1),
            second_row(&c1.1, &c2.1, &c3.1),
        ];
        for (k, values) in outputs.iter().enumerate() {
            let dst: &mut [f32; NR] = (&mut y[(k * lanes + lane) * NR..][..NR]).try_into().expect("NR values");
            match bias {
                Some(b) => *dst = std::array::from_fn(|l| values[l] + b),
                None => *dst = *values,
            }
        }
    }
    for (py, row) in plane.chunks_exact_mut(ow).enumerate() {
        let (ty, i) = (py / 2, py % 2);
        let left = &y[2 * i * tiles.lanes * NR + ty * tiles.tw..][..tiles.tw];
        let right = &y[(2 * i + 1) * tiles.lanes * NR + ty * tiles.tw..][..tiles.tw];
        interleave(row, left, right);
    }
}

/// One column of `Aᵀ M` from its four rows: `(m0 + m1 + m2, m1 - m2 - m3)`.
#[inline(always)]
fn column(m0: &[f32], m1: &[f32], m2: &[f32], m3: &[f32]) -> ([f32; NR], [f32; NR]) {
    let lanes = |v: &[f32]| -> [f32; NR] { v.try_into().expect("NR values") };
    let (m0, m1, m2, m3) = (lanes(m0), lanes(m1), lanes(m2), lanes(m3));
    (first_row(&m0, &m1, &m2), second_row(&m1, &m2, &m3))
}

/// `(a + b) + c`, lane by lane.
#[inline(always)]
fn first_row(a: &[f32; NR], b: &[f32; NR], c: &[f32; NR]) -> [f32; NR] {
    std::array::from_fn(|l| (a[l] + b[l]) + c[l])
}

/// `(a - b) - c`, lane by lane.
#[inline(always)]
fn second_row(a: &[f32; NR], b: &[f32; NR], c: &[f32; NR]) -> [f32; NR] {
    std::array::from_fn(|l| (a[l] - b[l]) - c[l])
}
