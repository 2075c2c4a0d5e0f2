//! The aarch64 micro-kernel: four `fmla` vectors per row, one lane per output element.

use std::arch::aarch64::*;

use super::Step;
use crate::NR;

/// See `super::tile` for what it computes.
///
/// # Safety
/// `a` must be readable for rows `r < rows` at `a_step.at(r, kk)`, `kk < k`, `panel` for `k * NR`
/// values and `out` readable and writable for `rows * NR`; 1 <= rows <= 4.
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile(
    k: usize,
    a: *const f32,
    a_step: Step,
    rows: usize,
    panel: *const f32,
    out: *mut f32,
    resume: bool,
) {
    // SAFETY: each arm forwards from this function's contract with R = rows.
    unsafe {
        match rows {
            1 => rows_of::<1>(k, a, a_step, panel, out, resume),
            2 => rows_of::<2>(k, a, a_step, panel, out, resume),
            3 => rows_of::<3>(k, a, a_step, panel, out, resume),
            _ => rows_of::<4>(k, a, a_step, panel, out, resume),
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn rows_of<const R: usize>(
    k: usize,
    a: *const f32,
    a_step: Step,
    panel: *const f32,
    out: *mut f32,
    resume: bool,
) {
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    if resume {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (q, v) in acc.iter_mut().enumerate() {
                // SAFETY: r < rows, so out[r * NR..][..NR] is readable (contract).
                *v = unsafe { vld1q_f32(out.add(r * NR + q * 4)) };
            }
        }
    }
    for kk in 0..k {
        // SAFETY: kk < k, so the panel's row kk (NR = 16 values) is inside `panel` (contract).
        let b = unsafe { [0, 4, 8, 12].map(|j| vld1q_f32(panel.add(kk * NR + j))) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R = rows and kk < k (contract).
            let av = vdupq_n_f32(unsafe { *a.add(a_step.at(r, kk)) });
            for (v, bv) in acc.iter_mut().zip(b) {
                *v = vfmaq_f32(*v, av, bv);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (q, v) in acc.iter().enumerate() {
            // SAFETY: r < rows, so out[r * NR..][..NR] is writable (contract).
            unsafe { vst1q_f32(out.add(r * NR + q * 4), *v) };
        }
    }
}
