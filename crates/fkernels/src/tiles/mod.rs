//! The micro-kernels: the sums of up to [`max_rows`] rows of activations against one packed
//! panel of [`NR`] weight columns. Each output element is one accumulator lane: +0, then one
//! fused multiply-add per `k` in ascending order (see the crate docs), on every path.

/// Runs `$step!(at, kk)` for every offset `at` of `$walk` and its step index `kk`, in order, a
/// 3-wide innermost row (a 3x3 window's row) unrolled: the loop's own counting was a tenth of
/// the AVX2 kernel's instructions. A macro so that each kernel's body is expanded inside its own
/// `target_feature` function (closures do not inherit those features).
macro_rules! for_each_step {
    // Not unrolled: the AVX-512 kernels, compute-bound, ran 3% slower on the default model with
    // the unrolled rows (more code, the same work).
    ($walk:expr, $step:ident, rolled) => {{
        let walk: Walk = $walk;
        let mut kk = 0;
        for i in 0..walk.counts[0] {
            for j in 0..walk.counts[1] {
                let start = i * walk.strides[0] + j * walk.strides[1];
                for l in 0..walk.counts[2] {
                    $step!(start + l * walk.strides[2], kk);
                    kk += 1;
                }
            }
        }
    }};
    ($walk:expr, $step:ident) => {{
        let walk: Walk = $walk;
        let mut kk = 0;
        for i in 0..walk.counts[0] {
            for j in 0..walk.counts[1] {
                let start = i * walk.strides[0] + j * walk.strides[1];
                if walk.counts[2] == 3 {
                    let s = walk.strides[2];
                    $step!(start, kk);
                    $step!(start + s, kk + 1);
                    $step!(start + 2 * s, kk + 2);
                    kk += 3;
                    continue;
                }
                for l in 0..walk.counts[2] {
                    $step!(start + l * walk.strides[2], kk);
                    kk += 1;
                }
            }
        }
    }};
}

mod channel;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::{Kernel, NR};

pub(crate) use channel::{channel_panels, channel_rows, channel_tile, Panel};

/// The most rows one call of `kernel` computes: as many accumulators as keep the FMA units busy
/// without spilling registers (AVX-512: 8 rows of one vector; AVX2: 4 rows of two; NEON: 4 rows
/// of four).
pub(crate) fn max_rows(kernel: Kernel) -> usize {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => 8,
        // 6 x 2 vectors of accumulators, a broadcast and two weight vectors: 15 of the 16
        // registers.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => 6,
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

/// Where the streamed operand's rows lie: row `kk` of a panel is `NR` values from offset
/// `i * strides[0] + j * strides[1] + l * strides[2]`, for `(i, j, l)` counted up to `counts` in
/// row-major order (`kk` is that order's index). Packed panels are `[1, 1, k]` with stride
/// `NR`; a convolution window read in place is (channels, window rows, window columns) with
/// the padded image's plane, row and 1 as strides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walk {
    pub counts: [usize; 3],
    pub strides: [usize; 3],
}

impl Walk {
    /// `k` rows of a packed panel, `[k][NR]`.
    pub(crate) fn packed(k: usize) -> Walk {
        Walk { counts: [1, 1, k], strides: [0, 0, NR] }
    }

    /// The reduction length.
    pub(crate) fn len(&self) -> usize {
        self.counts.iter().product()
    }

    /// Every row's offset, in the order the kernels read them.
    pub(crate) fn offsets(self) -> impl Iterator<Item = usize> {
        let [c0, c1, c2] = self.counts;
        let [s0, s1, s2] = self.strides;
        (0..c0).flat_map(move |i| (0..c1).flat_map(move |j| (0..c2).map(move |l| i * s0 + j * s1 + l * s2)))
    }

    /// Panics unless every value the kernels read lies inside `data`.
    fn check(&self, data: &[f32]) {
        if self.len() > 0 {
            let last: usize = self.counts.iter().zip(self.strides).map(|(&c, s)| (c - 1) * s).sum();
            assert!(last + NR <= data.len(), "panel reads past its data");
        }
    }
}

