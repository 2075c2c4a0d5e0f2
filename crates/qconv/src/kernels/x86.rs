//! x86_64 with AVX-512 VNNI: `vpdpbusd` multiplies 64 unsigned activation bytes by 64 signed
//! weight bytes and adds each group of four products into one of 16 i32 lanes, i.e. one
//! instruction does four reduction steps for 16 output pixels of one output channel. The
//! epilogue runs in the same registers, with explicit round-to-nearest-even conversions. The
//! kernel reads packed columns, or a stride-1 convolution's windows in place from the padded
//! image (`pack::Windows`: one unaligned load per tile and step either way).

use std::arch::x86_64::*;

use super::{Block, BlockEpilogue, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// How far ahead of the reduction step the weights are prefetched (into the next block's at the
/// end of a block's, which follow it in memory). A large net's weights come from memory at every
/// evaluation, and on small images each weight feeds few pixels: the 35.7M-parameter int8 net's
/// 4x4 layers took 61 us each without it, 45 with (one thread, `op_profile`).
const PREFETCH_BYTES: usize = 2048;

/// How many reduction steps ahead each tile's columns are prefetched. Consecutive steps read
/// rows of the band's columns `stride` bytes apart, one or two cache lines each, from L2: on
/// an Intel Xeon (Emerald Rapids) the hardware prefetchers left the loop waiting on them
/// (a 128->128 3x3 layer at 32x32 took 650-750 us without, 545-560 us with; the 35.7M int8
/// net's evaluation 1.5-4% less in six paired criterion runs).
const COLUMN_PREFETCH_STEPS: usize = 4;

/// The sums and epilogue of one block of output channels over every pixel of `cols`, three
/// tiles of pixels at a time (24 accumulators: each weight broadcast feeds three `vpdpbusd`,
/// 11 loads per 24), the last one or two tiles together. Three against two, on an Intel Xeon
/// (Emerald Rapids): 256->256 3x3 at 16x16 598 -> 532 us, at 8x8 151 -> 137 us (`conv_speed`,
/// best of 5 to 9); the 35.7M int8 net's convolutions 24.4 -> 22.8 ms with the aligned columns.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI, and `block`, `cols` and `out` must satisfy the
/// kernel bounds of the `kernels` module (which `kernels::gemm` asserts).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn block(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    let pixels = cols.pixels;
    let mut p0 = 0;
    while p0 < pixels {
        // SAFETY: p0 < pixels, and each tile taken starts below `pixels` (the contract's
        // bounds for each tile).
        unsafe {
            if p0 + 2 * TILE < pixels {
                tiles::<3>(block, cols, p0, &mut out);
                p0 += 3 * TILE;
            } else if p0 + TILE < pixels {
                tiles::<2>(block, cols, p0, &mut out);
                p0 += 2 * TILE;
            } else {
                tiles::<1>(block, cols, p0, &mut out);
                p0 += TILE;
            }
        }
    }
}

