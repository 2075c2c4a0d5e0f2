//! aarch64 without the dot-product extension (Armv8.0: Cortex-A53, A72): `smull`/`smlal` on
//! signed bytes and `sadalp` into i32. Activations arrive shifted to signed (`x ^ 0x80`) and
//! weights are symmetric (|w| <= 127), so one product fits 15 bits and two fit an i16 lane:
//! each i16 lane takes two reduction steps (`smull` then `smlal`) before `sadalp` widens pairs
//! of lanes into i32. One pass covers 4 output channels x 8 pixels.
//!
//! The inner loop is assembly: written with intrinsics, rustc spills accumulators to the
//! stack and splits registers with `ext` instead of using `smull2`, 96 instructions per two
//! reduction steps where a pass of this loop takes 52 (48 multiply-accumulates, one `ld4r` that
//! loads and broadcasts four channels' weights and one `ld1` of eight pixels per step), plus one
//! branch per two passes. Measured under qemu cortex-a53 on the default int8 model: an
//! evaluation takes 33.9 M instructions with the intrinsics loop (22.5 M of them in it) and
//! 22.5 M with this one (12.7 M in it).

use std::arch::aarch64::*;
use std::arch::asm;

use super::{store_tile, Block, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

/// The sums and epilogue of one block of output channels over every pixel of `cols`.
///
/// # Safety
/// `block`, `cols` and `out` must satisfy the kernel bounds of the `kernels` module (which
/// `kernels::gemm` asserts). NEON itself is part of every aarch64 CPU.
pub(super) unsafe fn block(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    for p0 in (0..cols.pixels).step_by(TILE) {
        let mut acc = [[0i32; TILE]; ROWS];
        for half in 0..2 {
            for rows in 0..2 {
                // SAFETY: pixels p0 + 8·half .. p0 + 8·half + 8 of every reduction row lie within
                // `cols.data` (p0 < pixels and the rows hold whole TILEs), and rows 4·rows ..
                // 4·rows + 4 of each of the `k_quads` weight steps lie within the block's
                // weights (`k_quads` steps of ROWS x 4 bytes): the kernel bounds.
                let sums = unsafe {
                    let x = cols.data.as_ptr().add((p0 + half * 8) * 4) as *const i8;
                    let w = block.weights.as_ptr().add(rows * 16);
                    four_by_eight(x, cols.stride * 4, w, cols.k_quads)
                };
                for (r, row) in sums.iter().enumerate() {
                    acc[rows * 4 + r][half * 8..half * 8 + 8].copy_from_slice(row);
                }
            }
        }
        store_tile(block, &acc, cols.out_stride, cols.out_first + p0, (cols.pixels - p0).min(TILE), &mut out);
    }
}

/// One pass of the inner loop: two reduction steps a and b. v16/v17 hold pixels 0-3/4-7 of step
/// a, v18/v19 of step b; v20-v23 rows 0-3 of step a, each row's 4 bytes broadcast (`ld4r`),
/// v24-v27 of step b; v28-v31 the i16 products.
macro_rules! pass {
    () => {
        concat!(
            "ld1 {{v16.16b, v17.16b}}, [{x}], {xs}\n",
            "ld1 {{v18.16b, v19.16b}}, [{x}], {xs}\n",
            "ld4r {{v20.4s, v21.4s, v22.4s, v23.4s}}, [{w}], {ws}\n",
            "ld4r {{v24.4s, v25.4s, v26.4s, v27.4s}}, [{w}], {ws}\n",
            "smull v28.8h, v16.8b, v20.8b\n",
            "smlal v28.8h, v18.8b, v24.8b\n",
            "sadalp {a00:v}.4s, v28.8h\n",
            "smull2 v29.8h, v16.16b, v20.16b\n",
            "smlal2 v29.8h, v18.16b, v24.16b\n",
            "sadalp {a01:v}.4s, v29.8h\n",
            "smull v30.8h, v17.8b, v20.8b\n",
            "smlal v30.8h, v19.8b, v24.8b\n",
            "sadalp {a02:v}.4s, v30.8h\n",
            "smull2 v31.8h, v17.16b, v20.16b\n",
            "smlal2 v31.8h, v19.16b, v24.16b\n",
            "sadalp {a03:v}.4s, v31.8h\n",
            "smull v28.8h, v16.8b, v21.8b\n",
            "smlal v28.8h, v18.8b, v25.8b\n",
            "sadalp {a10:v}.4s, v28.8h\n",
            "smull2 v29.8h, v16.16b, v21.16b\n",
            "smlal2 v29.8h, v18.16b, v25.16b\n",
            "sadalp {a11:v}.4s, v29.8h\n",
            "smull v30.8h, v17.8b, v21.8b\n",
            "smlal v30.8h, v19.8b, v25.8b\n",
            "sadalp {a12:v}.4s, v30.8h\n",
            "smull2 v31.8h, v17.16b, v21.16b\n",
            "smlal2 v31.8h, v19.16b, v25.16b\n",
            "sadalp {a13:v}.4s, v31.8h\n",
            "smull v28.8h, v16.8b, v22.8b\n",
            "smlal v28.8h, v18.8b, v26.8b\n",
            "sadalp {a20:v}.4s, v28.8h\n",
            "smull2 v29.8h, v16.16b, v22.16b\n",
            "smlal2 v29.8h, v18.16b, v26.16b\n",
            "sadalp {a21:v}.4s, v29.8h\n",
            "smull v30.8h, v17.8b, v22.8b\n",
            "smlal v30.8h, v19.8b, v26.8b\n",
            "sadalp {a22:v}.4s, v30.8h\n",
            "smull2 v31.8h, v17.16b, v22.16b\n",
            "smlal2 v31.8h, v19.16b, v26.16b\n",
            "sadalp {a23:v}.4s, v31.8h\n",
            "smull v28.8h, v16.8b, v23.8b\n",
            "smlal v28.8h, v18.8b, v27.8b\n",
            "sadalp {a30:v}.4s, v28.8h\n",
            "smull2 v29.8h, v16.16b, v23.16b\n",
            "smlal2 v29.8h, v18.16b, v27.16b\n",
            "sadalp {a31:v}.4s, v29.8h\n",
            "smull v30.8h, v17.8b, v23.8b\n",
            "smlal v30.8h, v19.8b, v27.8b\n",
            "sadalp {a32:v}.4s, v30.8h\n",
            "smull2 v31.8h, v17.16b, v23.16b\n",
            "smlal2 v31.8h, v19.16b, v27.16b\n",
            "sadalp {a33:v}.4s, v31.8h\n",
        )
    };
}

/// Sums for 4 output channels (`w` points at row 0 of a `[K/4][ROWS][4]` block) x 8 pixels
/// (`x` at the first of them in `[K/4][x_step]` bytes) over `k_quads` reduction steps.
///
/// # Safety
/// For each step `k < k_quads`, the 32 bytes (8 pixels) at `x + k · x_step` and the 16 bytes
/// (4 rows of 4) at `w + k · ROWS · 4` must be readable.
#[inline(always)]
unsafe fn four_by_eight(x: *const i8, x_step: usize, w: *const i8, k_quads: usize) -> [[i32; 8]; 4] {
    // a{r}{j}: row r, pixels 2j and 2j+1 as [p(k0+k1), p(k2+k3), p'(k0+k1), p'(k2+k3)].
    // SAFETY: `vdupq_n_s32` takes no pointer and needs only NEON, which every aarch64 CPU has
    // (the aarch64 targets' baseline enables it); it needs an `unsafe` block here only because
    // an `#[inline(always)]` function cannot carry `#[target_feature]`.
    let z = unsafe { vdupq_n_s32(0) };
    let (mut a00, mut a01, mut a02, mut a03, mut a10, mut a11, mut a12, mut a13) = (z, z, z, z, z, z, z, z);
    let (mut a20, mut a21, mut a22, mut a23, mut a30, mut a31, mut a32, mut a33) = (z, z, z, z, z, z, z, z);
    let (mut x, mut w) = (x, w);
    // Two passes per branch (k_quads / 4 times), then one more if k_quads / 2 is odd.
    // SAFETY: the passes cover the first 2 · (k_quads / 2) steps (none when k_quads < 2: `cbz`
    // skips the loop and the odd pass), each step loading 32 bytes at `x` and 16 at `w`
    // (`ld4r`), then advancing them by `x_step` and ROWS · 4: exactly the steps the caller
    // guarantees readable. It writes no memory (`readonly`) and no stack (`nostack`), and
    // clobbers only the declared v16-v31; `x` and `w` come back at the next step.
    unsafe {
        asm!(
            "cbz {n}, 3f",
            "2:",
            pass!(),
            pass!(),
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "3:",
            "cbz {odd}, 4f",
            pass!(),
            "4:",
            x = inout(reg) x,
            w = inout(reg) w,
            n = inout(reg) k_quads / 4 => _,
            odd = in(reg) (k_quads / 2) % 2,
            xs = in(reg) x_step,
            ws = in(reg) ROWS * 4,
            a00 = inout(vreg) a00, a01 = inout(vreg) a01, a02 = inout(vreg) a02, a03 = inout(vreg) a03,
            a10 = inout(vreg) a10, a11 = inout(vreg) a11, a12 = inout(vreg) a12, a13 = inout(vreg) a13,
            a20 = inout(vreg) a20, a21 = inout(vreg) a21, a22 = inout(vreg) a22, a23 = inout(vreg) a23,
            a30 = inout(vreg) a30, a31 = inout(vreg) a31, a32 = inout(vreg) a32, a33 = inout(vreg) a33,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
            out("v22") _, out("v23") _, out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack, readonly),
        )
    };
    let mut acc = [[a00, a01, a02, a03], [a10, a11, a12, a13], [a20, a21, a22, a23], [a30, a31, a32, a33]];
    if k_quads % 2 == 1 {
        // The last, odd step: one product per i16 lane.
        // SAFETY: `x` and `w` are now at step k_quads - 1, whose 32 bytes at `x` and 16 at `w`
        // (4 rows, r < 4) are readable (the caller's contract). The other intrinsics take no
        // pointer and need only NEON, as `vdupq_n_s32` above.
        unsafe {
            let xa = [vld1q_s8(x), vld1q_s8(x.add(16))];
            for (r, acc) in acc.iter_mut().enumerate() {
                let wr = vreinterpretq_s8_s32(vld1q_dup_s32(w.add(r * 4) as *const i32));
                for (j, a) in acc.iter_mut().enumerate() {
                    let prod = if j % 2 == 0 {
                        vmull_s8(vget_low_s8(xa[j / 2]), vget_low_s8(wr))
                    } else {
                        vmull_high_s8(xa[j / 2], wr)
                    };
                    *a = vpadalq_s16(*a, prod);
                }
            }
        }
    }
    let mut sums = [[0i32; 8]; 4];
    for (row, a) in sums.iter_mut().zip(acc) {
        // SAFETY: `row` is 8 i32: each store fills 4 of them, 0..4 then 4..8 (`vpaddq_s32` takes
        // no pointer and needs only NEON, as above).
        unsafe {
            vst1q_s32(row.as_mut_ptr(), vpaddq_s32(a[0], a[1]));
            vst1q_s32(row.as_mut_ptr().add(4), vpaddq_s32(a[2], a[3]));
        }
    }
    sums
}
