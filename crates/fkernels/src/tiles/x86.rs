//! x86_64 micro-kernels: one accumulator lane per output element, `vfmadd231ps` per term with
//! the broadcast operand read from memory. Const generics keep each tile's accumulators in
//! registers; `tile_*` picks the instance for the row count.

use std::arch::x86_64::*;

use super::{Step, Walk};
use crate::NR;

/// `T` tiles against the same rows of `a` (see `super::tile` for what each is), `8 · T`
/// accumulators at most: each broadcast feeds `T` FMAs.
///
/// # Safety
/// The CPU must have AVX-512 F; `a` must be readable at `a_step.at(r, kk)` for `r < rows`,
/// `kk < walk.len()`, each panel for `NR` values from every offset of `walk`, and each output
/// readable and writable for `rows * NR` values; 1 <= rows <= 8.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tiles_avx512<const T: usize>(
    a: *const f32,
    a_step: Step,
    rows: usize,
    walk: Walk,
    panels: [*const f32; T],
    outs: [*mut f32; T],
    resume: bool,
) {
    // SAFETY: each arm forwards this function's contract with R = rows.
    unsafe {
        match (rows, a_step.row == 1) {
            (8, true) => avx512::<8, T, true>(a, a_step, walk, panels, outs, resume),
            (1, _) => avx512::<1, T, false>(a, a_step, walk, panels, outs, resume),
            (2, _) => avx512::<2, T, false>(a, a_step, walk, panels, outs, resume),
            (3, _) => avx512::<3, T, false>(a, a_step, walk, panels, outs, resume),
            (4, _) => avx512::<4, T, false>(a, a_step, walk, panels, outs, resume),
            (5, _) => avx512::<5, T, false>(a, a_step, walk, panels, outs, resume),
            (6, _) => avx512::<6, T, false>(a, a_step, walk, panels, outs, resume),
            (7, _) => avx512::<7, T, false>(a, a_step, walk, panels, outs, resume),
            _ => avx512::<8, T, false>(a, a_step, walk, panels, outs, resume),
        }
    }
}

/// `R` rows against `T` panels read at the same offsets; `ADJACENT` as for [`avx2`].
#[target_feature(enable = "avx512f")]
unsafe fn avx512<const R: usize, const T: usize, const ADJACENT: bool>(
    a: *const f32,
    a_step: Step,
    walk: Walk,
    panels: [*const f32; T],
    outs: [*mut f32; T],
    resume: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    if resume {
        for (acc, out) in acc.iter_mut().zip(outs) {
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r < rows, so out[r * NR..][..NR] is readable (contract).
                *acc = unsafe { _mm512_loadu_ps(out.add(r * NR)) };
            }
        }
    }
    // One reduction step (a macro: closures do not inherit this function's target features).
    macro_rules! step {
        ($at:expr, $kk:expr) => {{
            let (at, kk) = ($at, $kk);
            // SAFETY: `at` is one of the walk's offsets: NR values from it lie in each panel.
            let b = panels.map(|p| unsafe { _mm512_loadu_ps(p.add(at)) });
            let first = a.wrapping_add(kk * a_step.k);
            for r in 0..R {
                let at = if ADJACENT { first.wrapping_add(r) } else { a.wrapping_add(a_step.at(r, kk)) };
                // SAFETY: `at` is a_step.at(r, kk) from `a` (row step 1 where ADJACENT), with
                // r < rows and kk < walk.len() (contract).
                let av = _mm512_set1_ps(unsafe { *at });
                for (acc, b) in acc.iter_mut().zip(b) {
                    acc[r] = _mm512_fmadd_ps(av, b, acc[r]);
                }
            }
        }};
    }
    for_each_step!(walk, step, rolled);
    for (acc, out) in acc.iter().zip(outs) {
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: r < rows, so out[r * NR..][..NR] is writable (contract).
            unsafe { _mm512_storeu_ps(out.add(r * NR), *acc) };
        }
    }
}

/// See `super::tile` for what it computes.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the bounds of [`tiles_avx512`] for one tile, with
/// 1 <= rows <= 4.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(
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
        match (rows, a_step.row == 1) {
            (6, true) => avx2::<6, true>(a, a_step, walk, panel, out, resume),
            (1, _) => avx2::<1, false>(a, a_step, walk, panel, out, resume),
            (2, _) => avx2::<2, false>(a, a_step, walk, panel, out, resume),
            (3, _) => avx2::<3, false>(a, a_step, walk, panel, out, resume),
            (4, _) => avx2::<4, false>(a, a_step, walk, panel, out, resume),
            (5, _) => avx2::<5, false>(a, a_step, walk, panel, out, resume),
            _ => avx2::<6, false>(a, a_step, walk, panel, out, resume),
        }
    }
}

