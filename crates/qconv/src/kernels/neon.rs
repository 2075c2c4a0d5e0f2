//! aarch64 without the dot-product extension (Armv8.0: Cortex-A53, A72): `smull`/`smlal` on
//! signed bytes and `sadalp` into i32. Activations arrive shifted to signed (`x ^ 0x80`) and
//! weights are symmetric (|w| <= 127), so one product fits 15 bits and two fit an i16 lane:
//! each i16 lane takes two reduction steps (`smull` then `smlal`) before `sadalp` widens pairs
//! of lanes into i32. One pass covers 4 output channels x 8 pixels.

use std::arch::aarch64::*;

use super::{store_tile, Block, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

pub(super) unsafe fn block(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    for p0 in (0..cols.pixels).step_by(TILE) {
        let mut acc = [[0i32; TILE]; ROWS];
        for half in 0..2 {
            for rows in 0..2 {
                let x = cols.data.as_ptr().add((p0 + half * 8) * 4) as *const i8;
                let w = block.weights.as_ptr().add(rows * 16);
                let sums = four_by_eight(x, cols.stride * 4, w, cols.k_quads);
                for (r, row) in sums.iter().enumerate() {
                    acc[rows * 4 + r][half * 8..half * 8 + 8].copy_from_slice(row);
                }
            }
        }
        store_tile(block, &acc, cols.out_stride, cols.out_first + p0, (cols.pixels - p0).min(TILE), &mut out);
    }
}

/// Sums for 4 output channels (`w` points at row 0 of a `[K/4][ROWS][4]` block) x 8 pixels.
#[inline(always)]
unsafe fn four_by_eight(x: *const i8, x_step: usize, w: *const i8, k_quads: usize) -> [[i32; 8]; 4] {
    // acc[r][j]: pixels 2j, 2j+1 as [p(k0+k1), p(k2+k3), p'(k0+k1), p'(k2+k3)].
    let mut acc = [[vdupq_n_s32(0); 4]; 4];
    let w_step = ROWS * 4;
    let row_weights = |w: *const i8| -> [int8x8_t; 4] {
        // Each row's four weights, twice (two pixels per 8-byte half).
        [0, 1, 2, 3].map(|r| vreinterpret_s8_s32(vld1_dup_s32(w.add(r * 4) as *const i32)))
    };
    let mut k = 0;
    while k + 2 <= k_quads {
        let (xa, xb) = (x.add(k * x_step), x.add((k + 1) * x_step));
        let (xa, xb) = ([vld1q_s8(xa), vld1q_s8(xa.add(16))], [vld1q_s8(xb), vld1q_s8(xb.add(16))]);
        let (wa, wb) = (row_weights(w.add(k * w_step)), row_weights(w.add((k + 1) * w_step)));
        for r in 0..4 {
            for j in 0..4 {
                let (a, b) = if j % 2 == 0 {
                    (vget_low_s8(xa[j / 2]), vget_low_s8(xb[j / 2]))
                } else {
                    (vget_high_s8(xa[j / 2]), vget_high_s8(xb[j / 2]))
                };
                let prod = vmlal_s8(vmull_s8(a, wa[r]), b, wb[r]);
                acc[r][j] = vpadalq_s16(acc[r][j], prod);
            }
        }
        k += 2;
    }
    if k < k_quads {
        let xa = x.add(k * x_step);
        let xa = [vld1q_s8(xa), vld1q_s8(xa.add(16))];
        let wa = row_weights(w.add(k * w_step));
        for r in 0..4 {
            for j in 0..4 {
                let a = if j % 2 == 0 { vget_low_s8(xa[j / 2]) } else { vget_high_s8(xa[j / 2]) };
                acc[r][j] = vpadalq_s16(acc[r][j], vmull_s8(a, wa[r]));
            }
        }
    }
    let mut sums = [[0i32; 8]; 4];
    for (row, a) in sums.iter_mut().zip(acc) {
        vst1q_s32(row.as_mut_ptr(), vpaddq_s32(a[0], a[1]));
        vst1q_s32(row.as_mut_ptr().add(4), vpaddq_s32(a[2], a[3]));
    }
    sums
}
