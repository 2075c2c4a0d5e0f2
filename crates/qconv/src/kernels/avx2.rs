//! x86_64 without AVX-512 VNNI: two 256-bit kernels for the CPUs most x86 boards carry.
//!
//! - AVX-VNNI (Intel Alder Lake and later, the N-series edge chips among them): the VEX form
//!   of `vpdpbusd`, 8 pixels x 4 reduction steps of one output channel per instruction.
//! - AVX2 alone (older Intel, AMD before Zen 4): there is no exact byte product (`vpmaddubsw`
//!   saturates its 16-bit pair sums: 2 · 255 · 127 does not fit), so activations and weights
//!   are widened to 16 bits and `vpmaddwd` sums pairs of exact products into 32 bits.
//!
//! Both sum in 32-bit integers, exactly, so the order of the additions does not matter: their
//! sums are the portable kernel's, and the epilogue is the portable one ([`store_tile`]).

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::{store_tile, Block, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

/// The sums and epilogue of one block of output channels over every pixel of `cols`, with
/// AVX-VNNI: each tile of [`TILE`] pixels as two halves of 8.
///
/// # Safety
/// The CPU must have AVX2 and AVX-VNNI, and `block`, `cols` and `out` must satisfy the kernel
/// bounds of the `kernels` module (which `kernels::gemm` asserts).
#[target_feature(enable = "avx2,avxvnni")]
pub(super) unsafe fn block_vnni(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    for p0 in (0..cols.pixels).step_by(TILE) {
        let mut acc = [[0i32; TILE]; ROWS];
        for part in (0..TILE).step_by(8).take_while(|part| p0 + part < cols.pixels) {
            // SAFETY: p0 + part < pixels, and the tile from p0 (< pixels) lies within every
            // reduction row (kernel bounds), so do these 8 of its pixels.
            let sums = unsafe { vnni_sums(block, cols, p0 + part) };
            for (row, sum) in acc.iter_mut().zip(sums) {
                // SAFETY: `row[part..]` holds at least 8 i32 (part + 8 <= TILE).
                unsafe { _mm256_storeu_si256(row[part..].as_mut_ptr() as *mut __m256i, sum) };
            }
        }
        store_tile(block, &acc, cols.out_stride, cols.out_first + p0, (cols.pixels - p0).min(TILE), &mut out);
    }
}

/// The sums of 8 pixels from `p` for every row of the block, one vector per row.
///
/// # Safety
/// As for [`block_vnni`], with pixels `p..p + 8` inside a tile that starts below `cols.pixels`.
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn vnni_sums(block: &Block<'_>, cols: &Columns<'_>, p: usize) -> [__m256i; ROWS] {
    let mut acc = [_mm256_setzero_si256(); ROWS];
    // Advanced with `wrapping_add`: after the last step both may point past their data, and
    // neither is read there.
    let mut x = cols.data.as_ptr().wrapping_add(p * 4);
    let mut w = block.weights.as_ptr() as *const i32;
    for _ in 0..cols.k_quads {
        // SAFETY: 8 pixels (32 bytes) of one of the `k_quads` reduction rows, within the row
        // (this function's contract).
        let xv = unsafe { _mm256_loadu_si256(x as *const __m256i) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: `w` is this step's ROWS words of the block's weights, which hold `k_quads`
            // steps (kernel bounds); r < ROWS.
            let wr = _mm256_set1_epi32(unsafe { w.add(r).read_unaligned() });
            *a = _mm256_dpbusd_avx_epi32(*a, xv, wr);
        }
        x = x.wrapping_add(cols.stride * 4);
        w = w.wrapping_add(ROWS);
    }
    acc
}

thread_local! {
    /// The block's weights widened to 16 bits, in their packed order (`[K/4][ROWS][4]`), so the
    /// inner loop broadcasts one row's four weights of a step from memory in one 64-bit load.
    static WIDE_WEIGHTS: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
}

/// The sums and epilogue of one block of output channels over every pixel of `cols`, with
/// AVX2 alone: each tile of [`TILE`] pixels as four quarters of 4.
///
/// # Safety
/// The CPU must have AVX2, and `block`, `cols` and `out` must satisfy the kernel bounds of the
/// `kernels` module (which `kernels::gemm` asserts).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn block_avx2(block: &Block<'_>, cols: &Columns<'_>, out: Out<'_>) {
    WIDE_WEIGHTS.with_borrow_mut(|wide| {
        widen(&block.weights[..cols.k_quads * ROWS * 4], wide);
        // SAFETY: this function's contract, and `wide` holds the block's `k_quads` steps.
        unsafe { madd_tiles(block, cols, wide, out) }
    });
}