/// `R` rows; with `ADJACENT` the rows' values of one step are adjacent (`a_step.row == 1`, a
/// whole block of packed convolution weights), so each broadcast reads at a constant offset
/// from the step's first value instead of computing its own address (a ninth of an evaluation's
/// instructions under callgrind).
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize, const ADJACENT: bool>(
    a: *const f32,
    a_step: Step,
    walk: Walk,
    panel: *const f32,
    out: *mut f32,
    resume: bool,
) {
    let mut lo = [_mm256_setzero_ps(); R];
    let mut hi = [_mm256_setzero_ps(); R];
    if resume {
        for r in 0..R {
            // SAFETY: r < rows, so out[r * NR..][..16] is readable (contract).
            unsafe { (lo[r], hi[r]) = (_mm256_loadu_ps(out.add(r * NR)), _mm256_loadu_ps(out.add(r * NR + 8))) };
        }
    }
    // One reduction step: panel row `at`, step `kk` of `a` (a macro: closures do not inherit
    // this function's target features).
    macro_rules! step {
        ($at:expr, $kk:expr) => {{
            let (at, kk) = ($at, $kk);
            // SAFETY: `at` is one of the walk's offsets: NR = 16 values from it lie in `panel`.
            let (b0, b1) = unsafe { (_mm256_loadu_ps(panel.add(at)), _mm256_loadu_ps(panel.add(at + 8))) };
            let first = a.wrapping_add(kk * a_step.k);
            for r in 0..R {
                let at = if ADJACENT { first.wrapping_add(r) } else { a.wrapping_add(a_step.at(r, kk)) };
                // SAFETY: `at` is a_step.at(r, kk) from `a` (row step 1 where ADJACENT), with
                // r < rows and kk < walk.len() (contract).
                let av = _mm256_set1_ps(unsafe { *at });
                lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
            }
        }};
    }
    for_each_step!(walk, step);
    for r in 0..R {
        // SAFETY: r < rows, so out[r * NR..][..16] is writable (contract).
        unsafe {
            _mm256_storeu_ps(out.add(r * NR), lo[r]);
            _mm256_storeu_ps(out.add(r * NR + 8), hi[r]);
        }
    }
}

/// `rows` input positions `step` apart against `V` panels of 16 output channels (see
/// `super::channel::channel_tile`), `R · V` accumulators.
///
/// # Safety
/// The CPU must have AVX-512 F; `x` must be readable at every offset of `walk` plus `r · step`
/// for `r < rows`, each half for `8 · walk.len()` values, and `out` readable and writable for
/// `V · rows · NR` values; 1 <= rows <= 8, and V <= 2 where rows > 4.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn channels_avx512<const V: usize>(
    x: *const f32,
    (rows, step): (usize, usize),
    walk: Walk,
    halves: [[*const f32; 2]; V],
    out: *mut f32,
    resume: bool,
) {
    // SAFETY: each arm forwards this function's contract with R = rows.
    unsafe {
        match rows {
            1 => channels::<1, V>(x, step, walk, halves, out, resume),
            2 => channels::<2, V>(x, step, walk, halves, out, resume),
            3 => channels::<3, V>(x, step, walk, halves, out, resume),
            4 => channels::<4, V>(x, step, walk, halves, out, resume),
            5 => channels::<5, V>(x, step, walk, halves, out, resume),
            6 => channels::<6, V>(x, step, walk, halves, out, resume),
            7 => channels::<7, V>(x, step, walk, halves, out, resume),
            _ => channels::<8, V>(x, step, walk, halves, out, resume),
        }
    }
}

/// `R` positions against `V` panels: each panel's 16 weights at step `kk` are two 8-value runs
/// of the packed weight blocks, joined in one register; each position's value is broadcast.
#[target_feature(enable = "avx512f")]
unsafe fn channels<const R: usize, const V: usize>(
    x: *const f32,
    step: usize,
    walk: Walk,
    halves: [[*const f32; 2]; V],
    out: *mut f32,
    resume: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); R]; V];
    if resume {
        for (v, acc) in acc.iter_mut().enumerate() {
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: v < V and r < rows, so out[(v · R + r) · NR..][..NR] is readable.
                *acc = unsafe { _mm512_loadu_ps(out.add((v * R + r) * NR)) };
            }
        }
    }
    macro_rules! step {
        ($at:expr, $kk:expr) => {{
            let (at, kk) = ($at, $kk);
            let w = halves.map(|[lo, hi]| {
                // SAFETY: kk < walk.len(), so 8 values from 8 · kk lie in each half.
                let (lo, hi) = unsafe { (_mm256_loadu_ps(lo.add(8 * kk)), _mm256_loadu_ps(hi.add(8 * kk))) };
                _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                    _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                    _mm256_castps_pd(hi),
                ))
            });
            for r in 0..R {
                // SAFETY: `at` is one of the walk's offsets and r < rows (contract).
                let xv = _mm512_set1_ps(unsafe { *x.add(at + r * step) });
                for (acc, w) in acc.iter_mut().zip(w) {
                    acc[r] = _mm512_fmadd_ps(xv, w, acc[r]);
                }
            }
        }};
    }
    for_each_step!(walk, step, rolled);
    for (v, acc) in acc.iter().enumerate() {
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { _mm512_storeu_ps(out.add((v * R + r) * NR), *acc) };
        }
    }
}
