//! The transposed tile of the channel form (`conv::channels`): 16 output channels in the lanes,
//! each input value broadcast. AVX-512 and NEON; other kernels have no channel form.

use super::{max_rows, Walk};
use crate::{Kernel, NR};

#[cfg(target_arch = "aarch64")]
use super::neon;
#[cfg(target_arch = "x86_64")]
use super::x86;

/// One panel of 16 output channels at one reduction pass: the packed weight blocks it is made
/// of (`NR / max_rows` of them: two blocks of 8 on AVX-512, four of 4 on NEON; the rest empty),
/// each `max_rows` values per reduction step.
pub(crate) type Panel<'a> = [&'a [f32]; 4];

/// The most positions one [`channel_tile`] call computes, or 0 where `kernel` has no channel
/// form.
pub(crate) fn channel_rows(kernel: Kernel) -> usize {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => 8,
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => 4,
        _ => 0,
    }
}

/// The most panels one [`channel_tile`] call computes for `rows` positions: 16 accumulator
/// registers at most (AVX-512: 16 lanes each, with the weights and broadcasts 24 of 32
/// registers; NEON: four per panel and position, one panel).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn channel_panels(kernel: Kernel, rows: usize) -> usize {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if rows <= 4 => 4,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => 2,
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => 1,
        _ => 0,
    }
}

/// `out[(v · rows + r) · NR + j] = Σ_kk x(kk, r) · w_v(kk, j)` for `v < panels.len()`,
/// `r < rows`, `j < NR`, where `x(kk, r)` is `x` at `walk`'s `kk`-th offset plus `r · step` and
/// `w_v(kk, j)` is value `j % b` of step `kk` of block `j / b` of panel `v` (`b` =
/// `max_rows(kernel)`). The broadcast operand is the input (`rows` positions of a padded row,
/// `step` apart) and the streamed one the weights, so an image narrower than [`NR`] wastes no
/// lanes. Each output is summed as in `tile` (+0 or `out`'s value with `resume`, one fused
/// multiply-add per `kk`, ascending): the same bytes.
///
/// Panics if `kernel` has no channel form or is not supported here, a slice is too short for
/// that, `rows` is 0 or above [`channel_rows`], or there are more panels than
/// [`channel_panels`] allows.
pub(crate) fn channel_tile(
    kernel: Kernel,
    x: &[f32],
    (rows, step): (usize, usize),
    walk: Walk,
    panels: &[Panel<'_>],
    out: &mut [f32],
    resume: bool,
) {
    let (k, block) = (walk.len(), max_rows(kernel));
    assert!(channel_rows(kernel) > 0 && kernel.is_supported(), "no channel tile on {}", kernel.name());
    assert!((1..=channel_rows(kernel)).contains(&rows), "channel tile of {rows} positions");
    assert!((1..=channel_panels(kernel, rows)).contains(&panels.len()), "channel tile of {} panels", panels.len());
    if k > 0 {
        let last: usize = walk.counts.iter().zip(walk.strides).map(|(&c, s)| (c - 1) * s).sum();
        assert!(last + (rows - 1) * step < x.len(), "channel tile reads past its input");
    }
    let parts = NR / block;
    assert!(
        panels.iter().all(|p| p[..parts].iter().all(|w| w.len() >= block * k)),
        "channel tile reads past its weights"
    );
    assert!(out.len() >= panels.len() * rows * NR, "output too short");
    let (x, out) = (x.as_ptr(), out.as_mut_ptr());
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            let ptrs = |v: usize| [panels[v][0].as_ptr(), panels[v][1].as_ptr()];
            // SAFETY: AVX-512 F is present (asserted supported); the asserts above are the
            // bounds `channels_avx512` reads and writes within, and the panel count suits `rows`.
            unsafe {
                match panels.len() {
                    1 => x86::channels_avx512::<1>(x, (rows, step), walk, [ptrs(0)], out, resume),
                    2 => x86::channels_avx512::<2>(x, (rows, step), walk, [ptrs(0), ptrs(1)], out, resume),
                    3 => x86::channels_avx512::<3>(x, (rows, step), walk, [ptrs(0), ptrs(1), ptrs(2)], out, resume),
                    _ => x86::channels_avx512::<4>(x, (rows, step), walk, [0, 1, 2, 3].map(ptrs), out, resume),
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => {
            let parts = panels[0].map(<[f32]>::as_ptr);
            // SAFETY: NEON is part of every aarch64 CPU; the asserts above are the bounds
            // `neon::channels` reads and writes within (one panel of four blocks).
            unsafe { neon::channels(x, (rows, step), walk, parts, out, resume) }
        }
        _ => unreachable!("asserted above: {} has a channel form", kernel.name()),
    }
}
