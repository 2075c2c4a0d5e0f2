//! Batched transposes of f32 matrices: the moves of one axis past others that attention makes
//! (image channels to tokens and back). Blocks of 8x8 values (4x4 on NEON) are transposed in
//! registers, so each source row and each destination row is read or written 32 (16) bytes at a
//! time while the block's rows stay in the L1 cache; tract's generic axis move took 33-42 us
//! for 256x256 values, as long as the product that read them. Data movement only: every kernel
//! gives the same bytes.

use std::ops::Range;

use crate::{FKernelError, Kernel};

/// `[outer][rows][cols][inner]` values, transposed to `[outer][cols][rows][inner]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransposeShape {
    pub outer: usize,
    pub rows: usize,
    pub cols: usize,
    /// Contiguous values moved together.
    pub inner: usize,
}

impl TransposeShape {
    /// The values of the source (and of the result).
    pub fn len(&self) -> usize {
        self.outer * self.rows * self.cols * self.inner
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of the result, `outer · cols`, each `rows · inner` values.
    pub fn out_rows(&self) -> usize {
        self.outer * self.cols
    }
}

/// Rows `out_rows` of the transpose of `src` (`shape`) into `dst`, which holds exactly those
/// rows: each job of a split takes its own run of the result's rows.
pub fn transpose_rows(
    kernel: Kernel,
    src: &[f32],
    shape: TransposeShape,
    out_rows: Range<usize>,
    dst: &mut [f32],
) -> Result<(), FKernelError> {
    if src.len() != shape.len() {
        return Err(FKernelError::Length { what: "transpose input", got: src.len(), expected: shape.len() });
    }
    let row_len = shape.rows * shape.inner;
    let expected = out_rows.len() * row_len;
    if out_rows.end > shape.out_rows() || dst.len() != expected {
        return Err(FKernelError::Length { what: "transpose output", got: dst.len(), expected });
    }
    let mut first = out_rows.start;
    let mut dst = dst;
    // One matrix of the batch at a time: its columns first..end become rows of the result.
    while first < out_rows.end {
        let (o, c0) = (first / shape.cols, first % shape.cols);
        let c1 = shape.cols.min(c0 + out_rows.end - first);
        let (part, rest) = std::mem::take(&mut dst).split_at_mut((c1 - c0) * row_len);
        let matrix = &src[o * shape.rows * shape.cols * shape.inner..][..shape.rows * shape.cols * shape.inner];
        match shape.inner {
            1 => columns(kernel, matrix, (shape.rows, shape.cols), c0..c1, part),
            inner => column_runs(matrix, (shape.rows, shape.cols, inner), c0..c1, part),
        }
        (first, dst) = (first + c1 - c0, rest);
    }
    Ok(())
}

/// Columns `cols` of the `rows x width` matrix `m` as the rows of `dst`.
fn columns(kernel: Kernel, m: &[f32], (rows, width): (usize, usize), cols: Range<usize>, dst: &mut [f32]) {
    let side = block_side(kernel);
    for c0 in cols.clone().step_by(side) {
        let c1 = cols.end.min(c0 + side);
        for r0 in (0..rows).step_by(side) {
            let r1 = rows.min(r0 + side);
            let at = (c0 - cols.start) * rows + r0;
            if c1 - c0 == side && r1 - r0 == side {
                assert!((r1 - 1) * width + c1 <= m.len() && at + (side - 1) * rows + side <= dst.len());
                // SAFETY: `kernel` was checked when its caller stored it (`Kernel::detect` or
                // `by_name`); the block's source and destination rows lie inside `m` and `dst`
                // (asserted above).
                unsafe { block(kernel, m.as_ptr().add(r0 * width + c0), width, dst.as_mut_ptr().add(at), rows) };
            } else {
                for c in c0..c1 {
                    let row = &mut dst[(c - cols.start) * rows..][r0..r1];
                    row.iter_mut().zip(r0..r1).for_each(|(d, r)| *d = m[r * width + c]);
                }
            }
        }
    }
}

/// Columns `cols` of the `rows x width` matrix `m` of `inner`-value elements as rows of `dst`.
fn column_runs(m: &[f32], (rows, width, inner): (usize, usize, usize), cols: Range<usize>, dst: &mut [f32]) {
    for (c, row) in cols.zip(dst.chunks_exact_mut(rows * inner)) {
        for (r, d) in row.chunks_exact_mut(inner).enumerate() {
            d.copy_from_slice(&m[(r * width + c) * inner..][..inner]);
        }
    }
}

/// The side of the blocks `kernel` transposes in registers.
fn block_side(kernel: Kernel) -> usize {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => 8,
        _ => 4,
    }
}

