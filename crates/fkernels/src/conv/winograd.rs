//! 3x3 stride-1 convolutions in Winograd's forms: F(2x2, 3x3) takes each 2x2 block of output
//! pixels ("a tile") from its 4x4 input window through 16 products per channel instead of 36;
//! F(4x4, 3x3) each 4x4 block from its 6x6 window through 36 instead of 144.
//!
//! For every channel the window `d` becomes `V = Bᵀ d B` and the weights `g` become
//! `U = G g Gᵀ` (16 or 36 values each); for each position `ξ`, `M[ξ] = Σ_c U[ξ][c] · V[ξ][c]`
//! is a matrix product summed like every other in this crate (one lane per output, +0, one fused
//! multiply-add per channel in ascending order); the tile is then `Aᵀ M A`, plus the bias. The
//! transforms ([`transforms`], [`transforms4`]) are fixed sequences of additions and
//! multiplications by constants, so the bytes are the same on every CPU, kernel, batch and
//! thread count. They differ from the direct form's bytes (F(4x4)'s rounding error is about
//! ten times F(2x2)'s), which is why the form is chosen from the geometry and image size alone.
//!
//! `U` is made from the weights packed for the direct form as each chunk of channels is used, at
//! every evaluation: the layer keeps one copy of its weights (the transformed ones are 16/9 or
//! 4 times their size). That costs in proportion to the weights, the products in proportion to
//! weights times tiles: measured with `perf`, 10-20% of a 256-channel 16x16 layer's time in
//! F(2x2), about 5% of a 128-channel 32x32 layer's in F(4x4).

mod transforms;
mod transforms4;

use std::ops::Range;

use super::{blocks_per_job, groups, Conv2d, ConvOut};
use crate::kernel::vectorised;
use crate::tiles::{max_rows, up_to_three_tiles, Step, Walk};
use crate::SharedOut;
use crate::{ParallelFor, NR};
use transforms::{ChannelIn, ChannelOut};

/// Which Winograd form: F(2x2, 3x3) (2x2 outputs from a 4x4 window, 16 positions) or
/// F(4x4, 3x3) (4x4 outputs from a 6x6 window, 36 positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    F2,
    F4,
}

impl Form {
    /// Output pixels per tile side.
    fn side(self) -> usize {
        match self {
            Form::F2 => 2,
            Form::F4 => 4,
        }
    }

    /// Positions of the transformed window.
    fn positions(self) -> usize {
        (self.side() + 2) * (self.side() + 2)
    }
}

/// Channels one product call runs over, about: each chunk's `U` for a group of blocks is
/// `positions · chunk · 4 · rows` values (up to 590 KB in F(4x4) at 8 rows).
const CHUNK_CHANNELS: usize = 128;

/// The most bytes one image's `V` may take (16 or 36 values per channel and tile, 4 or 2.25
/// times the input's size): a larger layer (a large image) keeps the direct form, whose
/// scratch is about its input's size. The 35.7M-parameter nets' largest `V` is 4.4 MB.
const MAX_V_BYTES: usize = 16 << 20;

/// With threads, the jobs the output channels are split into, about: each job reads all of `V`,
/// so fewer, larger jobs than the direct form's.
const JOBS: usize = 4;

/// With threads, the jobs the input transform's channels are split into.
const INPUT_JOBS: usize = 8;

/// Which form [`Conv2d::run`] computes a layer of this geometry on an `oh x ow` output in, if
/// either: 3x3 windows at stride 1 where the products' saving outweighs the transforms, which
/// cost in proportion to the channels and the tiles rather than to their product (measured on
/// one core, `examples/conv_speed.rs`: F(2x2) is 1.4x faster than the direct form for 256
/// channels at 16x16, no faster for 128 at 16x16 or 64 at 32x32; F(4x4) at 32x32 and over,
/// where its weights' transform, 36 values per channel pair made at each evaluation, is spread
/// over enough tiles), and whose transformed input fits [`MAX_V_BYTES`]. The choice depends on
/// nothing else, so the bytes do not depend on the CPU.
pub(super) fn form(conv: &Conv2d, oh: usize, ow: usize) -> Option<Form> {
    let g = &conv.geometry;
    let (pixels, fewer) = (oh * ow, g.in_channels.min(g.out_channels));
    let form = if pixels >= 32 * 32 && fewer >= 96 {
        Form::F4
    } else if pixels >= 16 * 16 && fewer >= 128 && g.in_channels * g.out_channels >= 128 * 256 {
        Form::F2
    } else {
        return None;
    };
    let v_bytes = form.positions() * g.in_channels * Tiles::new(oh, ow, form).stride * std::mem::size_of::<f32>();
    (g.kernel == [3, 3] && g.strides == [1, 1] && v_bytes <= MAX_V_BYTES).then_some(form)
}

