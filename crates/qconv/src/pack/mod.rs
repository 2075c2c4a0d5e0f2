//! Packing: weights once at load ([`weights`]), activations into a column matrix at every call:
//! a padded channel-interleaved copy of the image ([`image`]) cut into bands of output rows
//! ([`bands`]), or a channels-last matrix regrouped directly ([`channels_last`]). A kernel that
//! reads windows in place ([`Windows`]) gets the padded image itself.

mod bands;
mod channels_last;
mod copy;
mod image;
mod weights;

pub(crate) use bands::{band_rows, pack_columns_for, reads_windows, windows, BandPacker, PackBands};
pub(crate) use channels_last::{pack_channels_last, ChannelsLastBands, BAND_PIXELS};
pub(crate) use copy::AlignedBuffer;
pub(crate) use image::pad_image_for;
pub(crate) use weights::{pack_weights, PackedWeights};

/// Reused buffers: the padded channel-interleaved image and the column matrix.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// f32 input quantised to u8.
    pub quantized: Vec<u8>,
    pub padded: AlignedBuffer,
    pub columns: AlignedBuffer,
}

/// The column matrix of one image, or of a band of its output rows; or, with `windows`, the
/// padded image those columns would be cut from.
///
/// Every packing function here returns columns with `data.len() == k_quads · stride · 4`,
/// `stride` a multiple of [`TILE`](crate::TILE) no smaller than `pixels`, and
/// `out_first + pixels <= out_stride`; with `windows`, what [`Windows::fit`] checks instead of
/// the first two. `kernels::gemm` asserts this before any kernel reads through raw pointers.
pub(crate) struct Columns<'a> {
    /// `[K/4][stride][4]` u8; with `windows`, the padded image `[C/4][hp][wp][4]`.
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
    /// Set where the kernel reads each window in place from the padded image
    /// ([`Kernel::reads_windows`](crate::Kernel)) instead of from packed columns.
    pub windows: Option<Windows>,
}

/// Where the windows of a stride-1 convolution lie in its padded, channel-interleaved image
/// `[C/4][hp][wp][4]`. Reduction step `(q, i, j)` (channel quad, kernel row, kernel column, the
/// packed columns' order) of output pixel `(y, x)` is the word at `(q, y + i, x + j)`, and a
/// tile's 16 pixels are 16 consecutive words where the output width is a whole number of tiles:
/// the kernel loads them in place, so nothing is copied and the image, 9x smaller than a 3x3
/// layer's columns, stays in cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Windows {
    pub quads: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    /// Padded height and width.
    pub hp: usize,
    pub wp: usize,
    /// Output width, a multiple of [`TILE`](crate::TILE).
    pub wo: usize,
    /// The output pixel (of the image) whose window the columns' first pixel is.
    pub first: usize,
}

impl Windows {
    /// Whether every window of `pixels` output pixels from `first` lies in `data` as the kernel
    /// reads it (whole tiles in one output row, each step's 16 words inside the image), for a
    /// reduction of `k_quads` steps.
    pub(crate) fn fit(&self, data: &[u8], k_quads: usize, pixels: usize) -> bool {
        let tile = crate::TILE;
        let ho = (self.hp + 1).checked_sub(self.kernel_h);
        self.wo.is_multiple_of(tile)
            && self.wo > 0
            && self.first.is_multiple_of(tile)
            && pixels.is_multiple_of(tile)
            && self.wp == self.wo + self.kernel_w - 1
            && ho.is_some_and(|ho| self.first + pixels <= ho * self.wo)
            && k_quads == self.quads * self.kernel_h * self.kernel_w
            && data.len() >= self.quads * self.hp * self.wp * 4
    }

    /// Byte offset of output pixel `p`'s window origin (step `(0, 0, 0)`) in the image.
    // Read by the AVX-512 VNNI kernel only.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn origin(&self, p: usize) -> usize {
        (p / self.wo * self.wp + p % self.wo) * 4
    }
}
