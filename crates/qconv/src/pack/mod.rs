//! Packing: weights once at load ([`weights`]), activations into a column matrix at every call:
//! a padded channel-interleaved copy of the image ([`image`]) cut into bands of output rows
//! ([`bands`]), or a channels-last matrix regrouped directly ([`channels_last`]).

mod bands;
mod channels_last;
mod copy;
mod image;
mod weights;

pub(crate) use bands::{band_rows, pack_columns_for, BandPacker, PackBands};
pub(crate) use channels_last::{pack_channels_last, ChannelsLastBands, BAND_PIXELS};
pub(crate) use image::pad_image_for;
pub(crate) use weights::{pack_weights, PackedWeights};

/// Reused buffers: the padded channel-interleaved image and the column matrix.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// f32 input quantised to u8.
    pub quantized: Vec<u8>,
    pub padded: Vec<u8>,
    pub columns: Vec<u8>,
}

/// The column matrix of one image, or of a band of its output rows.
///
/// Every packing function here returns columns with `data.len() == k_quads · stride · 4`,
/// `stride` a multiple of [`TILE`](crate::TILE) no smaller than `pixels`, and
/// `out_first + pixels <= out_stride`; `kernels::gemm` asserts this before any kernel reads
/// through raw pointers.
pub(crate) struct Columns<'a> {
    /// `[K/4][stride][4]` u8.
    pub data: &'a [u8],
    pub k_quads: usize,
    /// Output pixels in these columns.
    pub pixels: usize,
    /// Pixels per reduction row, `pixels` rounded up to [`TILE`](crate::TILE).
    pub stride: usize,
    /// Pixels per output row (channel) of the whole image.
    pub out_stride: usize,
    /// The output pixel of these columns' first pixel.
    pub out_first: usize,
}
