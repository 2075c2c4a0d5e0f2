//! Plain Rust: the reference the SIMD kernels must match byte for byte, and what runs on CPUs
//! without them (e.g. the Cortex-A53, Armv8.0, which has no dot-product instruction).

use super::{store_tile, Block, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

pub(super) fn block(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    for p0 in (0..cols.pixels).step_by(TILE) {
        let mut acc = [[0i32; TILE]; ROWS];
        for kq in 0..cols.k_quads {
            let x = &cols.data[(kq * cols.stride + p0) * 4..][..TILE * 4];
            let w = &block.weights[kq * ROWS * 4..][..ROWS * 4];
            for (acc_row, w4) in acc.iter_mut().zip(w.chunks_exact(4)) {
                for (a, x4) in acc_row.iter_mut().zip(x.chunks_exact(4)) {
                    *a += x4[0] as i32 * w4[0] as i32
                        + x4[1] as i32 * w4[1] as i32
                        + x4[2] as i32 * w4[2] as i32
                        + x4[3] as i32 * w4[3] as i32;
                }
            }
        }
        store_tile(block, &acc, cols.out_stride, cols.out_first + p0, (cols.pixels - p0).min(TILE), &mut out);
    }
}
