//! The memory primitives the column packers share: a buffer that starts on a cache line,
//! sizing the column buffer without writing its bytes twice, and copying short rows with inline
//! moves.

/// Where each column matrix and padded image starts: a cache line. The kernels load whole
/// tiles of 16 pixels (64 bytes) from each reduction row, and every row is a whole number of
/// tiles from the start; in a buffer only malloc-aligned (16 bytes) every such load straddles
/// two cache lines. On an Intel Xeon (Emerald Rapids), aligned: 256->256 3x3 at 16x16 635 ->
/// 598 us, 512->256 1x1 at 16x16 163 -> 151 us (`conv_speed`, best of 9), 128->128 3x3 at
/// 32x32 unchanged.
const ALIGN: usize = 64;

/// A reused byte buffer whose contents start on an [`ALIGN`]-byte boundary. Where the boundary
/// falls in the allocation can move when the buffer grows, so callers write every byte they
/// later read after each [`AlignedBuffer::resize`].
#[derive(Debug, Default)]
pub(crate) struct AlignedBuffer {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    /// `len` bytes from a boundary, any new ones `fill` (bytes kept from the last use are not
    /// overwritten).
    pub(crate) fn resize(&mut self, len: usize, fill: u8) -> &mut [u8] {
        self.bytes.resize(len + ALIGN - 1, fill);
        // `align_offset` of a byte pointer is exact at run time; `min` keeps the slice in
        // bounds whatever it returns (misaligned is slower, not wrong).
        self.start = self.bytes.as_ptr().align_offset(ALIGN).min(ALIGN - 1);
        self.len = len;
        &mut self.bytes[self.start..self.start + len]
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

/// Sizes `columns` to `k_quads` reduction rows of `stride` pixels and fills only each row's
/// tile padding (pixels `pixels..stride`) with `fill`, for callers that then write every one of
/// the first `pixels`: filling the whole buffer first would write each byte twice. Bytes kept
/// from the buffer's last use are overwritten or never read.
// `#[inline]`: inlined into each packer, as it is when they share a codegen unit.
#[inline]
pub(super) fn size_for_whole_rows(
    columns: &mut AlignedBuffer,
    k_quads: usize,
    stride: usize,
    pixels: usize,
    fill: u8,
) -> &mut [u8] {
    let columns = columns.resize(k_quads * stride * 4, fill);
    if stride > pixels {
        for row in columns.chunks_exact_mut(stride * 4) {
            row[pixels * 4..].fill(fill);
        }
    }
    columns
}

/// Copies `rows` rows of `len` bytes, row `r` from `src[r · src_step..]` to
/// `dst[r · dst_step..]`, as inline 32/16/4-byte moves. `copy_from_slice` per row would call
/// `memcpy` and check both slices' bounds: for our U-Nets' 16–128-byte rows that is most of the
/// packing on a Cortex-A53 (about 30 instructions a row before the first byte moves, measured
/// under qemu). `len` is a multiple of 4 (whole pixels). Bounds are checked once, for the last
/// row.
#[inline(always)]
pub(super) fn copy_rows(dst: &mut [u8], dst_step: usize, src: &[u8], src_step: usize, len: usize, rows: usize) {
    if rows == 0 || len == 0 {
        return;
    }
    assert!(len.is_multiple_of(4), "whole pixels");
    assert!((rows - 1) * dst_step + len <= dst.len() && (rows - 1) * src_step + len <= src.len());
    let (d0, s0) = (dst.as_mut_ptr(), src.as_ptr());
    for r in 0..rows {
        // SAFETY: row r's `len` bytes lie within both slices: r <= rows - 1, and the assert above
        // covers the last, furthest row. The moves take 32, 16, then 4 bytes while that many
        // remain, and `len` is a multiple of 4, so none passes the row's end. `dst` is a `&mut`
        // borrow distinct from `src`, so the ranges do not overlap.
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