/// The tiles of one output image: `th x tw` blocks of `side x side` pixels, computed in `lanes`
/// blocks of [`NR`] (the lanes past the last tile read zeros). A channel's transformed values lie `stride`
/// apart, an odd number of cache lines, so that a product's reads of consecutive channels fall
/// in different cache sets.
#[derive(Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
    lanes: usize,
    stride: usize,
}

impl Tiles {
    fn new(oh: usize, ow: usize, form: Form) -> Tiles {
        let (th, tw) = (oh.div_ceil(form.side()), ow.div_ceil(form.side()));
        let lanes = (th * tw).div_ceil(NR);
        Tiles { th, tw, lanes, stride: (lanes | 1) * NR }
    }

    /// A tile row's values in the input transform: one more than the tiles, so that tile `tx`'s
    /// columns `s·tx..s·tx + s + 2` are columns `tx` and `tx + 1` of the planes of each column
    /// residue mod `s`.
    fn wide(&self) -> usize {
        self.tw + 1
    }

    /// Values in one part of a padded plane cut by column and row residue: `th + 1` rows of
    /// [`Tiles::wide`].
    fn part_len(&self) -> usize {
        (self.th + 1) * self.wide()
    }
}

/// `y [n, M, oh, ow]` for `x [n, C, h, w]` in `form` (see the module docs), every value of `y`
/// written.
pub(super) fn run(
    conv: &Conv2d,
    form: Form,
    x: &[f32],
    (oh, ow): (usize, usize),
    [_, h, w]: [usize; 3],
    parallel: Option<ParallelFor<'_>>,
    out: &ConvOut<'_>,
) {
    let (c, m) = (conv.geometry.in_channels, conv.geometry.out_channels);
    let tiles = Tiles::new(oh, ow, form);
    let v_len = form.positions() * c * tiles.stride;
    let mut kept = V.take();
    kept.resize(kept.len().max(v_len), 0.0);
    let v = &mut kept[..v_len];
    let blocks = m.div_ceil(max_rows(conv.kernel));
    let blocks_per_job = blocks_per_job(blocks, if parallel.is_some() { JOBS } else { 1 });
    for (b, image) in x.chunks_exact(c * h * w).enumerate() {
        transform_image(conv, form, image, [h, w], tiles, v, parallel);
        let job = |j: usize| {
            let job_blocks = j * blocks_per_job..((j + 1) * blocks_per_job).min(blocks);
            let mut scratch = SCRATCH.take();
            for group in groups(job_blocks) {
                products(conv, form, v, tiles, group.clone(), &mut scratch);
                write_outputs(conv, form, tiles, group, (b, oh, ow), &mut scratch, out);
            }
            SCRATCH.set(scratch);
        };
        crate::for_each_job(parallel, blocks.div_ceil(blocks_per_job), &job);
    }
    V.set(kept);
}

thread_local! {
    /// The calling thread's `V`, kept between layers: every value a layer reads is written
    /// first, so no layer pays for zeroing or allocating it (up to 36 · channels · tiles values,
    /// 4.4 MB on the 35.7M-parameter net, held while the thread lives).
    static V: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH: std::cell::Cell<Scratch> =
        const { std::cell::Cell::new(Scratch { sums: Vec::new(), u: Vec::new(), y: Vec::new() }) };
}

