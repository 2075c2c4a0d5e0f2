//! The micro-kernels: the sums of up to [`max_rows`] rows of activations against one packed
//! panel of [`NR`] weight columns. Each output element is one accumulator lane: +0, then one
//! fused multiply-add per `k` in ascending order (see the crate docs), on every path.

#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::{Kernel, NR};

/// The most rows one call of `kernel` computes: as many accumulators as keep the FMA units busy
/// without spilling registers (AVX-512: 8 rows of one vector; AVX2: 4 rows of two; NEON: 4 rows
/// of four).
pub(crate) fn max_rows(kernel: Kernel) -> usize {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => 8,
        _ => 4,
    }
}

/// Where value `(r, kk)` of the broadcast operand lies: `r * row + kk * k`. Activations of a
/// matrix product are rows (`row = K, k = 1`); packed convolution weights are blocks of rows
/// side by side (`row = 1, k = rows per block`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub row: usize,
    pub k: usize,
}

impl Step {
    #[inline(always)]
    pub(crate) fn at(self, r: usize, kk: usize) -> usize {
        r * self.row + kk * self.k
    }
}

/// `out[r * NR + j] = Σ_{kk < k} a[a_step.at(r, kk)] · panel[kk * NR + j]` for `r < rows`,
/// `j < NR`.
///
/// Panics if a slice is too short for that, or `rows` is 0 or above [`max_rows`]`(kernel)`.
/// With `resume`, the sums continue from the values in `out` (the same order as one longer
/// call: a reduction split into consecutive ranges of `k` gives the same bytes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile(
    kernel: Kernel,
    k: usize,
    a: &[f32],
    a_step: Step,
    rows: usize,
    panel: &[f32],
    out: &mut [f32],
    resume: bool,
) {
    assert!((1..=max_rows(kernel)).contains(&rows), "tile of {rows} rows");
    assert!(k == 0 || a.len() > a_step.at(rows - 1, k - 1), "broadcast operand too short");
    assert!(panel.len() >= k * NR && out.len() >= rows * NR, "panel or output too short");
    match kernel {
        Kernel::Portable => portable::tile(k, a, a_step, rows, panel, out, resume),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel was detected or checked with `is_supported` before it was stored
        // (`MatMul::new`), and the asserts above are the bounds `x86::tile_avx512` reads and
        // writes within.
        Kernel::Avx512 => unsafe {
            x86::tile_avx512(k, a.as_ptr(), a_step, rows, panel.as_ptr(), out.as_mut_ptr(), resume)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for AVX-512 (AVX2 and FMA present; the same bounds).
        Kernel::Avx2 => unsafe {
            x86::tile_avx2(k, a.as_ptr(), a_step, rows, panel.as_ptr(), out.as_mut_ptr(), resume)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU; the asserts above are the bounds
        // `neon::tile` reads and writes within.
        Kernel::Neon => unsafe { neon::tile(k, a.as_ptr(), a_step, rows, panel.as_ptr(), out.as_mut_ptr(), resume) },
    }
}

/// Two tiles against the same rows of `a` (two pixel tiles of a convolution), each with the
/// bytes [`tile`] gives; kernels with registers to spare compute both in one pass over `a`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_pair(
    kernel: Kernel,
    k: usize,
    a: &[f32],
    a_step: Step,
    rows: usize,
    panels: [&[f32]; 2],
    outs: [&mut [f32]; 2],
    resume: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512 {
        assert!((1..=8).contains(&rows), "tile of {rows} rows");
        assert!(k == 0 || a.len() > a_step.at(rows - 1, k - 1), "broadcast operand too short");
        assert!(panels.iter().all(|p| p.len() >= k * NR), "panel too short");
        assert!(outs.iter().all(|o| o.len() >= rows * NR), "output too short");
        let [o0, o1] = outs;
        // SAFETY: AVX-512 F was checked when the kernel was stored; the asserts above are the
        // bounds `tile_pair_avx512` reads and writes within.
        unsafe {
            x86::tile_pair_avx512(
                k,
                a.as_ptr(),
                a_step,
                rows,
                [panels[0].as_ptr(), panels[1].as_ptr()],
                [o0.as_mut_ptr(), o1.as_mut_ptr()],
                resume,
            )
        };
        return;
    }
    let [o0, o1] = outs;
    tile(kernel, k, a, a_step, rows, panels[0], o0, resume);
    tile(kernel, k, a, a_step, rows, panels[1], o1, resume);
}