/// One `side x side` block ([`block_side`]): `dst[j · dst_step + i] = src[i · src_step + j]`.
///
/// # Safety
/// `kernel` must run on this CPU; `src` must be readable for `side` rows of `side` values
/// `src_step` apart, and `dst` writable for `side` rows of `side` values `dst_step` apart.
unsafe fn block(kernel: Kernel, src: *const f32, src_step: usize, dst: *mut f32, dst_step: usize) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX is part of AVX2 and of every AVX-512 CPU (the caller's promise that
        // `kernel` runs here); the bounds are the caller's.
        Kernel::Avx2 | Kernel::Avx512 => unsafe { x86::block8(src, src_step, dst, dst_step) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU; the bounds are the caller's.
        Kernel::Neon => unsafe { neon::block4(src, src_step, dst, dst_step) },
        _ => {
            for i in 0..4 {
                for j in 0..4 {
                    // SAFETY: i, j < 4 = side: inside both blocks (the caller's bounds).
                    unsafe { *dst.add(j * dst_step + i) = *src.add(i * src_step + j) };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// An 8x8 block through AVX registers: pairs of rows interleaved, then pairs of pairs,
    /// then the 128-bit halves exchanged.
    ///
    /// # Safety
    /// The CPU must have AVX; `src` readable for 8 rows of 8 values `src_step` apart, `dst`
    /// writable for 8 rows of 8 values `dst_step` apart.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn block8(src: *const f32, src_step: usize, dst: *mut f32, dst_step: usize) {
        // SAFETY: row i < 8 of the source block (the caller's bounds).
        let r: [__m256; 8] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * src_step)) });
        // t[4h + 2p + x]: rows 2p and 2p + 1 of half h (rows 4h..4h + 4) interleaved, the low
        // (x = 0) or high (x = 1) two values of each 128-bit lane.
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // s[4h + c]: column c (and c + 4, in the high lane) of half h's four rows.
        let s: [__m256; 8] = std::array::from_fn(|i| {
            let (h, c) = (i / 4, i % 4);
            let (a, b) = (t[4 * h + c / 2], t[4 * h + c / 2 + 2]);
            if c % 2 == 0 {
                _mm256_shuffle_ps::<0b01_00_01_00>(a, b)
            } else {
                _mm256_shuffle_ps::<0b11_10_11_10>(a, b)
            }
        });
        for c in 0..4 {
            let (low, high) =
                (_mm256_permute2f128_ps::<0x20>(s[c], s[c + 4]), _mm256_permute2f128_ps::<0x31>(s[c], s[c + 4]));
            // SAFETY: destination rows c and c + 4 < 8 (the caller's bounds).
            unsafe {
                _mm256_storeu_ps(dst.add(c * dst_step), low);
                _mm256_storeu_ps(dst.add((c + 4) * dst_step), high);
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// A 4x4 block through NEON registers: pairs of rows transposed, then 64-bit halves joined.
    ///
    /// # Safety
    /// `src` readable for 4 rows of 4 values `src_step` apart, `dst` writable for 4 rows of 4
    /// values `dst_step` apart.
    pub(super) unsafe fn block4(src: *const f32, src_step: usize, dst: *mut f32, dst_step: usize) {
        // SAFETY: rows 0-3 of the source and destination blocks (the caller's bounds); NEON is
        // part of every aarch64 CPU.
        unsafe {
            let r: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(src.add(i * src_step)));
            let a = vtrnq_f32(r[0], r[1]);
            let b = vtrnq_f32(r[2], r[3]);
            vst1q_f32(dst, vcombine_f32(vget_low_f32(a.0), vget_low_f32(b.0)));
            vst1q_f32(dst.add(dst_step), vcombine_f32(vget_low_f32(a.1), vget_low_f32(b.1)));
            vst1q_f32(dst.add(2 * dst_step), vcombine_f32(vget_high_f32(a.0), vget_high_f32(b.0)));
            vst1q_f32(dst.add(3 * dst_step), vcombine_f32(vget_high_f32(a.1), vget_high_f32(b.1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(src: &[f32], s: TransposeShape) -> Vec<f32> {
        let mut out = Vec::with_capacity(s.len());
        for o in 0..s.outer {
            for c in 0..s.cols {
                for r in 0..s.rows {
                    out.extend_from_slice(&src[((o * s.rows + r) * s.cols + c) * s.inner..][..s.inner]);
                }
            }
        }
        out
    }

    /// Every kernel, whole blocks and ragged edges, elements of one and of three values, a
    /// batch, and the result's rows taken in runs that cut a matrix partway.
    #[test]
    fn every_kernel_gives_the_transpose() {
        for (outer, rows, cols, inner) in [(1, 16, 16, 1), (2, 19, 13, 1), (3, 5, 9, 3), (1, 64, 8, 1), (2, 1, 7, 1)] {
            let s = TransposeShape { outer, rows, cols, inner };
            let src: Vec<f32> = (0..s.len()).map(|i| i as f32 * 0.5 - 3.0).collect();
            let want = reference(&src, s);
            for kernel in Kernel::supported() {
                for split in [s.out_rows(), 5, 1] {
                    let mut got = vec![f32::NAN; s.len()];
                    let row_len = rows * inner;
                    for (i, part) in got.chunks_mut(split * row_len).enumerate() {
                        let first = i * split;
                        transpose_rows(kernel, &src, s, first..first + part.len() / row_len, part).unwrap();
                    }
                    assert_eq!(got, want, "{} {s:?} runs of {split}", kernel.name());
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let s = TransposeShape { outer: 1, rows: 4, cols: 4, inner: 1 };
        let kernel = Kernel::Portable;
        assert!(transpose_rows(kernel, &[0.0; 15], s, 0..4, &mut [0.0; 16]).is_err());
        assert!(transpose_rows(kernel, &[0.0; 16], s, 0..4, &mut [0.0; 12]).is_err());
        assert!(transpose_rows(kernel, &[0.0; 16], s, 2..5, &mut [0.0; 12]).is_err());
    }
}