/// `V` of one image into `v` (`[ξ][C][tiles.stride]`), its channels split over jobs.
fn transform_image(
    conv: &Conv2d,
    form: Form,
    image: &[f32],
    [h, w]: [usize; 2],
    tiles: Tiles,
    v: &mut [f32],
    parallel: Option<ParallelFor<'_>>,
) {
    let (g, c_count) = (&conv.geometry, conv.geometry.in_channels);
    let shared = SharedOut(v.as_mut_ptr(), v.len());
    let per_job = c_count.div_ceil(if parallel.is_some() { INPUT_JOBS } else { 1 });
    let residues = form.side() * form.side();
    let job = |j: usize| {
        // F(4x4) also lays each padded row out after the planes.
        let mut planes = vec![0f32; residues * tiles.part_len() + NR + 4 * tiles.wide()];
        let mut rows = vec![0f32; (form.side() + 2) * form.side() * (tiles.th * tiles.wide() + 1)];
        for channel in j * per_job..((j + 1) * per_job).min(c_count) {
            // SAFETY: position ξ of this channel is its own range of `v`, inside it; no other
            // job writes this channel.
            let slice = |xi: usize| unsafe { shared.slice((xi * c_count + channel) * tiles.stride, tiles.stride) };
            let mut v: Vec<&mut [f32]> = (0..form.positions()).map(slice).collect();
            let input = ChannelIn { src: &image[channel * h * w..][..h * w], w, pads: g.pads, tiles };
            let (planes, rows, v) = (&mut planes[..], &mut rows[..], &mut v[..]);
            vectorised!(
                conv.kernel,
                transform_channel(
                    form: Form,
                    input: ChannelIn<'_>,
                    planes: &mut [f32],
                    rows: &mut [f32],
                    v: &mut [&mut [f32]]
                )
            );
        }
    };
    crate::for_each_job(parallel, c_count.div_ceil(per_job), &job);
}

/// `form`'s input transform of one channel into `v` (one function per form would need one
/// `vectorised!` call each).
#[inline(always)]
fn transform_channel(form: Form, input: ChannelIn<'_>, planes: &mut [f32], rows: &mut [f32], v: &mut [&mut [f32]]) {
    match form {
        Form::F2 => transforms::transform_channel(input, planes, rows, v),
        Form::F4 => transforms4::transform_channel(input, planes, rows, v),
    }
}

/// `form`'s weight transform of one block of `rows` rows for one pass (see
/// `transforms::transform_weights`).
#[inline(always)]
fn transform_weights(form: Form, packed: &[f32], channels: usize, rows: usize, stride: usize, u: &mut [f32]) {
    match (form, rows) {
        (Form::F2, 8) => transforms::transform_weights::<8>(packed, channels, stride, u),
        (Form::F2, 6) => transforms::transform_weights::<6>(packed, channels, stride, u),
        (Form::F2, _) => transforms::transform_weights::<4>(packed, channels, stride, u),
        (Form::F4, 8) => transforms4::transform_weights::<8>(packed, channels, stride, u),
        (Form::F4, 6) => transforms4::transform_weights::<6>(packed, channels, stride, u),
        (Form::F4, _) => transforms4::transform_weights::<4>(packed, channels, stride, u),
    }
}

/// `form`'s output transform of one output channel.
#[inline(always)]
fn write_channel(form: Form, channel: ChannelOut<'_>) {
    match form {
        Form::F2 => transforms::write_channel(channel),
        Form::F4 => transforms4::write_channel(channel),
    }
}

/// One job's buffers, kept by its thread from one group of blocks and one layer to the next
/// (each value is written before it is read).
#[derive(Default)]
struct Scratch {
    /// `M[ξ]` of each block, `[block][ξ][lanes][rows][NR]`.
    sums: Vec<f32>,
    /// One chunk's `U` of each block, `[block][ξ][chunk channels][rows]`.
    u: Vec<f32>,
    /// One channel's outputs before they are interleaved into rows.
    y: Vec<f32>,
}

