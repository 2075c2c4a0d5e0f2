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

use super::{store_tile, Block, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn block(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    for p0 in (0..cols.pixels).step_by(TILE) {
        let mut acc = [[0i32; TILE]; ROWS];
        for half in 0..2 {
            let sums = eight_by_eight(
                cols.data.as_ptr().add((p0 + half * 8) * 4),
                cols.stride * 4,
                block.weights.as_ptr(),
                cols.k_quads,
            );
            for (r, row) in sums.iter().enumerate() {
                acc[r][half * 8..half * 8 + 8].copy_from_slice(row);
            }
        }
        store_tile(block, &acc, cols.out_stride, cols.out_first + p0, (cols.pixels - p0).min(TILE), &mut out);
    }
}

/// Sums for 8 output channels x 8 pixels over `k_quads` >= 1 reduction steps.
#[target_feature(enable = "neon,dotprod")]
unsafe fn eight_by_eight(x: *const u8, x_step: usize, w: *const i8, k_quads: usize) -> [[i32; 8]; ROWS] {
    debug_assert!(k_quads >= 1);
    let z = vdupq_n_s32(0);
    let (mut a00, mut a01, mut a10, mut a11, mut a20, mut a21, mut a30, mut a31) = (z, z, z, z, z, z, z, z);
    let (mut a40, mut a41, mut a50, mut a51, mut a60, mut a61, mut a70, mut a71) = (z, z, z, z, z, z, z, z);
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
    );
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
        vst1q_s32(row.as_mut_ptr(), lo);
        vst1q_s32(row.as_mut_ptr().add(4), hi);
    }
    sums
}