/// `out[r * NR + j] = Σ_{kk < k} a[a_step.at(r, kk)] · panel(kk, j)` for `r < rows`, `j < NR`,
/// with row `kk` of the panel where `walk` puts it and `k = walk.len()`.
///
/// Panics if a slice is too short for that, or `rows` is 0 or above [`max_rows`]`(kernel)`.
/// With `resume`, the sums continue from the values in `out` (the same order as one longer
/// call: a reduction split into consecutive ranges of `k` gives the same bytes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile(
    kernel: Kernel,
    a: &[f32],
    a_step: Step,
    rows: usize,
    walk: Walk,
    panel: &[f32],
    out: &mut [f32],
    resume: bool,
) {
    check(kernel, a, a_step, rows, walk);
    walk.check(panel);
    assert!(out.len() >= rows * NR, "output too short");
    match kernel {
        Kernel::Portable => portable::tile(a, a_step, rows, walk, panel, out, resume),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel was detected or checked with `is_supported` before it was stored
        // (`MatMul::new`, `Conv2d::new`), and the checks above are the bounds
        // `x86::tiles_avx512` reads and writes within.
        Kernel::Avx512 => unsafe {
            x86::tiles_avx512::<1>(a.as_ptr(), a_step, rows, walk, [panel.as_ptr()], [out.as_mut_ptr()], resume)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for AVX-512 (AVX2 and FMA present; the same bounds).
        Kernel::Avx2 => unsafe {
            x86::tile_avx2(a.as_ptr(), a_step, rows, walk, panel.as_ptr(), out.as_mut_ptr(), resume)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU; the checks above are the bounds
        // `neon::tile` reads and writes within.
        Kernel::Neon => unsafe { neon::tile(a.as_ptr(), a_step, rows, walk, panel.as_ptr(), out.as_mut_ptr(), resume) },
    }
}

/// `T` tiles against the same rows of `a` (pixel tiles of a convolution, read with the same
/// walk from each of `panels`), each with the bytes [`tile`] gives; the AVX-512 kernel, with
/// registers to spare, computes up to three in one pass over `a` (each broadcast feeds `T`
/// FMAs), the others one at a time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_group<const T: usize>(
    kernel: Kernel,
    a: &[f32],
    a_step: Step,
    rows: usize,
    walk: Walk,
    panels: [&[f32]; T],
    outs: [&mut [f32]; T],
    resume: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512 && T <= 3 {
        check(kernel, a, a_step, rows, walk);
        panels.iter().for_each(|p| walk.check(p));
        assert!(outs.iter().all(|o| o.len() >= rows * NR), "output too short");
        // SAFETY: AVX-512 F was checked when the kernel was stored; the checks above are the
        // bounds `tiles_avx512` reads and writes within, and T <= 3 keeps its 8 · T
        // accumulators in registers.
        unsafe {
            x86::tiles_avx512::<T>(
                a.as_ptr(),
                a_step,
                rows,
                walk,
                panels.map(<[f32]>::as_ptr),
                outs.map(<[f32]>::as_mut_ptr),
                resume,
            )
        };
        return;
    }
    for (panel, out) in panels.into_iter().zip(outs) {
        tile(kernel, a, a_step, rows, walk, panel, out, resume);
    }
}

/// One to three tiles against the same rows of `a`: tile `t` reads `panel(t)` and sums into
/// the `t`-th of the equal parts of `sums` (`sums.len() / tile_len` tiles), through
/// [`tile_group`] (or [`tile`] for one), each with the bytes [`tile`] gives.
#[allow(clippy::too_many_arguments)]
pub(crate) fn up_to_three_tiles<'p>(
    kernel: Kernel,
    a: &[f32],
    a_step: Step,
    rows: usize,
    walk: Walk,
    panel: impl Fn(usize) -> &'p [f32],
    sums: &mut [f32],
    tile_len: usize,
    resume: bool,
) {
    match sums.len() / tile_len {
        1 => tile(kernel, a, a_step, rows, walk, panel(0), sums, resume),
        2 => {
            let (s0, s1) = sums.split_at_mut(tile_len);
            tile_group(kernel, a, a_step, rows, walk, [panel(0), panel(1)], [s0, s1], resume);
        }
        3 => {
            let (s0, s12) = sums.split_at_mut(tile_len);
            let (s1, s2) = s12.split_at_mut(tile_len);
            tile_group(kernel, a, a_step, rows, walk, [panel(0), panel(1), panel(2)], [s0, s1, s2], resume);
        }
        n => panic!("{n} tiles in a group of one to three"),
    }
}

/// Panics unless `rows` suits `kernel` and `a` holds every value the kernels read.
fn check(kernel: Kernel, a: &[f32], a_step: Step, rows: usize, walk: Walk) {
    let k = walk.len();
    assert!((1..=max_rows(kernel)).contains(&rows), "tile of {rows} rows");
    assert!(k == 0 || a.len() > a_step.at(rows - 1, k - 1), "broadcast operand too short");
}