/// `M[ξ]` of weight blocks `group` for every tile of one image into `scratch.sums`, chunk of
/// channels by chunk.
///
/// A chunk's `U` for the whole group is made first, so that each product runs over the chunk's
/// channels in one call and each panel of `V` serves every block of the group while it is in
/// cache.
fn products(conv: &Conv2d, form: Form, v: &[f32], tiles: Tiles, group: Range<usize>, scratch: &mut Scratch) {
    let g = &conv.geometry;
    let (c_count, m, rows, positions) = (g.in_channels, g.out_channels, max_rows(conv.kernel), form.positions());
    let block_len = positions * tiles.lanes * rows * NR;
    scratch.sums.resize(group.len() * block_len, 0.0);
    let passes: Vec<(usize, usize)> = g.passes().collect();
    let per_chunk = passes.len().div_ceil(c_count.div_ceil(CHUNK_CHANNELS));
    let step = Step { row: 1, k: rows };
    for chunk in passes.chunks(per_chunk) {
        let c0 = chunk[0].0 / 9;
        let channels: usize = chunk.iter().map(|p| p.1 / 9).sum();
        // Positions `spread` channels apart, a little over the chunk (two cache lines more at 4
        // or 8 rows): at a power of two (128 channels of 8 rows, 4 KiB) the 36 runs the
        // weights' transform writes at once all fall in one cache set (F(4x4) took 1.8x as long).
        let spread = channels + NR / rows.max(1) * 2;
        let block_u = positions * spread * rows;
        scratch.u.resize(group.len() * block_u, 0.0);
        for (block, u) in group.clone().zip(scratch.u.chunks_exact_mut(block_u)) {
            for &(k0, len) in chunk {
                let (packed, stride) = (conv.block_weights(block, k0, len), spread);
                let (len, u) = (len / 9, &mut u[(k0 / 9 - c0) * rows..]);
                vectorised!(
                    conv.kernel,
                    transform_weights(form: Form, packed: &[f32], len: usize, rows: usize, stride: usize, u: &mut [f32])
                );
            }
        }
        let walk = Walk { counts: [1, 1, channels], strides: [0, 0, tiles.stride] };
        let resume = c0 > 0;
        for xi in 0..positions {
            let data = &v[(xi * c_count + c0) * tiles.stride..];
            for first in (0..tiles.lanes).step_by(3) {
                for (i, block) in group.clone().enumerate() {
                    let a = &scratch.u[i * block_u + xi * spread * rows..];
                    let tile_rows = (m - block * rows).min(rows);
                    let count = (tiles.lanes - first).min(3);
                    let at = i * block_len + (xi * tiles.lanes + first) * rows * NR;
                    let s = &mut scratch.sums[at..at + count * rows * NR];
                    let panel = |t: usize| &data[(first + t) * NR..];
                    up_to_three_tiles(conv.kernel, a, step, tile_rows, walk, panel, s, rows * NR, resume);
                }
            }
        }
    }
}

/// The output channels of weight blocks `group`, whose `M[ξ]` `scratch.sums` holds: `Aᵀ M A`
/// plus the bias, into `out`.
fn write_outputs(
    conv: &Conv2d,
    form: Form,
    tiles: Tiles,
    group: Range<usize>,
    (b, oh, ow): (usize, usize, usize),
    scratch: &mut Scratch,
    out: &ConvOut<'_>,
) {
    let (m, rows) = (conv.geometry.out_channels, max_rows(conv.kernel));
    let block_len = form.positions() * tiles.lanes * rows * NR;
    scratch.y.resize(form.side() * form.side() * tiles.lanes * NR, 0.0);
    for (block, block_sums) in group.zip(scratch.sums.chunks_exact(block_len)) {
        for r in 0..(m - block * rows).min(rows) {
            let channel = block * rows + r;
            let at = (b * m + channel) * oh * ow;
            // SAFETY: this channel's plane lies inside image b's output, and only this job
            // writes the channels of its weight blocks.
            let plane = unsafe { out.slice(at, oh * ow) };
            let bias = conv.bias.as_ref().map(|b| b[channel]);
            let y = &mut scratch.y[..];
            let channel = ChannelOut { sums: block_sums, rows, r, bias, tiles, y, plane: &mut *plane, ow };
            vectorised!(conv.kernel, write_channel(form: Form, channel: ChannelOut<'_>));
            out.add_addend(at, plane);
        }
    }
}
