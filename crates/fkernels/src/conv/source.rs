//! Where a convolution's tiles read their input. Stride-1 convolutions read each window in place
//! from a zero-padded copy of the input (or from the input itself, where nothing would be added
//! and its planes are small, see `Padded::in_place`): value `(c, ky, kx)` of a tile's panel is a
//! run of the padded image at a fixed offset from the tile's first position (no packing;
//! measured 1.2x faster on the 35.7M-parameter net's convolutions, 1.6x on the default
//! model's). A tile is up
//! to `NR` pixels of one output row, or, where that takes fewer tiles (images narrower than
//! about `NR`), `NR` consecutive positions of the padded width, which run on from one output row
//! into the next: the lanes between rows compute values no pixel takes (2.2x faster on 8x8
//! images than packing). Strided convolutions pack each tile's `[K][NR]` panel first. Every way
//! gives each pixel its values in the same order, so the same bytes.

use std::borrow::Cow;

use std::mem::MaybeUninit;
use std::sync::Mutex;

use super::{ConvGeometry, Image, MIN_JOBS};
use crate::tiles::Walk;
use crate::ParallelFor;
use crate::NR;

/// Padded inputs of this many values or more are copied by the jobs of a parallel call (a
/// 32x32 image of 64 channels and up).
const PARALLEL_PAD_VALUES: usize = 1 << 16;
/// `f32` values per 64-byte cache line.
const LINE: usize = 16;
/// Bytes of one way of an L1 data cache (48 KiB and 12 ways on recent x86_64 cores, 32 or
/// 64 KiB and 4 ways on Cortex-A cores: 4 KiB or more): addresses a multiple of it apart share
/// a cache set.
const L1_WAY_BYTES: usize = 4096;

/// One pass of the reduction: it starts at step `k0`, reads its rows with `walk` from `shift`
/// values into a tile's data.
pub(super) struct Pass {
    pub k0: usize,
    pub walk: Walk,
    pub shift: usize,
}

/// Where a tile's lanes go: `(first lane, first output pixel, length)` for each run of real
/// pixels (each run within one output row), computed as they are read (a vector per tile was
/// the most frequent allocation of an evaluation).
#[derive(Clone, Copy)]
pub(super) enum Runs {
    /// One run, until taken.
    One(Option<(usize, usize, usize)>),
    /// The positions `q0..q0 + NR` of a padded width `wp`, from output row `row` to `last_row`:
    /// position `q` is pixel `(q / wp, q % wp)` where `q % wp < ow`.
    Wrapped { q0: usize, wp: usize, ow: usize, row: usize, last_row: usize },
}

impl Iterator for Runs {
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Runs::One(run) => run.take(),
            Runs::Wrapped { q0, wp, ow, row, last_row } => {
                while *row <= *last_row {
                    let oy = *row;
                    *row += 1;
                    let start = (*q0).max(oy * *wp) - oy * *wp;
                    let end = (*q0 + NR).min(oy * *wp + *ow).saturating_sub(oy * *wp);
                    if end > start {
                        return Some((oy * *wp + start - *q0, oy * *ow + start, end - start));
                    }
                }
                None
            }
        }
    }
}

pub(super) enum Source<'x> {
    /// The input padded, `[n][C][h + pads][w + pads]` plus slack (the last tile reads up to
    /// `NR - 1 + kw` values past the image), and each window value's offset; `wrapped`: tiles
    /// are runs of the padded width rather than of output rows.
    Direct { padded: Padded<'x>, wrapped: bool, passes: Vec<Pass> },
    /// Panels packed per job, from the padded input.
    Packed { padded: Padded<'x>, passes: Vec<Pass> },
}

/// The input zero-padded, `[n][C][plane]` plus slack, each plane `hp x wp` then zeros; or the
/// input itself where nothing is added (see [`Padded::in_place`]).
pub(super) struct Padded<'x> {
    pub values: Cow<'x, [f32]>,
    /// Values per image, `C · plane`.
    pub image_len: usize,
    pub wp: usize,
    /// Values from one channel's plane to the next: `hp · wp` rounded up to an odd number of
    /// 64-byte lines, so the planes a pass reads at one offset fall in different cache sets (a
    /// 1x1 convolution of a 32x32 image read 256 planes 4 KiB apart, 1.1x slower).
    pub plane: usize,
}