/// [`block_avx2`] with the block's weights widened.
///
/// # Safety
/// As for [`block_avx2`], with `wide` holding at least `cols.k_quads · ROWS · 4` values.
#[target_feature(enable = "avx2")]
unsafe fn madd_tiles(block: &Block<'_>, cols: &Columns<'_>, wide: &[i16], mut out: Out<'_>) {
    for p0 in (0..cols.pixels).step_by(TILE) {
        let mut acc = [[0i32; TILE]; ROWS];
        for half in (0..TILE).step_by(8).take_while(|half| p0 + half < cols.pixels) {
            // SAFETY: both quarters lie in the tile from p0 < pixels (the contract of
            // `madd_sums`); the second may be past `pixels`, its sums then unused.
            let (first, second) = unsafe { (madd_sums(wide, cols, p0 + half), madd_sums(wide, cols, p0 + half + 4)) };
            for ((row, a), b) in acc.iter_mut().zip(first).zip(second) {
                // Lanes [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7]: the sums of
                // pixels 0, 1, 4, 5 | 2, 3, 6, 7, put in order by moving 64-bit pairs.
                let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(a, b));
                // SAFETY: `row[half..]` holds at least 8 i32 (half + 8 <= TILE).
                unsafe { _mm256_storeu_si256(row[half..].as_mut_ptr() as *mut __m256i, sums) };
            }
        }
        store_tile(block, &acc, cols.out_stride, cols.out_first + p0, (cols.pixels - p0).min(TILE), &mut out);
    }
}

/// `weights` sign-extended to 16 bits (one `vpmovsxbw` per 16 weights once vectorised).
#[target_feature(enable = "avx2")]
fn widen(weights: &[i8], wide: &mut Vec<i16>) {
    wide.clear();
    wide.extend(weights.iter().map(|&w| i16::from(w)));
}

/// The sums of 4 pixels from `p` for every row: per row, lanes `2t` and `2t + 1` hold two
/// halves of pixel `p + t`'s sum (its reduction steps' values 0–1 and 2–3).
///
/// # Safety
/// As for [`block_avx2`], with pixels `p..p + 4` inside a tile that starts below
/// `cols.pixels`, and `wide` holding at least `cols.k_quads · ROWS · 4` values.
#[target_feature(enable = "avx2")]
unsafe fn madd_sums(wide: &[i16], cols: &Columns<'_>, p: usize) -> [__m256i; ROWS] {
    let mut acc = [_mm256_setzero_si256(); ROWS];
    let mut x = cols.data.as_ptr().wrapping_add(p * 4);
    let mut w = wide.as_ptr() as *const i64;
    for _ in 0..cols.k_quads {
        // SAFETY: 4 pixels (16 bytes) of one of the `k_quads` reduction rows, within the row
        // (this function's contract).
        let xv = _mm256_cvtepu8_epi16(unsafe { _mm_loadu_si128(x as *const __m128i) });
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: `w` is this step's ROWS groups of four values of `wide` (this function's
            // contract), read as one unaligned i64 each.
            let wr = _mm256_set1_epi64x(unsafe { w.add(r).read_unaligned() });
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wr));
        }
        x = x.wrapping_add(cols.stride * 4);
        w = w.wrapping_add(ROWS);
    }
    acc
}
