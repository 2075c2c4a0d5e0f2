//! Packing: weights once at load, activations into a column matrix at every call.

use crate::{Geometry, ROWS, TILE};

/// Weights as `[M/ROWS][K/4][ROWS][4]` i8, reduction index `((c/4 · kh + i) · kw + j) · 4 + c%4`;
/// rows past `M` and channels past `C` are zero.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeights {
    pub data: Vec<i8>,
    pub k_quads: usize,
    pub rows: usize,
}

impl PackedWeights {
    /// One block of `ROWS` output channels: `[K/4][ROWS][4]`.
    pub fn block(&self, b: usize) -> &[i8] {
        let len = self.k_quads * ROWS * 4;
        &self.data[b * len..(b + 1) * len]
    }

    pub fn blocks(&self) -> usize {
        self.rows.div_ceil(ROWS)
    }
}

pub(crate) fn pack_weights(g: &Geometry, w: &[i8]) -> PackedWeights {
    let (c, kh, kw) = (g.in_channels, g.kernel_h, g.kernel_w);
    let k_quads = g.k_quads();
    let blocks = g.out_channels.div_ceil(ROWS);
    let mut data = vec![0i8; blocks * k_quads * ROWS * 4];
    for m in 0..g.out_channels {
        let (b, r) = (m / ROWS, m % ROWS);
        for ci in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    let kq = ((ci / 4) * kh + i) * kw + j;
                    let dst = ((b * k_quads + kq) * ROWS + r) * 4 + ci % 4;
                    data[dst] = w[((m * c + ci) * kh + i) * kw + j];
                }
            }
        }
    }
    PackedWeights { data, k_quads, rows: g.out_channels }
}

/// Reused buffers: the padded channel-interleaved image and the column matrix.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// f32 input quantised to u8.
    pub quantized: Vec<u8>,
    pub padded: Vec<u8>,
    columns: Vec<u8>,
}

/// The column matrix of one image, or of a band of its output rows.
pub(crate) struct Columns<'a> {
    /// `[K/4][stride][4]` u8.
    pub data: &'a [u8],
    pub k_quads: usize,
    /// Output pixels in these columns.
    pub pixels: usize,
    /// Pixels per reduction row, `pixels` rounded up to [`TILE`].
    pub stride: usize,
    /// Pixels per output row (channel) of the whole image.
    pub out_stride: usize,
    /// The output pixel of these columns' first pixel.
    pub out_first: usize,
}

/// Upper bound on one band's column matrix (see [`band_rows`]).
pub(crate) const BAND_BYTES: usize = 32 * 1024;

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
/// for the later ones; `band` is the first output row and the row count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_columns_for<'s>(
    kernel: crate::Kernel,
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
    if kernel == crate::Kernel::Avx512Vnni {
        // SAFETY: `QConv2d::build` only accepts a kernel the CPU supports; VNNI implies F and BW.
        return unsafe { pack_columns_avx512(g, image, h, w, x_zero, signed, band, scratch) };
    }
    pack_columns(g, image, h, w, x_zero, signed, band, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_columns_avx512<'s>(
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

/// What the jobs of a band-parallel convolution share: the padded image the calling thread
/// built, and how to cut it into bands of output rows. Each job packs its own band.
pub(crate) struct BandPacker<'a> {
    pub kernel: crate::Kernel,
    pub g: &'a Geometry,
    pub h: usize,
    pub w: usize,
    pub x_zero: u8,
    /// Output rows per band (the last band may have fewer).
    pub band: usize,
    pub ho: usize,
    pub padded: &'a [u8],
}

impl BandPacker<'_> {
    pub fn bands(&self) -> usize {
        self.ho.div_ceil(self.band)
    }

    /// Band `b`'s columns, packed into `columns` (the calling thread's buffer).
    pub fn pack<'c>(&self, b: usize, columns: &'c mut Vec<u8>) -> Columns<'c> {
        let first = b * self.band;
        let band = (first, self.band.min(self.ho - first));
        let signed = self.kernel.signed_activations();
        let (g, h, w, x_zero, padded) = (self.g, self.h, self.w, self.x_zero, self.padded);
        #[cfg(target_arch = "x86_64")]
        if self.kernel == crate::Kernel::Avx512Vnni {
            // SAFETY: as in `pack_columns_for`.
            return unsafe { pack_band_avx512(g, h, w, x_zero, signed, band, padded, columns) };
        }
        pack_band(g, h, w, x_zero, signed, band, padded, columns)
    }
}

