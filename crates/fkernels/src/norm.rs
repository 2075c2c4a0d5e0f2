//! GroupNorm's arithmetic in one order on every CPU, optionally followed by SiLU: compiled once
//! per instruction set so its loops vectorise to the kernel's width, with the same bytes on
//! every kernel (the compiler only vectorises; it never fuses or reorders float operations).

use crate::math::{map, silu_in_place, silu_lanes};
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
/// [`lane_sums`] divided by the count), the variance the same way over the squared differences,
/// then `(x - mean) · (1 / sqrt(var + eps)) · gamma + beta`, each a separate rounding; then SiLU
/// if `silu` (each value's operations are SiLU's own, after the affine).
pub fn group_norm_in_place(kernel: Kernel, values: &mut [f32], group: Group<'_>, silu: bool) {
    group_norms_in_place(kernel, values, &[group], silu);
}

/// [`group_norm_in_place`] of consecutive groups of `values`, `groups[i]` describing the `i`-th
/// (each `gamma.len() · plane` values). Each group gets the bytes it gets alone; groups of one
/// length have their sums taken [`STATS_GROUPS`] at a time.
///
/// Panics if `values` is not the groups' values.
pub fn group_norms_in_place(kernel: Kernel, values: &mut [f32], groups: &[Group<'_>], silu: bool) {
    group_norms_of(kernel, None, values, groups, silu);
}

/// [`group_norms_in_place`] of `src` into `dst` (a shared input need not be copied first), with
/// the same bytes.
///
/// Panics if `src` or `dst` is not the groups' values.
pub fn group_norms(kernel: Kernel, src: &[f32], dst: &mut [f32], groups: &[Group<'_>], silu: bool) {
    assert_eq!(src.len(), dst.len(), "source and destination lengths");
    group_norms_of(kernel, Some(src), dst, groups, silu);
}

/// The groups of `src` (of `dst` itself where `None`) normalised into `dst`.
fn group_norms_of(kernel: Kernel, src: Option<&[f32]>, dst: &mut [f32], groups: &[Group<'_>], silu: bool) {
    assert_eq!(dst.len(), groups.iter().map(|g| g.gamma.len() * g.plane).sum::<usize>(), "group lengths");
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn avx512(src: Option<&[f32]>, dst: &mut [f32], groups: &[Group<'_>], silu: bool) {
        normalise::<64>(src, dst, groups, silu)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(src: Option<&[f32]>, dst: &mut [f32], groups: &[Group<'_>], silu: bool) {
        normalise::<32>(src, dst, groups, silu)
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a stored `Kernel::Avx512` was detected or checked on this CPU.
        Kernel::Avx512 => unsafe { avx512(src, dst, groups, silu) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a stored `Kernel::Avx2` was detected or checked on this CPU.
        Kernel::Avx2 => unsafe { avx2(src, dst, groups, silu) },
        // One NEON vector's lanes elsewhere, as the element-wise functions take (more spill).
        _ => normalise::<4>(src, dst, groups, silu),
    }
}

/// Groups whose sums one pass takes together: each group's sum is 16 chains of additions (its
/// order is part of the bytes), one vector's worth, which waits on each addition's latency;
/// four groups' chains side by side keep the adder busy (128 channels at 32x32: 66 -> 45-49 us).
pub const STATS_GROUPS: usize = 4;

/// [`group_norms_of`] with `N` lanes at a time: the statistics of up to [`STATS_GROUPS`]
/// groups together, then the affine and SiLU of each chunk of a channel in one pass where the
/// lanes are wide (a separate SiLU pass read and wrote the group again; see [`affine`] for
/// one NEON vector's lanes).
#[inline(always)]
fn normalise<const N: usize>(src: Option<&[f32]>, dst: &mut [f32], groups: &[Group<'_>], silu: bool) {
    let mut at = 0;
    for batch in groups.chunks(STATS_GROUPS) {
        let lens: [usize; STATS_GROUPS] = std::array::from_fn(|i| batch.get(i).map_or(0, |g| g.gamma.len() * g.plane));
        let total: usize = lens.iter().sum();
        let (input, out) = (src.map(|s| &s[at..at + total]), &mut dst[at..at + total]);
        at += total;
        let mut stats = [(0f32, 0f32); STATS_GROUPS];
        let data = input.unwrap_or(out);
        if batch.len() == STATS_GROUPS && lens.iter().all(|&l| l == lens[0]) {
            let len = lens[0];
            stats = statistics::<STATS_GROUPS>(std::array::from_fn(|i| &data[i * len..(i + 1) * len]), batch);
        } else {
            let mut first = 0;
            for ((group, &len), stats) in batch.iter().zip(&lens).zip(&mut stats) {
                [*stats] = statistics::<1>([&data[first..first + len]], std::slice::from_ref(group));
                first += len;
            }
        }
        let mut first = 0;
        for ((group, &len), &stats) in batch.iter().zip(&lens).zip(&stats) {
            let input = input.map(|s| &s[first..first + len]);
            affine::<N>(input, &mut out[first..first + len], group, stats, silu);
            first += len;
        }
    }
}

/// The mean and `1 / sqrt(var + eps)` of each of `G` groups of equal length.
#[inline(always)]
fn statistics<const G: usize>(values: [&[f32]; G], groups: &[Group<'_>]) -> [(f32, f32); G] {
    let count = values[0].len() as f32;
    let means = lane_sums(values, |_, v| v).map(|sum| sum / count);
    let vars = lane_sums(values, |g, v| (v - means[g]) * (v - means[g])).map(|sum| sum / count);
    std::array::from_fn(|g| (means[g], 1.0 / (vars[g] + groups[g].eps).sqrt()))
}

/// `(x - mean) · inv_std · gamma + beta` of every value of one group (of `src`, or of `dst`
/// itself where `None`) into `dst`, then SiLU if `silu`.
#[inline(always)]
fn affine<const N: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    group: &Group<'_>,
    (mean, inv_std): (f32, f32),
    silu: bool,
) {
    if N <= 4 && silu {
        // One NEON vector at a time (and the portable kernel): SiLU as its own pass over the
        // group. Fused per four lanes it took a Cortex-A53 1.6% more instructions per
        // evaluation of the default model (firmware-sim).
        affine::<N>(src, dst, group, (mean, inv_std), false);
        return silu_in_place(Kernel::Portable, dst);
    }
    let channels = dst.chunks_exact_mut(group.plane).zip(group.gamma).zip(group.beta).enumerate();
    for (c, ((channel, &gamma), &beta)) in channels {
        let input = src.map(|s| &s[c * group.plane..(c + 1) * group.plane]);
        let affine = |v: f32| (v - mean) * inv_std * gamma + beta;
        let whole = channel.len() / N * N;
        let mut chunks = channel.chunks_exact_mut(N);
        for (k, chunk) in chunks.by_ref().enumerate() {
            let lanes: [f32; N] = input.map_or(&*chunk, |s| &s[k * N..(k + 1) * N]).try_into().expect("N values");
            let normalised = map(lanes, affine);
            chunk.copy_from_slice(&if silu { silu_lanes(normalised) } else { normalised });
        }
        for (i, v) in chunks.into_remainder().iter_mut().enumerate() {
            let x = input.map_or(*v, |s| s[whole + i]);
            *v = if silu { silu_lanes([affine(x)])[0] } else { affine(x) };
        }
    }
}

/// The sum of `f(g, v)` over each `values[g]` (all of one length) in a fixed order that
/// vectorises: value `i` goes to lane `i % 16`, then the lanes are added pairwise (0+8, 1+9,
/// ..., then 0+4, ...). The order depends only on the length.
#[inline(always)]
fn lane_sums<const G: usize>(values: [&[f32]; G], f: impl Fn(usize, f32) -> f32) -> [f32; G] {
    let len = values[0].len();
    let whole = len / 16 * 16;
    let mut lanes = [[0f32; 16]; G];
    for i in (0..whole).step_by(16) {
        for (g, lanes) in lanes.iter_mut().enumerate() {
            let chunk: &[f32; 16] = values[g][i..i + 16].try_into().expect("16 values");
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += f(g, v);
            }
        }
    }
    for (g, lanes) in lanes.iter_mut().enumerate() {
        for (lane, &v) in lanes.iter_mut().zip(&values[g][whole..]) {
            *lane += f(g, v);
        }
    }
    lanes.map(|mut lanes| {
        let mut width = 8;
        while width > 0 {
            for i in 0..width {
                lanes[i] += lanes[i + width];
            }
            width /= 2;
        }
        lanes[0]
    })
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

    /// Several groups at once, in place and out of place, give each group's bytes alone: nine
    /// groups of one length (two batches of four taken together, one left over), and groups of
    /// two lengths (never together), with and without SiLU, on every kernel.
    #[test]
    fn groups_together_give_each_groups_bytes() {
        let (gamma, beta) = (values(4, 31), values(4, 32));
        let group = |channels: usize, plane: usize| Group {
            plane,
            eps: 1e-5,
            gamma: &gamma[..channels],
            beta: &beta[..channels],
        };
        let same_length = vec![group(3, 21); 9];
        let mixed = vec![group(2, 16), group(4, 9), group(2, 16), group(1, 70), group(3, 5)];
        for groups in [same_length, mixed] {
            let x = values(groups.iter().map(|g| g.gamma.len() * g.plane).sum(), 33);
            for silu in [false, true] {
                let mut alone = x.clone();
                let mut rest = alone.as_mut_slice();
                for g in &groups {
                    let (values, next) = rest.split_at_mut(g.gamma.len() * g.plane);
                    group_norm_in_place(Kernel::Portable, values, *g, silu);
                    rest = next;
                }
                for kernel in Kernel::supported() {
                    let mut in_place = x.clone();
                    group_norms_in_place(kernel, &mut in_place, &groups, silu);
                    let mut out = vec![0f32; x.len()];
                    group_norms(kernel, &x, &mut out, &groups, silu);
                    assert_eq!(bits(&in_place), bits(&alone), "{} silu {silu} in place", kernel.name());
                    assert_eq!(bits(&out), bits(&alone), "{} silu {silu} into", kernel.name());
                }
            }
        }
    }
}