impl<'x> Padded<'x> {
    /// The input padded; its planes split over the jobs of `parallel` where there are enough
    /// values (on one thread, a 384-channel 32x32 input's 1.5 MB copy came before every job).
    pub(super) fn new(
        g: &ConvGeometry,
        x: &[f32],
        n: usize,
        image: &Image,
        parallel: Option<ParallelFor<'_>>,
    ) -> Padded<'x> {
        let (hp, wp) = (image.h + g.pads[0] + g.pads[2], image.w + g.pads[1] + g.pads[3]);
        let lines = (hp * wp).div_ceil(LINE);
        let plane = (lines | 1) * LINE;
        let image_len = g.in_channels * plane;
        // Written in place, each value once: zeroing the whole buffer first wrote most of it
        // twice (a tenth of the default model's instructions under callgrind were `memset`).
        let len = n * image_len + NR + g.kernel[1];
        let mut values: Vec<f32> = Vec::with_capacity(len);
        let (planes, tail) = values.spare_capacity_mut()[..len].split_at_mut(n * image_len);
        let sources = x.chunks_exact(image.h * image.w);
        match parallel {
            Some(_) if planes.len() >= PARALLEL_PAD_VALUES => {
                let per_job = (n * g.in_channels).div_ceil(MIN_JOBS);
                let chunks: Vec<Mutex<&mut [MaybeUninit<f32>]>> =
                    planes.chunks_mut(per_job * plane).map(Mutex::new).collect();
                let job = |j: usize| {
                    let mut chunk = chunks[j].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let sources = sources.clone().skip(j * per_job);
                    chunk.chunks_exact_mut(plane).zip(sources).for_each(|(dst, src)| pad_plane(g, image, dst, src));
                };
                crate::for_each_job(parallel, chunks.len(), &job);
            }
            _ => planes.chunks_exact_mut(plane).zip(sources).for_each(|(dst, src)| pad_plane(g, image, dst, src)),
        }
        tail.fill(MaybeUninit::new(0.0));
        // SAFETY: every value of the first `len` was written above: each plane whole by
        // `pad_plane` (the planes cover `n · image_len` values), then the tail.
        unsafe { values.set_len(len) };
        Padded { values: values.into(), image_len, wp, plane }
    }

    /// The input `x` itself, for a direct convolution whose windows stay inside it (no padding,
    /// stride 1, output rows of whole tiles, so that no tile reads past its row nor needs the
    /// slack) and whose planes are smaller than [`L1_WAY_BYTES`]. A 1x1 layer then copies
    /// nothing: on an Intel Xeon (Emerald Rapids) 256->256 and 768->256 1x1 at 16x16 took
    /// 0.87-0.89x as long (`conv_speed`, best of 5). Planes of 4 KiB and more are copied to
    /// the odd spacing above: 4 KiB apart, a pass's planes fall in the same L1 sets (384->128
    /// and 512->128 1x1 at 32x32 took 1.07x as long in place).
    fn in_place(g: &ConvGeometry, x: &'x [f32], image: &Image) -> Option<Padded<'x>> {
        let plane = image.h * image.w;
        let fits = g.pads == [0; 4]
            && g.strides == [1, 1]
            && image.ow.is_multiple_of(NR)
            && plane * std::mem::size_of::<f32>() < L1_WAY_BYTES;
        fits.then(|| Padded { values: Cow::Borrowed(x), image_len: g.in_channels * plane, wp: image.w, plane })
    }
}

impl<'x> Source<'x> {
    pub(super) fn new(
        g: &ConvGeometry,
        x: &'x [f32],
        n: usize,
        image: &Image,
        (in_place, parallel): (bool, Option<ParallelFor<'_>>),
    ) -> Source<'x> {
        if !in_place || g.strides != [1, 1] {
            let padded = Padded::new(g, x, n, image, parallel);
            let passes = g.passes().map(|(k0, len)| Pass { k0, walk: Walk::packed(len), shift: k0 * NR }).collect();
            return Source::Packed { padded, passes };
        }
        let padded = Padded::in_place(g, x, image).unwrap_or_else(|| Padded::new(g, x, n, image, parallel));
        let (plane, wp) = (padded.plane, padded.wp);
        let [kh, kw] = g.kernel;
        let passes = g
            .passes()
            .map(|(k0, len)| {
                let c0 = k0 / (kh * kw);
                Pass { k0, walk: window_walk(g, len, plane, wp), shift: c0 * plane }
            })
            .collect();
        let wrapped = (image.oh * wp).div_ceil(NR) < image.oh * image.ow.div_ceil(NR);
        Source::Direct { padded, wrapped, passes }
    }

    /// Bytes of one image's input that the first pass of `g` reads in place (its channels'
    /// planes; none for packed panels).
    pub(super) fn pass_input_bytes(&self, g: &ConvGeometry) -> usize {
        match self {
            Source::Direct { padded, passes, .. } => passes.first().map_or(0, |p| {
                let channels = p.walk.len() / (g.kernel[0] * g.kernel[1]);
                channels * padded.plane * std::mem::size_of::<f32>()
            }),
            Source::Packed { .. } => 0,
        }
    }

    /// The reduction's passes, in order.
    pub(super) fn passes(&self) -> &[Pass] {
        match self {
            Source::Direct { passes, .. } | Source::Packed { passes, .. } => passes,
        }
    }

    /// Tiles of one image: `NR`-pixel runs of each output row or of the padded width (direct),
    /// or of all its pixels.
    pub(super) fn tiles_per_image(&self, image: &Image) -> usize {
        match self {
            Source::Direct { wrapped: true, padded, .. } => (image.oh * padded.wp).div_ceil(NR),
            Source::Direct { .. } => image.oh * image.ow.div_ceil(NR),
            Source::Packed { .. } => (image.oh * image.ow).div_ceil(NR),
        }
    }