/// [`pad_image`], compiled for AVX-512 where the VNNI kernel runs (see [`pack_columns_for`]).
pub(crate) fn pad_image_for(
    kernel: crate::Kernel,
    g: &Geometry,
    image: &[u8],
    h: usize,
    w: usize,
    x_zero: u8,
    padded: &mut Vec<u8>,
) {
    let signed = kernel.signed_activations();
    #[cfg(target_arch = "x86_64")]
    if kernel == crate::Kernel::Avx512Vnni {
        // SAFETY: as in `pack_columns_for`.
        return unsafe { pad_image_avx512(g, image, h, w, x_zero, signed, padded) };
    }
    pad_image(g, image, h, w, x_zero, signed, padded)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pad_image_avx512(
    g: &Geometry,
    image: &[u8],
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    padded: &mut Vec<u8>,
) {
    pad_image(g, image, h, w, x_zero, signed, padded)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_band_avx512<'c>(
    g: &Geometry,
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    band: (usize, usize),
    padded: &[u8],
    columns: &'c mut Vec<u8>,
) -> Columns<'c> {
    pack_band(g, h, w, x_zero, signed, band, padded, columns)
}

/// With `image` (`[C][h][w]`), first builds the padded channel-interleaved copy of it in
/// `scratch` (once per image); then the columns of output rows `band.0 .. band.0 + band.1` from
/// that copy. Padding pixels and padding channels hold `x_zero` (the quantised 0.0); with
/// `signed` every byte is flipped by `0x80`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
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
    pack_band(g, h, w, x_zero, signed, band, &scratch.padded, &mut scratch.columns)
}

/// `[C/4][hp][wp][4]`, padding = `x_zero`.
#[inline(always)]
fn pad_image(g: &Geometry, image: &[u8], h: usize, w: usize, x_zero: u8, signed: bool, padded: &mut Vec<u8>) {
    let (hp, wp) = (h + g.pad_top + g.pad_bottom, w + g.pad_left + g.pad_right);
    let quads = g.channel_quads();
    let flip = if signed { 0x80 } else { 0 };
    padded.clear();
    padded.resize(quads * hp * wp * 4, x_zero ^ flip);
    let pad_channel = vec![x_zero; w];
    for q in 0..quads {
        for y in 0..h {
            // The same row of four channels (missing channels read as x_zero) ...
            let row = |lane: usize| {
                let c = q * 4 + lane;
                if c < g.in_channels {
                    &image[(c * h + y) * w..][..w]
                } else {
                    &pad_channel[..]
                }
            };
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            // ... interleaved into one padded row, four bytes per pixel (one little-endian word
            // per pixel: a form the compiler vectorises).
            let dst = &mut padded[((q * hp + y + g.pad_top) * wp + g.pad_left) * 4..][..w * 4];
            let flip4 = u32::from_ne_bytes([flip; 4]);
            for ((((d, &a), &b), &c), &e) in dst.chunks_exact_mut(4).zip(r0).zip(r1).zip(r2).zip(r3) {
                let word = (a as u32 | (b as u32) << 8 | (c as u32) << 16 | (e as u32) << 24) ^ flip4;
                d.copy_from_slice(&word.to_le_bytes());
            }
        }
    }
}

/// The columns of output rows `first .. first + rows` from the padded image.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_band<'s>(
    g: &Geometry,
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    (first, rows): (usize, usize),
    padded: &[u8],
    columns: &'s mut Vec<u8>,
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
    size_for_whole_rows(columns, k_quads, stride, pixels, x_zero ^ flip);
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
    Columns { data: columns, k_quads, pixels, stride, out_stride: ho * wo, out_first: first * wo }
}

/// Sizes `columns` to `k_quads` reduction rows of `stride` pixels and fills only each row's tile
/// padding (pixels `pixels..stride`) with `fill`, for callers that then write every one of the
/// first `pixels`: filling the whole buffer first (`clear` + `resize`) wrote each byte twice.
/// Bytes kept from the buffer's last use are overwritten or never read.
fn size_for_whole_rows(columns: &mut Vec<u8>, k_quads: usize, stride: usize, pixels: usize, fill: u8) {
    columns.resize(k_quads * stride * 4, fill);
    if stride > pixels {
        for row in columns.chunks_exact_mut(stride * 4) {
            row[pixels * 4..].fill(fill);
        }
    }
}

