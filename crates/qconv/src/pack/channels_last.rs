//! Columns of a 1x1 convolution whose input is channels-last, `[pixels][C]` (a matrix product's
//! left operand): each group of four channels of a pixel is already contiguous, so packing is a
//! gather of 4-byte words, no padded image needed.

use super::copy::{size_for_whole_rows, AlignedBuffer};
use super::Columns;
use crate::geometry::Geometry;
use crate::TILE;

/// The column matrix of `pixels` channels-last rows for a 1x1 geometry `g`.
pub(crate) fn pack_channels_last<'s>(
    g: &Geometry,
    rows: &[u8],
    pixels: usize,
    x_zero: u8,
    signed: bool,
    columns: &'s mut AlignedBuffer,
) -> Columns<'s> {
    // Also what bounds the unchecked reads below: a reduction row is one quad of channels.
    assert_eq!(g.k_quads(), g.channel_quads(), "1x1 kernels only");
    let c = g.in_channels;
    let flip = if signed { 0x80 } else { 0 };
    let stride = pixels.div_ceil(TILE) * TILE;
    let k_quads = g.k_quads();
    let flip4 = u32::from_ne_bytes([flip; 4]);
    if c.is_multiple_of(4) && pixels > 0 {
        // Whole quads (our attention widths): a load, an xor and a store per word (the general
        // loop below computes and checks two offsets per word: 19 instructions per 4 bytes on
        // a Cortex-A53, measured under qemu). A tile of TILE pixels at a time, through every
        // reduction row: its TILE input rows stay in the L1 cache while each row's words are
        // gathered, and each reduction row gets one whole tile. Reduction row by reduction row
        // over every pixel, each word came from another cache line of an input larger than
        // the L1 cache (256 tokens x 256 channels: a quarter of a projection's time).
        assert!(rows.len() >= pixels * c, "channels-last input shorter than its pixels");
        let columns = size_for_whole_rows(columns, k_quads, stride, pixels, x_zero ^ flip);
        for p0 in (0..pixels).step_by(TILE) {
            let tile = TILE.min(pixels - p0);
            for (kq, dst) in columns.chunks_exact_mut(stride * 4).enumerate() {
                let src = rows[p0 * c + kq * 4..].as_ptr();
                for (p, d) in dst[p0 * 4..(p0 + tile) * 4].chunks_exact_mut(4).enumerate() {
                    // SAFETY: kq < k_quads = c / 4 (asserted above, with c a multiple of 4) and
                    // p0 + p < pixels, so the word's bytes (p0 + p)·c + kq·4 .. + 4 end by
                    // (pixels - 1)·c + c <= rows.len() (asserted above).
                    let word = unsafe { std::ptr::read_unaligned(src.add(p * c) as *const [u8; 4]) };
                    d.copy_from_slice(&(u32::from_ne_bytes(word) ^ flip4).to_ne_bytes());
                }
            }
        }
        return Columns { data: columns, k_quads, pixels, stride, out_stride: pixels, out_first: 0, windows: None };
    }
    // A partial last quad leaves its missing channels' bytes unwritten: fill the whole buffer.
    let columns = columns.resize(k_quads * stride * 4, x_zero ^ flip);
    columns.fill(x_zero ^ flip);
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
    Columns { data: columns, k_quads, pixels, stride, out_stride: pixels, out_first: 0, windows: None }
}

/// Bands of [`BAND_PIXELS`] pixels of a channels-last matrix, for threads.
pub(crate) struct ChannelsLastBands<'a> {
    pub g: &'a Geometry,
    /// `[pixels][C]` u8.
    pub rows: &'a [u8],
    pub pixels: usize,
    pub x_zero: u8,
    pub signed: bool,
}

/// Pixels per band of [`ChannelsLastBands`]: whole tiles, a few per band so that each job
/// outweighs handing it out (attention at 16x16 has 256 tokens: four jobs).
pub(crate) const BAND_PIXELS: usize = 4 * TILE;

impl super::PackBands for ChannelsLastBands<'_> {
    fn bands(&self) -> usize {
        self.pixels.div_ceil(BAND_PIXELS)
    }

    fn pack<'c>(&'c self, b: usize, columns: &'c mut AlignedBuffer) -> Columns<'c> {
        let (first, c) = (b * BAND_PIXELS, self.g.in_channels);
        let count = BAND_PIXELS.min(self.pixels - first);
        let cols = pack_channels_last(self.g, &self.rows[first * c..], count, self.x_zero, self.signed, columns);
        Columns { out_stride: self.pixels, out_first: first, ..cols }
    }
}