    /// Tile `t` of image `b`, the `i`-th of its job: the data its passes read from, and where its
    /// lanes go.
    pub(super) fn tile<'a>(
        &'a self,
        packed: &'a [f32],
        k: usize,
        b: usize,
        image: &Image,
        i: usize,
        t: usize,
    ) -> (&'a [f32], Runs) {
        match self {
            Source::Direct { padded: p, wrapped: true, .. } => {
                let q0 = t * NR;
                (&p.values[b * p.image_len + q0..], wrapped_runs(q0, p.wp, image))
            }
            Source::Direct { padded: p, .. } => {
                let per_row = image.ow.div_ceil(NR);
                let (oy, ox) = (t / per_row, (t % per_row) * NR);
                (
                    &p.values[b * p.image_len + oy * p.wp + ox..],
                    Runs::One(Some((0, oy * image.ow + ox, (image.ow - ox).min(NR)))),
                )
            }
            Source::Packed { .. } => {
                let p0 = t * NR;
                (&packed[i * k * NR..(i + 1) * k * NR], Runs::One(Some((0, p0, (image.oh * image.ow - p0).min(NR)))))
            }
        }
    }
}

/// One channel's `src` (`h x w`) into its padded plane `dst` (zeros around it, then zeros to
/// the plane's end), every value of `dst` written.
fn pad_plane(g: &ConvGeometry, image: &Image, dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    let zero = MaybeUninit::new(0.0);
    if g.pads == [0; 4] {
        // Unpadded: the plane is one run (one `memcpy`, 1.3x faster than by rows for a 1x1
        // layer over 384 channels at 32x32).
        let (copy, rest) = dst.split_at_mut(src.len());
        write_all(copy, src);
        rest.fill(zero);
        return;
    }
    let wp = image.w + g.pads[1] + g.pads[3];
    let (top, mut rest) = dst.split_at_mut(g.pads[0] * wp);
    top.fill(zero);
    for row in src.chunks_exact(image.w) {
        let (padded, next) = rest.split_at_mut(wp);
        zeros(&mut padded[..g.pads[1]]);
        copy_row(&mut padded[g.pads[1]..g.pads[1] + image.w], row);
        zeros(&mut padded[g.pads[1] + image.w..]);
        rest = next;
    }
    rest.fill(zero);
}

/// Zeros a row's few padding values in place (a `memset` call per row's one or two values
/// doubled the default model's `memset` instructions).
#[inline(always)]
fn zeros(dst: &mut [MaybeUninit<f32>]) {
    match dst {
        [] => {}
        [a] => {
            a.write(0.0);
        }
        [a, b] => {
            a.write(0.0);
            b.write(0.0);
        }
        _ => dst.fill(MaybeUninit::new(0.0)),
    }
}

/// Copies a short row: in 8- or 4-value pieces of known size (moves in registers) where the
/// width allows, since a `memcpy` call costs more than a row of 4 to 16 values and a padded copy
/// is made of every row of every convolution's input.
#[inline(always)]
fn copy_row(dst: &mut [MaybeUninit<f32>], row: &[f32]) {
    #[inline(always)]
    fn pieces<const N: usize>(dst: &mut [MaybeUninit<f32>], row: &[f32]) {
        for (dst, piece) in dst.chunks_exact_mut(N).zip(row.chunks_exact(N)) {
            let (dst, piece): (&mut [MaybeUninit<f32>; N], &[f32; N]) =
                (dst.try_into().expect("N values"), piece.try_into().expect("N values"));
            for (d, &v) in dst.iter_mut().zip(piece) {
                d.write(v);
            }
        }
    }
    match row.len() {
        w if w.is_multiple_of(8) => pieces::<8>(dst, row),
        w if w.is_multiple_of(4) => pieces::<4>(dst, row),
        _ => write_all(dst, row),
    }
}

/// `dst` (of `src`'s length) set to `src` (a copy loop; a `memcpy` where it is long).
#[inline(always)]
fn write_all(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
    }
}

/// The offsets of `len` reduction steps (whole channels' windows) read in place from padded
/// planes `plane` values apart and rows `wp` apart, from the first step's channel.
pub(super) fn window_walk(g: &ConvGeometry, len: usize, plane: usize, wp: usize) -> Walk {
    match g.kernel {
        // A 1x1 window reads one value per channel: one flat loop over the channels (the same
        // offsets in the same order, without two loops of one step each).
        [1, 1] => Walk { counts: [1, 1, len], strides: [0, 0, plane] },
        [kh, kw] => Walk { counts: [len / (kh * kw), kh, kw], strides: [plane, wp, 1] },
    }
}

/// The output runs of the positions `q0..q0 + NR` of a padded width `wp`: position `q` is pixel
/// `(q / wp, q % wp)` where `q % wp < ow` and `q / wp < oh`.
fn wrapped_runs(q0: usize, wp: usize, image: &Image) -> Runs {
    let last_row = ((q0 + NR - 1) / wp).min(image.oh.saturating_sub(1));
    Runs::Wrapped { q0, wp, ow: image.ow, row: q0 / wp, last_row }
}
