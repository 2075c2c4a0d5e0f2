//! aarch64 with the Armv8.2 dot-product extension (Cortex-A55/A76 and later): `sdot` by
//! element multiplies four signed bytes of four pixels by four signed weight bytes of one
//! output channel and adds them into four i32 lanes. Activations arrive shifted to signed
//! (`x ^ 0x80`, see `Kernel::signed_activations`).
//!
//! Hand-written assembly because the dot-product intrinsics (`vdotq_laneq_s32`) are still
//! unstable in Rust (`stdarch_neon_dotprod`); `asm!` is stable. One pass covers 8 output
//! channels x 8 pixels: 16 accumulators, 2 activation and 2 weight registers per step.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{portable, store_tile, Block, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

/// The sums and epilogue of one block of output channels over every pixel of `cols`.
///
/// # Safety
/// The CPU must have NEON and the dot-product extension, and `block`, `cols` and `out` must
/// satisfy the kernel bounds of the `kernels` module (which `kernels::gemm` asserts).
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn block(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    if cols.k_quads == 0 {
        // No reduction steps (no input channels): every sum is 0. The assembly loop below runs
        // at least once, so it must not see this.
        return portable::block(block, cols, out);
    }
    for p0 in (0..cols.pixels).step_by(TILE) {
        let mut acc = [[0i32; TILE]; ROWS];
        for half in 0..2 {
            // SAFETY: pixels p0 + 8·half .. p0 + 8·half + 8 of every reduction row lie within
            // `cols.data` (p0 < pixels and the rows hold whole TILEs: kernel bounds), and the
            // block's weights hold `k_quads` steps of ROWS x 4 bytes (kernel bounds);
            // k_quads >= 1 (checked above). The CPU has NEON and dotprod (this function's
            // contract).
            let sums = unsafe {
                eight_by_eight(
                    cols.data.as_ptr().add((p0 + half * 8) * 4),
                    cols.stride * 4,
                    block.weights.as_ptr(),
                    cols.k_quads,
                )
            };
            for (r, row) in sums.iter().enumerate() {
                acc[r][half * 8..half * 8 + 8].copy_from_slice(row);
            }
        }
        store_tile(block, &acc, cols.out_stride, cols.out_first + p0, (cols.pixels - p0).min(TILE), &mut out);
    }
}

/// Sums for 8 output channels x 8 pixels over `k_quads` >= 1 reduction steps.
///
/// # Safety
/// The CPU must have NEON and the dot-product extension; `k_quads >= 1`; for each step
/// `k < k_quads`, the 32 bytes (8 pixels) at `x + k · x_step` and the 32 bytes (ROWS rows of 4)
/// at `w + 32 · k` must be readable.
#[target_feature(enable = "neon,dotprod")]
unsafe fn eight_by_eight(x: *const u8, x_step: usize, w: *const i8, k_quads: usize) -> [[i32; 8]; ROWS] {
    debug_assert!(k_quads >= 1);
    let z = vdupq_n_s32(0);
    let (mut a00, mut a01, mut a10, mut a11, mut a20, mut a21, mut a30, mut a31) = (z, z, z, z, z, z, z, z);
    let (mut a40, mut a41, mut a50, mut a51, mut a60, mut a61, mut a70, mut a71) = (z, z, z, z, z, z, z, z);
    // SAFETY: the loop runs `k_quads` >= 1 times (the caller's contract; `subs`/`b.ne` would
    // run 2^64 times from 0), each time loading 32 bytes at `x` then advancing it by `x_step`,
    // and 32 bytes at `w` then advancing it by 32: exactly the ranges the caller guarantees
    // readable. It writes no memory (`readonly`) and no stack (`nostack`), clobbers only the
    // declared v28-v31, and `sdot` needs the dotprod feature this function enables.
    unsafe {
        asm!(
            "2:",
            "ld1 {{v28.16b, v29.16b}}, [{x}]",
            "add {x}, {x}, {xs}",
            "ld1 {{v30.16b, v31.16b}}, [{w}], #32",
            "sdot {a00:v}.4s, v28.16b, v30.4b[0]",
            "sdot {a01:v}.4s, v29.16b, v30.4b[0]",
            "sdot {a10:v}.4s, v28.16b, v30.4b[1]",
            "sdot {a11:v}.4s, v29.16b, v30.4b[1]",
            "sdot {a20:v}.4s, v28.16b, v30.4b[2]",
            "sdot {a21:v}.4s, v29.16b, v30.4b[2]",
            "sdot {a30:v}.4s, v28.16b, v30.4b[3]",
            "sdot {a31:v}.4s, v29.16b, v30.4b[3]",
            "sdot {a40:v}.4s, v28.16b, v31.4b[0]",
            "sdot {a41:v}.4s, v29.16b, v31.4b[0]",
            "sdot {a50:v}.4s, v28.16b, v31.4b[1]",
            "sdot {a51:v}.4s, v29.16b, v31.4b[1]",
            "sdot {a60:v}.4s, v28.16b, v31.4b[2]",
            "sdot {a61:v}.4s, v29.16b, v31.4b[2]",
            "sdot {a70:v}.4s, v28.16b, v31.4b[3]",
            "sdot {a71:v}.4s, v29.16b, v31.4b[3]",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) k_quads => _,
            xs = in(reg) x_step,
            a00 = inout(vreg) a00, a01 = inout(vreg) a01, a10 = inout(vreg) a10, a11 = inout(vreg) a11,
            a20 = inout(vreg) a20, a21 = inout(vreg) a21, a30 = inout(vreg) a30, a31 = inout(vreg) a31,
            a40 = inout(vreg) a40, a41 = inout(vreg) a41, a50 = inout(vreg) a50, a51 = inout(vreg) a51,
            a60 = inout(vreg) a60, a61 = inout(vreg) a61, a70 = inout(vreg) a70, a71 = inout(vreg) a71,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack, readonly),
        )
    };
    let mut sums = [[0i32; 8]; ROWS];
    for (row, (lo, hi)) in sums.iter_mut().zip([
        (a00, a01),
        (a10, a11),
        (a20, a21),
        (a30, a31),
        (a40, a41),
        (a50, a51),
        (a60, a61),
        (a70, a71),
    ]) {
        // SAFETY: `row` is 8 i32: `lo` fills 0..4 and `hi` 4..8.
        unsafe {
            vst1q_s32(row.as_mut_ptr(), lo);
            vst1q_s32(row.as_mut_ptr().add(4), hi);
        }
    }
    sums
}
