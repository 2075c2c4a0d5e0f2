//! The reference kernel: plain loops, `f32::mul_add` (one rounding, as the FMA instructions).

use super::{Step, Walk};
use crate::NR;

pub(super) fn tile(a: &[f32], a_step: Step, rows: usize, walk: Walk, panel: &[f32], out: &mut [f32], resume: bool) {
    let out = &mut out[..rows * NR];
    if !resume {
        out.fill(0.0);
    }
    for (kk, at) in walk.offsets().enumerate() {
        let b = &panel[at..at + NR];
        for (r, acc) in out.chunks_exact_mut(NR).enumerate() {
            let av = a[a_step.at(r, kk)];
            for (c, &bv) in acc.iter_mut().zip(b) {
                *c = av.mul_add(bv, *c);
            }
        }
    }
}