/// `T` tiles of pixels from `p0`: the sums, then the epilogue of each tile.
///
/// # Safety
/// As for [`block`], with `p0 + (T - 1) · TILE < cols.pixels`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tiles<const T: usize>(block: &Block<'_>, cols: &Columns<'_>, p0: usize, out: &mut Out<'_>) {
    let mut acc = [[_mm512_setzero_si512(); T]; ROWS];
    let mut w = block.weights.as_ptr() as *const i32;
    // One reduction step: the tiles' 64 bytes at `x[t]`, against the step's weights at `w`,
    // which then move on to the next step's (a macro, so that both walks below update `acc`
    // and `w` in place).
    macro_rules! step {
        ($x:expr) => {{
            // Hint only: no fault whatever the address, so past the weights' end it does nothing.
            _mm_prefetch::<_MM_HINT_T0>((w as *const i8).wrapping_add(PREFETCH_BYTES));
            // SAFETY: each `x[t]` is a tile's 16 pixels of this step within `cols.data` (the
            // callers below, from the kernel bounds).
            let xv: [__m512i; T] = $x.map(|x: *const u8| unsafe { _mm512_loadu_si512(x as *const _) });
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: `w` is this reduction step's ROWS words of the block's weights, which
                // hold `k_quads` steps (kernel bounds); r < ROWS.
                let wr = _mm512_set1_epi32(unsafe { w.add(r).read_unaligned() });
                for (a, xv) in row.iter_mut().zip(xv) {
                    *a = _mm512_dpbusd_epi32(*a, xv, wr);
                }
            }
            w = w.wrapping_add(ROWS);
        }};
    }
    match &cols.windows {
        None => {
            // Pixel p0 of reduction row 0, then of each next reduction step. Advanced with
            // `wrapping_add`: after the last step `x` may point past the columns, and is not
            // read there.
            let mut x = cols.data.as_ptr().wrapping_add(p0 * 4);
            for _ in 0..cols.k_quads {
                for t in 0..T {
                    let ahead = cols.stride * 4 * COLUMN_PREFETCH_STEPS + t * TILE * 4;
                    _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(ahead) as *const i8);
                }
                // `x + t · TILE · 4` is pixel p0 + t · TILE < pixels of one of the `k_quads`
                // reduction rows, with the row's `stride` a multiple of TILE no smaller than
                // `pixels` (kernel bounds), so its TILE pixels (64 bytes) lie within the columns.
                step!(std::array::from_fn::<_, T, _>(|t| x.wrapping_add(t * TILE * 4)));
                x = x.wrapping_add(cols.stride * 4);
            }
        }
        Some(win) => {
            // Each tile's window origin; step (q, i, j) is `((q · hp + i) · wp + j) · 4` bytes
            // on, in the packed columns' order. Every tile lies in one output row and every
            // step's 64 bytes in the image (`Windows::fit`, a kernel bound).
            let origin: [*const u8; T] =
                std::array::from_fn(|t| cols.data.as_ptr().wrapping_add(win.origin(win.first + p0 + t * TILE)));
            let plane = win.hp * win.wp * 4;
            for q in 0..win.quads {
                for i in 0..win.kernel_h {
                    let row = q * plane + i * win.wp * 4;
                    for j in 0..win.kernel_w {
                        step!(origin.map(|o| o.wrapping_add(row + j * 4)));
                    }
                }
            }
        }
    }
    let tiles: [[__m512i; ROWS]; T] = std::array::from_fn(|t| std::array::from_fn(|r| acc[r][t]));
    for (t, tile) in tiles.iter().enumerate() {
        // SAFETY: p0 + t · TILE < pixels (this function's contract).
        unsafe { epilogue(block, cols, tile, p0 + t * TILE, out) };
    }
}

/// Adds the offsets to one tile's sums, applies the block's epilogue and stores the valid
/// pixels from `p0` of each row.
///
/// # Safety
/// As for [`block`], with `p0 < cols.pixels`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn epilogue(block: &Block<'_>, cols: &Columns<'_>, acc: &[__m512i; ROWS], p0: usize, out: &mut Out<'_>) {
    let valid = (cols.pixels - p0).min(TILE);
    let mask: __mmask16 = if valid == TILE { 0xffff } else { (1u16 << valid) - 1 };
    // Output values r · out_stride + out_first + p0 + lane for the `valid` lanes the mask
    // enables: below (r + 1) · out_stride since out_first + pixels <= out_stride, and r is a
    // row of this block (kernel bounds). Masked-off lanes are not accessed.
    let at = |r: usize| r * cols.out_stride + cols.out_first + p0;
    for (r, &off) in block.offsets.iter().enumerate() {
        let v = _mm512_cvt_roundepi32_ps::<NEAREST>(_mm512_add_epi32(acc[r], _mm512_set1_epi32(off)));
        match (&mut *out, block.epilogue) {
            (Out::U8(o), BlockEpilogue::Requantize { mult, y_zero }) => {
                let f = _mm512_mul_ps(v, _mm512_set1_ps(mult[r]));
                let f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-512.0)), _mm512_set1_ps(512.0));
                let q = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<NEAREST>(f), _mm512_set1_epi32(y_zero as i32));
                let q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
                // SAFETY: the enabled lanes are output bytes of row r (see `at`).
                unsafe { _mm512_mask_cvtepi32_storeu_epi8(o.as_mut_ptr().add(at(r)) as *mut i8, mask, q) };
            }
            (Out::F32(o), BlockEpilogue::Dequantize { scale, bias }) => {
                let mut f = _mm512_mul_ps(v, _mm512_set1_ps(scale[r]));
                if let Some(b) = bias {
                    f = _mm512_add_ps(f, _mm512_set1_ps(b[r]));
                }
                // SAFETY: the enabled lanes are output values of row r (see `at`).
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(at(r)), mask, f) };
            }
            _ => unreachable!("QConv2d::run allocates the output its epilogue writes"),
        }
    }
}
