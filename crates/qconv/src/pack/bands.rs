//! Column matrices of bands of output rows, cut from the padded image: on one thread a band at a
//! time into the caller's scratch ([`pack_columns_for`]), or as parallel jobs that each pack
//! their own band ([`BandPacker`]); or, for a kernel that reads them in place, the windows of
//! those rows in the padded image ([`windows`]).

use super::copy::{copy_rows, size_for_whole_rows, AlignedBuffer};
use super::image::pad_image;
use super::{Columns, Scratch, Windows};
use crate::geometry::Geometry;
use crate::kernel::Kernel;
use crate::TILE;

/// Upper bound on one band's column matrix (see [`band_rows`]): it stays in L2 beside a block's
/// weights, and holds several tiles of pixels, so that the kernel computes two tiles per pass
/// over the weights and each band reads the weights once (at 32 KB a 256-channel 16x16 layer
/// had one-tile bands: the 35.7M-parameter int8 net took 1.07x as long on one thread, 1.3x on
/// two).
pub(crate) const BAND_BYTES: usize = 128 * 1024;

/// Output rows per band of columns: as many as fit in [`BAND_BYTES`], rounded down to whole
/// [`TILE`]s of pixels where the row width allows (at least one row, at least one tile).
/// Packing a band at a time keeps the column matrix small (a 3x3 conv over 128 channels at
/// 16x16 needs 295 KB for the whole image, more than the activations of the whole network);
/// the integer sums do not depend on it, so the output bytes do not either.
pub(crate) fn band_rows(g: &Geometry, ho: usize, wo: usize) -> usize {
    let per_row = g.k_quads() * 4 * wo.max(1);
    let unit = TILE / gcd(wo.max(1), TILE);
    let fit = (BAND_BYTES / per_row.max(1)).max(1);
    let rows = if fit >= unit { fit / unit * unit } else { fit };
    rows.clamp(1, ho.max(1))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// [`pad_image`] and [`pack_band`], compiled for AVX-512 where the VNNI kernel runs (their byte
/// interleave and short copies vectorise 16 lanes wide there; baseline x86_64 code is SSE2).
/// Same bytes. `image` is given for the first band of an image (it is padded then) and `None`
/// for the later ones; `band` is the first output row and the row count. `kernel` must be
/// supported by this CPU (every `QConv2d::kernel` is).
#[allow(clippy::too_many_arguments)] // A packing entry point: the image, its shape and the band.
pub(crate) fn pack_columns_for<'s>(
    kernel: Kernel,
    g: &Geometry,
    image: Option<&[u8]>,
    h: usize,
    w: usize,
    x_zero: u8,
    band: (usize, usize),
    scratch: &'s mut Scratch,
) -> Columns<'s> {
    let signed = kernel.signed_activations();
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Vnni {
        // SAFETY: the CPU has AVX-512 F and BW: `kernel` comes from a `QConv2d`, whose `build`
        // refuses kernels `Kernel::is_supported` denies, and that detects F, BW and VNNI.
        return unsafe { pack_columns_avx512(g, image, h, w, x_zero, signed, band, scratch) };
    }
    pack_columns(g, image, h, w, x_zero, signed, band, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)] // `pack_columns` for AVX-512, same arguments.
fn pack_columns_avx512<'s>(
    g: &Geometry,
    image: Option<&[u8]>,
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    band: (usize, usize),
    scratch: &'s mut Scratch,
) -> Columns<'s> {
    pack_columns(g, image, h, w, x_zero, signed, band, scratch)
}

/// Whether a convolution's windows can be read in place from its padded `h`x`w` image (see
/// [`Windows`]): stride 1, and an output width of whole tiles. The kernel must also read
/// windows ([`Kernel::reads_windows`]).
pub(crate) fn reads_windows(g: &Geometry, w: usize) -> bool {
    let wo = (w + g.pad_left + g.pad_right + 1).saturating_sub(g.kernel_w);
    g.stride_h == 1 && g.stride_w == 1 && wo > 0 && wo.is_multiple_of(TILE)
}

/// The windows of output rows `first .. first + rows` in the `padded` image (`[C/4][hp][wp][4]`,
/// from [`pad_image`]) of a convolution that [`reads_windows`]: nothing is packed.
pub(crate) fn windows<'a>(
    g: &Geometry,
    h: usize,
    w: usize,
    (first, rows): (usize, usize),
    padded: &'a [u8],
) -> Columns<'a> {
    let (ho, wo) = g.output_size(h, w).expect("checked by the caller");
    let (hp, wp) = (h + g.pad_top + g.pad_bottom, w + g.pad_left + g.pad_right);
    let windows =
        Windows { quads: g.channel_quads(), kernel_h: g.kernel_h, kernel_w: g.kernel_w, hp, wp, wo, first: first * wo };
    let pixels = rows * wo;
    Columns {
        data: padded,
        k_quads: g.k_quads(),
        pixels,
        stride: pixels,
        out_stride: ho * wo,
        out_first: first * wo,
        windows: Some(windows),
    }
}

/// What the jobs of a band-parallel convolution share: the padded image the calling thread
/// built, and how to cut it into bands of output rows. Each job packs its own band.
pub(crate) struct BandPacker<'a> {
    /// Supported by this CPU (it is a `QConv2d::kernel`).
    pub kernel: Kernel,
    pub g: &'a Geometry,
    pub h: usize,
    pub w: usize,
    pub x_zero: u8,
    /// Output rows per band (the last band may have fewer).
    pub band: usize,
    pub ho: usize,
    pub padded: &'a [u8],
}

/// Cuts one image's columns into bands of output pixels that threads pack and compute
/// independently ([`crate::kernels::gemm_bands_parallel`]).
pub(crate) trait PackBands: Sync {
    fn bands(&self) -> usize;

