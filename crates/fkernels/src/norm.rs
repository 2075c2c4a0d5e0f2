//! GroupNorm's arithmetic in one order on every CPU, optionally followed by SiLU: compiled once
//! per instruction set so its loops vectorise to the kernel's width, with the same bytes on
//! every kernel (the compiler only vectorises; it never fuses or reorders float operations).

use crate::math::silu_in_place;
use crate::Kernel;

/// One normalisation group: `C/G` channels of `plane` values each, with their `gamma` and
/// `beta`.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    pub plane: usize,
    pub eps: f32,
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

/// Normalises `values` (one group, `gamma.len() · plane` values) in place: the mean (a
/// [`lane_sum`] divided by the count), the variance the same way over the squared differences,
/// then `(x - mean) · (1 / sqrt(var + eps)) · gamma + beta`, each a separate rounding; then SiLU
/// if `silu`.
pub fn group_norm_in_place(kernel: Kernel, values: &mut [f32], group: Group<'_>, silu: bool) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn avx512(values: &mut [f32], group: Group<'_>) {
        normalise(values, group)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(values: &mut [f32], group: Group<'_>) {
        normalise(values, group)
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a stored `Kernel::Avx512` was detected or checked on this CPU.
        Kernel::Avx512 => unsafe { avx512(values, group) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a stored `Kernel::Avx2` was detected or checked on this CPU.
        Kernel::Avx2 => unsafe { avx2(values, group) },
        _ => normalise(values, group),
    }
    if silu {
        silu_in_place(kernel, values);
    }
}

#[inline(always)]
fn normalise(values: &mut [f32], Group { plane, eps, gamma, beta }: Group<'_>) {
    let count = values.len() as f32;
    let mean = lane_sum(values, |v| v) / count;
    let var = lane_sum(values, |v| (v - mean) * (v - mean)) / count;
    let inv_std = 1.0 / (var + eps).sqrt();
    for ((channel, &gamma), &beta) in values.chunks_exact_mut(plane).zip(gamma).zip(beta) {
        for v in channel {
            *v = (*v - mean) * inv_std * gamma + beta;
        }
    }
}

/// The sum of `f(v)` over `values` in a fixed order that vectorises: value `i` goes to lane
/// `i % 16`, then the lanes are added pairwise (0+8, 1+9, ..., then 0+4, ...). The order
/// depends only on the length.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in chunks.by_ref() {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += f(v);
    }
    let mut width = 8;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{bits, values};

    /// Close to the f64 definition, and the same bytes on every kernel, with and without SiLU.
    #[test]
    fn matches_the_definition_and_every_kernel_gives_the_portable_bytes() {
        let (plane, channels) = (37, 3);
        let x = values(plane * channels, 21);
        let (gamma, beta) = (values(channels, 22), values(channels, 23));
        let group = Group { plane, eps: 1e-5, gamma: &gamma, beta: &beta };
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
        let mut portable = x.clone();
        group_norm_in_place(Kernel::Portable, &mut portable, group, false);
        for (i, &y) in portable.iter().enumerate() {
            let c = i / plane;
            let want = (x[i] as f64 - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64;
            assert!((y as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "value {i}: {y} vs {want}");
        }
        for silu in [false, true] {
            let mut expected = x.clone();
            group_norm_in_place(Kernel::Portable, &mut expected, group, silu);
            for kernel in Kernel::supported() {
                let mut got = x.clone();
                group_norm_in_place(kernel, &mut got, group, silu);
                assert_eq!(bits(&got), bits(&expected), "{} silu {silu}", kernel.name());
            }
        }
    }
}
