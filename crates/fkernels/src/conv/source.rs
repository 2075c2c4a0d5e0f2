//! Where a convolution's tiles read their input. Stride-1 convolutions of images at least
//! [`NR`] pixels wide read each window in place from a zero-padded copy of the input: a tile is
//! up to `NR` pixels of one output row, and value `(c, ky, kx)` of its panel is a run of the
//! padded image at a fixed offset from the tile's corner (no packing; measured 1.2x faster on
//! the 35.7M-parameter net's convolutions, 1.6x on the default model's). Others (strided,
//! narrower images) pack each tile's `[K][NR]` panel first. Both give the values in the same order, so the same bytes.

use super::{ConvGeometry, Image, K_BLOCK};
use crate::tiles::Walk;
use crate::NR;

/// One pass of the reduction: it starts at step `k0`, reads its rows with `walk` from `shift`
/// values into a tile's data.
pub(super) struct Pass {
    pub k0: usize,
    pub walk: Walk,
    pub shift: usize,
}

pub(super) enum Source {
    /// The input padded, `[n][C][h + pads][w + pads]` plus `NR` values of slack (the last tile
    /// of a row reads up to `NR - 1` values past the row), and each window value's offset.
    Direct { padded: Vec<f32>, image_len: usize, row: usize, passes: Vec<Pass> },
    /// Panels packed per job.
    Packed { passes: Vec<Pass> },
}

impl Source {
    pub(super) fn new(g: &ConvGeometry, x: &[f32], n: usize, image: &Image, in_place: bool) -> Source {
        let k = g.k();
        if !in_place || g.strides != [1, 1] || image.ow < NR {
            let passes = (0..k)
                .step_by(K_BLOCK)
                .map(|k0| Pass { k0, walk: Walk::packed((k - k0).min(K_BLOCK)), shift: k0 * NR })
                .collect();
            return Source::Packed { passes };
        }
        let (hp, wp) = (image.h + g.pads[0] + g.pads[2], image.w + g.pads[1] + g.pads[3]);
        let image_len = g.in_channels * hp * wp;
        let mut padded = vec![0f32; n * image_len + NR];
        let plane = image.h * image.w;
        for (c, src) in x.chunks_exact(plane).enumerate() {
            let dst = &mut padded[c * hp * wp..];
            for (y, row) in src.chunks_exact(image.w).enumerate() {
                let at = (y + g.pads[0]) * wp + g.pads[1];
                dst[at..at + image.w].copy_from_slice(row);
            }
        }
        let [kh, kw] = g.kernel;
        let per_pass = (K_BLOCK / (kh * kw)).max(1);
        let passes = (0..g.in_channels)
            .step_by(per_pass)
            .map(|c0| Pass {
                k0: c0 * kh * kw,
                walk: Walk { counts: [(g.in_channels - c0).min(per_pass), kh, kw], strides: [hp * wp, wp, 1] },
                shift: c0 * hp * wp,
            })
            .collect();
        Source::Direct { padded, image_len, row: wp, passes }
    }

    /// The reduction's passes, in order.
    pub(super) fn passes(&self) -> &[Pass] {
        match self {
            Source::Direct { passes, .. } | Source::Packed { passes } => passes,
        }
    }

    /// Tiles of one image: `NR`-pixel runs of each output row (direct), or of all its pixels.
    pub(super) fn tiles_per_image(&self, image: &Image) -> usize {
        match self {
            Source::Direct { .. } => image.oh * image.ow.div_ceil(NR),
            Source::Packed { .. } => (image.oh * image.ow).div_ceil(NR),
        }
    }

    /// Tile `t` of image `b`, the `i`-th of its job: the data its passes read from, its first
    /// output pixel and how many pixels are real.
    pub(super) fn tile<'a>(
        &'a self,
        packed: &'a [f32],
        k: usize,
        b: usize,
        image: &Image,
        i: usize,
        t: usize,
    ) -> (&'a [f32], usize, usize) {
        match self {
            Source::Direct { padded, image_len, row, .. } => {
                let per_row = image.ow.div_ceil(NR);
                let (oy, ox) = (t / per_row, (t % per_row) * NR);
                (&padded[b * image_len + oy * row + ox..], oy * image.ow + ox, (image.ow - ox).min(NR))
            }
            Source::Packed { .. } => {
                let p0 = t * NR;
                (&packed[i * k * NR..(i + 1) * k * NR], p0, (image.oh * image.ow - p0).min(NR))
            }
        }
    }
}