    /// Band `b`'s columns, packed into `columns` (the calling thread's buffer), with
    /// `out_first` its first output pixel.
    fn pack<'c>(&'c self, b: usize, columns: &'c mut AlignedBuffer) -> Columns<'c>;
}

impl PackBands for BandPacker<'_> {
    fn bands(&self) -> usize {
        self.ho.div_ceil(self.band)
    }

    fn pack<'c>(&'c self, b: usize, columns: &'c mut AlignedBuffer) -> Columns<'c> {
        let first = b * self.band;
        let band = (first, self.band.min(self.ho - first));
        if self.kernel.reads_windows() && reads_windows(self.g, self.w) {
            return windows(self.g, self.h, self.w, band, self.padded);
        }
        let signed = self.kernel.signed_activations();
        let (g, h, w, x_zero, padded) = (self.g, self.h, self.w, self.x_zero, self.padded);
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx512Vnni {
            // SAFETY: the CPU has AVX-512 F and BW: `self.kernel` is a `QConv2d::kernel`, checked
            // by `Kernel::is_supported` (which detects F, BW and VNNI) when it was built.
            return unsafe { pack_band_avx512(g, h, w, x_zero, signed, band, padded, columns) };
        }
        pack_band(g, h, w, x_zero, signed, band, padded, columns)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)] // `pack_band` for AVX-512, same arguments.
fn pack_band_avx512<'c>(
    g: &Geometry,
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    band: (usize, usize),
    padded: &[u8],
    columns: &'c mut AlignedBuffer,
) -> Columns<'c> {
    pack_band(g, h, w, x_zero, signed, band, padded, columns)
}

/// With `image` (`[C][h][w]`), first builds the padded channel-interleaved copy of it in
/// `scratch` (once per image); then the columns of output rows `band.0 .. band.0 + band.1` from
/// that copy. Padding pixels and padding channels hold `x_zero` (the quantised 0.0); with
/// `signed` every byte is flipped by `0x80`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // The packing arguments, inlined into each entry point.
fn pack_columns<'s>(
    g: &Geometry,
    image: Option<&[u8]>,
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    band: (usize, usize),
    scratch: &'s mut Scratch,
) -> Columns<'s> {
    if let Some(image) = image {
        pad_image(g, image, h, w, x_zero, signed, &mut scratch.padded);
    }
    pack_band(g, h, w, x_zero, signed, band, scratch.padded.as_slice(), &mut scratch.columns)
}

/// The columns of output rows `first .. first + rows` from the padded image.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // The packing arguments, inlined into each entry point.
fn pack_band<'s>(
    g: &Geometry,
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    (first, rows): (usize, usize),
    padded: &[u8],
    columns: &'s mut AlignedBuffer,
) -> Columns<'s> {
    let (ho, wo) = g.output_size(h, w).expect("checked by the caller");
    debug_assert!(first + rows <= ho);
    let (hp, wp) = (h + g.pad_top + g.pad_bottom, w + g.pad_left + g.pad_right);
    let quads = g.channel_quads();
    let flip = if signed { 0x80 } else { 0 };
    let pixels = rows * wo;
    let stride = pixels.div_ceil(TILE) * TILE;
    let k_quads = g.k_quads();
    // Every byte of the first `pixels` of each reduction row is written below.
    let columns = size_for_whole_rows(columns, k_quads, stride, pixels, x_zero ^ flip);
    for q in 0..quads {
        for i in 0..g.kernel_h {
            for j in 0..g.kernel_w {
                let kq = (q * g.kernel_h + i) * g.kernel_w + j;
                let dst_row = &mut columns[kq * stride * 4..][..pixels * 4];
                if g.stride_w == 1 {
                    let src = &padded[((q * hp + first * g.stride_h + i) * wp + j) * 4..];
                    copy_rows(dst_row, wo * 4, src, g.stride_h * wp * 4, wo * 4, rows);
                    continue;
                }
                for (by, oy) in (first..first + rows).enumerate() {
                    let src_row = ((q * hp + oy * g.stride_h + i) * wp + j) * 4;
                    let dst = &mut dst_row[by * wo * 4..][..wo * 4];
                    for (ox, d) in dst.chunks_exact_mut(4).enumerate() {
                        d.copy_from_slice(&padded[src_row + ox * g.stride_w * 4..][..4]);
                    }
                }
            }
        }
    }
    Columns { data: columns, k_quads, pixels, stride, out_stride: ho * wo, out_first: first * wo, windows: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes `windows_read_in_place` (tests/matches_reference.rs) runs are read in place;
    /// strided ones and output widths of part of a tile are packed.
    #[test]
    fn which_convolutions_read_windows_in_place() {
        let asymmetric = Geometry {
            pad_top: 2,
            pad_left: 1,
            pad_bottom: 0,
            pad_right: 0,
            kernel_w: 2,
            ..Geometry::square(6, 11, 3, 1, 0)
        };
        assert!(reads_windows(&asymmetric, 16));
        assert!(reads_windows(&Geometry::square(64, 24, 3, 1, 1), 32));
        assert!(reads_windows(&Geometry::square(30, 20, 1, 1, 0), 32));
        assert!(!reads_windows(&Geometry::square(64, 64, 3, 2, 1), 32));
        assert!(!reads_windows(&Geometry::square(64, 64, 3, 1, 1), 8));
        assert!(!reads_windows(&Geometry::square(64, 64, 3, 1, 0), 16));
        // More bands than one for the 32x32 layer, so its parallel run reads windows by band.
        let g = Geometry::square(64, 24, 3, 1, 1);
        assert!(band_rows(&g, 32, 32) < 32);
    }
}