/// Copies `rows` rows of `len` bytes, row `r` from `src[r · src_step..]` to
/// `dst[r · dst_step..]`, as inline 32/16/4-byte moves. Per row, `copy_from_slice` called
/// `memcpy` and checked both slices' bounds: for our U-Nets' 16–128-byte rows that was most of the
/// packing under qemu cortex-a53 (about 30 instructions a row before the first byte moved).
/// `len` is a multiple of 4 (whole pixels). Bounds are checked once, for the last row.
#[inline(always)]
fn copy_rows(dst: &mut [u8], dst_step: usize, src: &[u8], src_step: usize, len: usize, rows: usize) {
    if rows == 0 || len == 0 {
        return;
    }
    assert!(len % 4 == 0, "whole pixels");
    assert!((rows - 1) * dst_step + len <= dst.len() && (rows - 1) * src_step + len <= src.len());
    let (d0, s0) = (dst.as_mut_ptr(), src.as_ptr());
    for r in 0..rows {
        // SAFETY: row r lies within both slices (the asserts above cover the last, furthest
        // row); `dst` and `src` are distinct borrows, so the ranges do not overlap.
        unsafe {
            let (mut d, mut s, mut n) = (d0.add(r * dst_step), s0.add(r * src_step), len);
            while n >= 32 {
                std::ptr::copy_nonoverlapping(s, d, 32);
                (d, s, n) = (d.add(32), s.add(32), n - 32);
            }
            if n >= 16 {
                std::ptr::copy_nonoverlapping(s, d, 16);
                (d, s, n) = (d.add(16), s.add(16), n - 16);
            }
            while n > 0 {
                std::ptr::copy_nonoverlapping(s, d, 4);
                (d, s, n) = (d.add(4), s.add(4), n - 4);
            }
        }
    }
}

/// The column matrix of a 1x1 convolution whose input is channels-last, `[pixels][C]` (a
/// matrix product's left operand): each group of four channels of a pixel is already contiguous,
/// so this is a gather of 4-byte words, no padded image needed.
pub(crate) fn pack_channels_last<'s>(
    g: &Geometry,
    rows: &[u8],
    pixels: usize,
    x_zero: u8,
    signed: bool,
    scratch: &'s mut Scratch,
) -> Columns<'s> {
    debug_assert_eq!(g.k_quads(), g.channel_quads(), "1x1 kernels only");
    let c = g.in_channels;
    let flip = if signed { 0x80 } else { 0 };
    let stride = pixels.div_ceil(TILE) * TILE;
    let k_quads = g.k_quads();
    let columns = &mut scratch.columns;
    let flip4 = u32::from_ne_bytes([flip; 4]);
    if c % 4 == 0 && pixels > 0 {
        // Whole quads (our attention widths): one reduction row at a time, writing it in order.
        // Per word the general loop below computed and checked two offsets (19 instructions per
        // 4 bytes under qemu cortex-a53); here it is a load, an xor and a store.
        assert!(rows.len() >= pixels * c, "channels-last input shorter than its pixels");
        size_for_whole_rows(columns, k_quads, stride, pixels, x_zero ^ flip);
        for (kq, dst) in columns.chunks_exact_mut(stride * 4).enumerate() {
            let src = rows[kq * 4..].as_ptr();
            for (p, d) in dst[..pixels * 4].chunks_exact_mut(4).enumerate() {
                // SAFETY: p < pixels and kq * 4 + 4 <= c, so the word ends by
                // (pixels - 1) · c + c <= rows.len() bytes into `rows` (asserted above).
                let word = unsafe { std::ptr::read_unaligned(src.add(p * c) as *const [u8; 4]) };
                d.copy_from_slice(&(u32::from_ne_bytes(word) ^ flip4).to_ne_bytes());
            }
        }
        return Columns { data: columns, k_quads, pixels, stride, out_stride: pixels, out_first: 0 };
    }
    // A partial last quad leaves its missing channels' bytes unwritten: fill the whole buffer.
    columns.clear();
    columns.resize(k_quads * stride * 4, x_zero ^ flip);
    for (p, row) in rows.chunks_exact(c).take(pixels).enumerate() {
        for (kq, quad) in row.chunks(4).enumerate() {
            let dst = &mut columns[(kq * stride + p) * 4..][..quad.len()];
            if let (Ok(src), Ok(dst)) = (<&[u8; 4]>::try_from(quad), <&mut [u8; 4]>::try_from(&mut *dst)) {
                // One word per four channels.
                *dst = (u32::from_ne_bytes(*src) ^ flip4).to_ne_bytes();
            } else {
                for (d, &v) in dst.iter_mut().zip(quad) {
                    *d = v ^ flip;
                }
            }
        }
    }
    Columns { data: columns, k_quads, pixels, stride, out_stride: pixels, out_first: 0 }
}
