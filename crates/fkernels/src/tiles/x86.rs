//! x86_64 micro-kernels: one accumulator lane per output element, `vfmadd231ps` per term with
//! the activation broadcast from memory. Const generics keep each tile's accumulators in
//! registers; `tile_*` picks the instance for the row count.

use std::arch::x86_64::*;

use super::Step;
use crate::NR;

/// See `super::tile` for what it computes.
///
/// # Safety
/// The CPU must have AVX-512 F; `a` must be readable for rows `r < rows` at `a_step.at(r, kk)`,
/// `kk < k`, `panel` for `k * NR` values and `out` readable and writable for `rows * NR`; 1 <= rows <= 8.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_avx512(
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
            1 => avx512::<1>(k, a, a_step, panel, out, resume),
            2 => avx512::<2>(k, a, a_step, panel, out, resume),
            3 => avx512::<3>(k, a, a_step, panel, out, resume),
            4 => avx512::<4>(k, a, a_step, panel, out, resume),
            5 => avx512::<5>(k, a, a_step, panel, out, resume),
            6 => avx512::<6>(k, a, a_step, panel, out, resume),
            7 => avx512::<7>(k, a, a_step, panel, out, resume),
            _ => avx512::<8>(k, a, a_step, panel, out, resume),
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512<const R: usize>(
    k: usize,
    a: *const f32,
    a_step: Step,
    panel: *const f32,
    out: *mut f32,
    resume: bool,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    if resume {
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < rows, so out[r * NR..][..NR] is readable (contract).
            *acc = unsafe { _mm512_loadu_ps(out.add(r * NR)) };
        }
    }
    for kk in 0..k {
        // SAFETY: kk < k, so the panel's row kk (NR values) is inside `panel` (contract).
        let b = unsafe { _mm512_loadu_ps(panel.add(kk * NR)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R = rows and kk < k (contract).
            let av = unsafe { *a.add(a_step.at(r, kk)) };
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(av), b, *acc);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: r < rows, so out[r * NR..][..NR] is writable (contract).
        unsafe { _mm512_storeu_ps(out.add(r * NR), *acc) };
    }
}

/// See `super::tile` for what it computes.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the bounds of [`tile_avx512`] with 1 <= rows <= 4.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(
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
            1 => avx2::<1>(k, a, a_step, panel, out, resume),
            2 => avx2::<2>(k, a, a_step, panel, out, resume),
            3 => avx2::<3>(k, a, a_step, panel, out, resume),
            _ => avx2::<4>(k, a, a_step, panel, out, resume),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(k: usize, a: *const f32, a_step: Step, panel: *const f32, out: *mut f32, resume: bool) {
    let mut lo = [_mm256_setzero_ps(); R];
    let mut hi = [_mm256_setzero_ps(); R];
    if resume {
        for r in 0..R {
            // SAFETY: r < rows, so out[r * NR..][..16] is readable (contract).
            unsafe { (lo[r], hi[r]) = (_mm256_loadu_ps(out.add(r * NR)), _mm256_loadu_ps(out.add(r * NR + 8))) };
        }
    }
    for kk in 0..k {
        // SAFETY: kk < k, so the panel's row kk (NR = 16 values) is inside `panel` (contract).
        let (b0, b1) = unsafe { (_mm256_loadu_ps(panel.add(kk * NR)), _mm256_loadu_ps(panel.add(kk * NR + 8))) };
        for r in 0..R {
            // SAFETY: r < R = rows and kk < k (contract).
            let av = _mm256_set1_ps(unsafe { *a.add(a_step.at(r, kk)) });
            lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
        }
    }
    for r in 0..R {
        // SAFETY: r < rows, so out[r * NR..][..16] is writable (contract).
        unsafe {
            _mm256_storeu_ps(out.add(r * NR), lo[r]);
            _mm256_storeu_ps(out.add(r * NR + 8), hi[r]);
        }
    }
}

/// Two tiles against the same rows of `a`: `out0` from `panel0`, `out1` from `panel1`, each
/// exactly as [`tile_avx512`] computes it (16 accumulators: each broadcast feeds two FMAs).
///
/// # Safety
/// The contract of [`tile_avx512`] for each panel and output.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_pair_avx512(
    k: usize,
    a: *const f32,
    a_step: Step,
    rows: usize,
    panels: [*const f32; 2],
    outs: [*mut f32; 2],
    resume: bool,
) {
    // SAFETY: each arm forwards this function's contract with R = rows.
    unsafe {
        match rows {
            1 => pair::<1>(k, a, a_step, panels, outs, resume),
            2 => pair::<2>(k, a, a_step, panels, outs, resume),
            3 => pair::<3>(k, a, a_step, panels, outs, resume),
            4 => pair::<4>(k, a, a_step, panels, outs, resume),
            5 => pair::<5>(k, a, a_step, panels, outs, resume),
            6 => pair::<6>(k, a, a_step, panels, outs, resume),
            7 => pair::<7>(k, a, a_step, panels, outs, resume),
            _ => pair::<8>(k, a, a_step, panels, outs, resume),
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn pair<const R: usize>(
    k: usize,
    a: *const f32,
    a_step: Step,
    [p0, p1]: [*const f32; 2],
    [o0, o1]: [*mut f32; 2],
    resume: bool,
) {
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    if resume {
        for r in 0..R {
            // SAFETY: r < rows, so both outputs' row r is readable (contract).
            unsafe { (acc0[r], acc1[r]) = (_mm512_loadu_ps(o0.add(r * NR)), _mm512_loadu_ps(o1.add(r * NR))) };
        }
    }
    for kk in 0..k {
        // SAFETY: kk < k, so row kk of each panel is inside it (contract).
        let (b0, b1) = unsafe { (_mm512_loadu_ps(p0.add(kk * NR)), _mm512_loadu_ps(p1.add(kk * NR))) };
        for r in 0..R {
            // SAFETY: r < R = rows and kk < k (contract).
            let av = _mm512_set1_ps(unsafe { *a.add(a_step.at(r, kk)) });
            acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
        }
    }
    for r in 0..R {
        // SAFETY: r < rows, so both outputs' row r is writable (contract).
        unsafe {
            _mm512_storeu_ps(o0.add(r * NR), acc0[r]);
            _mm512_storeu_ps(o1.add(r * NR), acc1[r]);
        }
    }
}
