//! The aarch64 micro-kernel: four `fmla` vectors per row, one lane per output element.

use std::arch::aarch64::*;

use super::{Step, Walk};
use crate::NR;

/// See `super::tile` for what it computes.
///
/// # Safety
/// `a` must be readable at `a_step.at(r, kk)` for `r < rows`, `kk < walk.len()`, `panel` for
/// `NR` values from every offset of `walk`, and `out` readable and writable for `rows * NR`
/// values; 1 <= rows <= 4.
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile(
    a: *const f32,
    a_step: Step,
    rows: usize,
    walk: Walk,
    panel: *const f32,
    out: *mut f32,
    resume: bool,
) {
    // SAFETY: each arm forwards this function's contract with R = rows.
    unsafe {
        match rows {
            1 => rows_of::<1>(a, a_step, walk, panel, out, resume),
            2 => rows_of::<2>(a, a_step, walk, panel, out, resume),
            3 => rows_of::<3>(a, a_step, walk, panel, out, resume),
            _ => rows_of::<4>(a, a_step, walk, panel, out, resume),
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn rows_of<const R: usize>(
    a: *const f32,
    a_step: Step,
    walk: Walk,
    panel: *const f32,
    out: *mut f32,
    resume: bool,
) {
    // SAFETY: out holds rows = R rows of NR values (contract).
    let mut acc = unsafe { start::<R>(out, resume) };
    // One reduction step: panel row `at`, step `kk` of `a` (a macro: closures do not inherit
    // this function's target features).
    macro_rules! step {
        ($at:expr, $kk:expr) => {{
            let (at, kk) = ($at, $kk);
            // SAFETY: `at` is one of the walk's offsets: NR = 16 values from it lie in `panel`.
            let b = unsafe { [0, 4, 8, 12].map(|q| vld1q_f32(panel.add(at + q))) };
            if R == 4 && a_step.row == 1 {
                // The four rows' values of step kk are adjacent (packed convolution weights):
                // one load, and `fmla` by lane (the same fused operation as on a broadcast).
                // SAFETY: rows 0..4 of step kk, a_step.at(r, kk) = kk · a_step.k + r (contract).
                let av = unsafe { vld1q_f32(a.add(a_step.at(0, kk))) };
                fma_by_lanes(&mut acc, b, av);
            } else {
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: r < rows and kk < walk.len() (contract).
                    let av = vdupq_n_f32(unsafe { *a.add(a_step.at(r, kk)) });
                    for (v, bv) in acc.iter_mut().zip(b) {
                        *v = vfmaq_f32(*v, av, bv);
                    }
                }
            }
        }};
    }
    for_each_step!(walk, step);
    // SAFETY: as for `start`.
    unsafe { finish(&acc, out) };
}

/// `rows` input positions `step` apart against one panel of 16 output channels, its four
/// blocks of 4 at `parts` (see `super::channel_tile`).
///
/// # Safety
/// `x` must be readable at every offset of `walk` plus `r · step` for `r < rows`, each part for
/// `4 · walk.len()` values, and `out` readable and writable for `rows · NR` values;
/// 1 <= rows <= 4.
#[target_feature(enable = "neon")]
pub(super) unsafe fn channels(
    x: *const f32,
    (rows, step): (usize, usize),
    walk: Walk,
    parts: [*const f32; 4],
    out: *mut f32,
    resume: bool,
) {
    // SAFETY: each arm forwards this function's contract with R = rows.
    unsafe {
        match rows {
            1 => channels_of::<1>(x, step, walk, parts, out, resume),
            2 => channels_of::<2>(x, step, walk, parts, out, resume),
            3 => channels_of::<3>(x, step, walk, parts, out, resume),
            _ => channels_of::<4>(x, step, walk, parts, out, resume),
        }
    }
}

/// `R` positions against one panel: four weight vectors per step, each position's value
/// broadcast (`ld1r`), 4 · R accumulators.
#[target_feature(enable = "neon")]
unsafe fn channels_of<const R: usize>(
    x: *const f32,
    step: usize,
    walk: Walk,
    parts: [*const f32; 4],
    out: *mut f32,
    resume: bool,
) {
    // SAFETY: out holds rows = R rows of NR values (contract).
    let mut acc = unsafe { start::<R>(out, resume) };
    macro_rules! step {
        ($at:expr, $kk:expr) => {{
            let (at, kk) = ($at, $kk);
            // SAFETY: kk < walk.len(), so 4 values from 4 · kk lie in each part (contract).
            let w = parts.map(|p| unsafe { vld1q_f32(p.add(4 * kk)) });
            if R == 4 && step == 1 {
                // Four adjacent positions: one load, and `fmla` by lane (the same fused
                // operation as on a broadcast).
                // SAFETY: positions at..at + 4 (contract, r < rows = 4, step 1).
                let xv = unsafe { vld1q_f32(x.add(at)) };
                fma_by_lanes(&mut acc, w, xv);
            } else {
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: `at` is one of the walk's offsets and r < rows (contract).
                    let xv = unsafe { vld1q_dup_f32(x.add(at + r * step)) };
                    for (v, wv) in acc.iter_mut().zip(w) {
                        *v = vfmaq_f32(*v, xv, wv);
                    }
                }
            }
        }};
    }
    for_each_step!(walk, step);
    // SAFETY: as for `start`.
    unsafe { finish(&acc, out) };
}

/// `acc[r][q] += b[q] · lanes[r]` for the first four rows, by lane (`fmla` by element: the same
/// fused operation as on a broadcast of `lanes[r]`). Panics if `R < 4`.
#[inline]
#[target_feature(enable = "neon")]
fn fma_by_lanes<const R: usize>(acc: &mut [[float32x4_t; 4]; R], b: [float32x4_t; 4], lanes: float32x4_t) {
    for (v, bv) in acc[0].iter_mut().zip(b) {
        *v = vfmaq_laneq_f32::<0>(*v, bv, lanes);
    }
    for (v, bv) in acc[1].iter_mut().zip(b) {
        *v = vfmaq_laneq_f32::<1>(*v, bv, lanes);
    }
    for (v, bv) in acc[2].iter_mut().zip(b) {
        *v = vfmaq_laneq_f32::<2>(*v, bv, lanes);
    }
    for (v, bv) in acc[3].iter_mut().zip(b) {
        *v = vfmaq_laneq_f32::<3>(*v, bv, lanes);
    }
}

/// `R` rows of four accumulator vectors: +0, or with `resume` the values in `out`
/// (`[R][NR]`).
///
/// # Safety
/// `out` must be readable for `R · NR` values.
#[target_feature(enable = "neon")]
unsafe fn start<const R: usize>(out: *const f32, resume: bool) -> [[float32x4_t; 4]; R] {
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    if resume {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (q, v) in acc.iter_mut().enumerate() {
                // SAFETY: r < R, so out[r · NR..][..NR] is readable (contract).
                *v = unsafe { vld1q_f32(out.add(r * NR + q * 4)) };
            }
        }
    }
    acc
}

/// Stores `R` rows of accumulators into `out` (`[R][NR]`).
///
/// # Safety
/// `out` must be writable for `R · NR` values.
#[target_feature(enable = "neon")]
unsafe fn finish<const R: usize>(acc: &[[float32x4_t; 4]; R], out: *mut f32) {
    for (r, acc) in acc.iter().enumerate() {
        for (q, v) in acc.iter().enumerate() {
            // SAFETY: r < R, so out[r · NR..][..NR] is writable (contract).
            unsafe { vst1q_f32(out.add(r * NR + q * 4), *v) };
        }
    }
}
