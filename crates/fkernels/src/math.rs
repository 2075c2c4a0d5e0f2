//! Elementwise functions with one result on every CPU: `exp` from IEEE additions,
//! multiplications and a power of two built from its bits (no FMA, no table, no platform
//! `libm`), so that the compiler vectorises the loops over slices and every target computes the
//! same bytes; sigmoid and SiLU follow from it.

use crate::Kernel;

/// `e^x` within 3 f32 epsilons of relative error (measured 2.06): `x = n·ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 polynomial for
/// `e^r`, scaled by `2^n`. Below -87.3 it returns 0 (no denormals);
/// above 88.7 it returns `e^88.7` (3.3e38, finite).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_lanes([x])[0]
}

/// [`exp`] of `N` values, each step taken over all of them before the next: a loop over a
/// slice then runs as `N / 16` interleaved vector chains, where one value's (or vector's)
/// chain of ~25 dependent operations at a time left the core waiting on their latencies. Every
/// lane's operations are those of [`exp`], in its order.
#[inline(always)]
fn exp_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n · LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = map(x, |x| x.clamp(-87.3, 88.7));
    let shifted = map(x, |x| x * LOG2_E + ROUND);
    let r = zip_map(x, shifted, |x, shifted| {
        let n = shifted - ROUND;
        (x - n * LN2_HI) - n * LN2_LO
    });
    // 1 + r(1 + r(1/2 + r(1/6 + r(1/24 + r(1/120 + r/720))))), innermost first.
    let mut p = map(r, |r| 0.008_333_6 + r * 0.001_394_4);
    for c in [0.041_666_5, 0.166_666_67, 0.5, 1.0, 1.0] {
        p = zip_map(p, r, |p, r| c + r * p);
    }
    // 2^n as two halves, each a normal float for every n in [-126, 128]. The integer n is the
    // low bits of `shifted` (a float in [2^23, 2^24), one unit per integer): read from its bits,
    // it is the same integer as `n as i32`, whose saturating conversion compiles to one scalar
    // conversion per lane.
    let scaled = zip_map(p, shifted, |p, shifted| {
        let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
        let half = n >> 1;
        let (s1, s2) = (f32::from_bits(((half + 127) as u32) << 23), f32::from_bits(((n - half + 127) as u32) << 23));
        p * s1 * s2
    });
    zip_map(scaled, x, |e, x| if x <= -87.3 { 0.0 } else { e })
}

/// `f` of every lane.
#[inline(always)]
pub(crate) fn map<const N: usize>(mut a: [f32; N], f: impl Fn(f32) -> f32) -> [f32; N] {
    for v in &mut a {
        *v = f(*v);
    }
    a
}

/// `f` of every pair of lanes.
#[inline(always)]
fn zip_map<const N: usize>(mut a: [f32; N], b: [f32; N], f: impl Fn(f32, f32) -> f32) -> [f32; N] {
    for (v, b) in a.iter_mut().zip(b) {
        *v = f(*v, b);
    }
    a
}

/// Defines `pub fn $name(kernel, values)` applying `$lanes` (a function of `[f32; N]` for any
/// `N`) to every value, compiled once per instruction set so the loops vectorise to the
/// kernel's width: on x86_64 four vectors' worth of lanes at a time (four interleaved chains),
/// elsewhere one NEON vector's (16 lanes took 2.6% more instructions per evaluation of the
/// default fp32 model under qemu cortex-a53: spilled registers), the rest one value at a time.
/// Each lane is computed alone by the same Rust code: the compiler may only vectorise it (it
/// never fuses or reorders float operations), so every kernel and every grouping gives the same
/// bytes.
macro_rules! elementwise {
    ($(#[$doc:meta])* $name:ident, $lanes:ident) => {
        $(#[$doc])*
        pub fn $name(kernel: Kernel, values: &mut [f32]) {
            #[inline(always)]
            fn each<const N: usize>(values: &mut [f32]) {
                let mut chunks = values.chunks_exact_mut(N);
                for chunk in chunks.by_ref() {
                    let lanes: &mut [f32; N] = chunk.try_into().expect("chunks of N values");
                    *lanes = $lanes(*lanes);
                }
                for v in chunks.into_remainder() {
                    *v = $lanes([*v])[0];
                }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn avx512(values: &mut [f32]) {
                each::<64>(values)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn avx2(values: &mut [f32]) {
                each::<32>(values)
            }
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a stored `Kernel::Avx512` was detected or checked on this CPU.
                Kernel::Avx512 => unsafe { avx512(values) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a stored `Kernel::Avx2` was detected or checked on this CPU.
                Kernel::Avx2 => unsafe { avx2(values) },
                _ => each::<4>(values),
            }
        }
    };
}

/// `1 / (1 + e^-x)` of each lane.
#[inline(always)]
fn sigmoid_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    map(exp_lanes(map(x, |x| -x)), |e| 1.0 / (1.0 + e))
}

/// `x / (1 + e^-x)` (SiLU, `x · sigmoid(x)`) of each lane.
#[inline(always)]
pub(crate) fn silu_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    zip_map(x, exp_lanes(map(x, |x| -x)), |x, e| x / (1.0 + e))
}

/// `tanh x = 1 - 2 / (e^2x + 1)` of each lane.
#[inline(always)]
fn tanh_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    map(exp_lanes(map(x, |x| 2.0 * x)), |e| 1.0 - 2.0 / (e + 1.0))
}

elementwise!(
    /// `1 / (1 + e^-x)` for every value.
    sigmoid_in_place,
    sigmoid_lanes
);
elementwise!(
    /// `x / (1 + e^-x)` (SiLU, `x · sigmoid(x)`) for every value.
    silu_in_place,
    silu_lanes
);
elementwise!(
    /// `e^x` for every value.
    exp_in_place,
    exp_lanes
);
elementwise!(
    /// `tanh x = 1 - 2 / (e^2x + 1)` for every value.
    tanh_in_place,
    tanh_lanes
);

/// Softmax of one row: `e^(x - max) / Σ e^(x - max)`, the sum in ascending order.
pub fn softmax_in_place(kernel: Kernel, row: &mut [f32]) {
    softmax_rows(kernel, row, row.len());
}

/// Rows whose sums one pass interleaves: each row's sum is one chain of dependent additions
/// (its order is part of the bytes), so eight rows at a time keep the adder busy where one row
/// waited on each addition's latency (256 x 256 scores: 143 us a softmax in the 35.7M net).
const SOFTMAX_ROWS: usize = 8;

/// [`softmax_in_place`] of every row of `len` values of `values` (a whole number of rows),
/// compiled once per instruction set like the element-wise functions. Every row gets the bytes
/// of [`softmax_in_place`]'s definition: its maximum (the same value in any order: `f32::max`
/// ignores NaN either way, and a maximum of ±0 changes no `e^(x - max)`), `exp` of each value
/// minus it, their sum from `+0` in ascending order, each value divided by the sum.
pub fn softmax_rows(kernel: Kernel, values: &mut [f32], len: usize) {
    #[inline(always)]
    fn rows<const N: usize>(values: &mut [f32], len: usize) {
        for group in values.chunks_mut(SOFTMAX_ROWS * len) {
            let mut sums = [0f32; SOFTMAX_ROWS];
            for row in group.chunks_exact_mut(len) {
                let max = row_max::<N>(row);
                let mut chunks = row.chunks_exact_mut(N);
                for chunk in chunks.by_ref() {
                    let lanes: &mut [f32; N] = chunk.try_into().expect("chunks of N values");
                    *lanes = exp_lanes(map(*lanes, |v| v - max));
                }
                chunks.into_remainder().iter_mut().for_each(|v| *v = exp(*v - max));
            }
            match group.len() / len {
                SOFTMAX_ROWS => sum_rows(group, len, &mut sums),
                count => {
                    for i in 0..len {
                        for (r, sum) in sums.iter_mut().enumerate().take(count) {
                            *sum += group[r * len + i];
                        }
                    }
                }
            }
            for (row, &sum) in group.chunks_exact_mut(len).zip(&sums) {
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
    }
    if len == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn avx512(values: &mut [f32], len: usize) {
        rows::<64>(values, len)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(values: &mut [f32], len: usize) {
        rows::<32>(values, len)
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a stored `Kernel::Avx512` was detected or checked on this CPU.
        Kernel::Avx512 => unsafe { avx512(values, len) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a stored `Kernel::Avx2` was detected or checked on this CPU.
        Kernel::Avx2 => unsafe { avx2(values, len) },
        _ => rows::<4>(values, len),
    }
}

/// `sums[r] += row_r[i]` for `i` ascending, for each of the [`SOFTMAX_ROWS`] rows of `len`
/// values in `group`: sixteen values of every row at a time (vector loads, one bounds check),
/// then the rows' additions interleaved.
#[inline(always)]
fn sum_rows(group: &[f32], len: usize, sums: &mut [f32; SOFTMAX_ROWS]) {
    let whole = len / 16 * 16;
    for i0 in (0..whole).step_by(16) {
        let block: [[f32; 16]; SOFTMAX_ROWS] =
            std::array::from_fn(|r| group[r * len + i0..][..16].try_into().expect("16 values"));
        for j in 0..16 {
            for (sum, values) in sums.iter_mut().zip(&block) {
                *sum += values[j];
            }
        }
    }
    for i in whole..len {
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum += group[r * len + i];
        }
    }
}

/// The largest value of `row` that is not NaN (NaN if all are), as `fold(-inf, f32::max)`
/// gives it, taken `N` lanes at a time so that it vectorises.
#[inline(always)]
fn row_max<const N: usize>(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; N];
    let mut chunks = row.chunks_exact(N);
    for chunk in chunks.by_ref() {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_three_epsilons_of_the_true_value() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs() / f32::EPSILON as f64);
            x += 0.0137;
        }
        // Relative error in units of f32::EPSILON (measured 2.06).
        assert!(worst <= 3.0, "worst relative error {worst} epsilons");
        assert_eq!((exp(0.0), exp(-100.0), exp(100.0)), (1.0, 0.0, exp(88.7)));
        assert!(exp(88.7).is_finite());
    }

    /// A fixed fingerprint of `exp`'s bits at 360,001 points over its whole range and past both
    /// ends: its bytes are part of every model's output, so any change to them shows here.
    #[test]
    fn exp_keeps_its_bytes() {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for i in 0..=360_000 {
            let x = -90.0 + i as f32 * 0.0005;
            hash = (hash ^ exp(x).to_bits() as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(hash, 0x62cf_ab1f_d4a4_7458, "exp fingerprint {hash:#018x}");
    }

    #[test]
    fn sigmoid_silu_tanh_and_softmax_match_their_definitions() {
        let xs = [-30.0f32, -4.0, -0.5, 0.0, 0.25, 3.0, 30.0];
        let close = |a: f32, b: f64| (a as f64 - b).abs() <= 4e-7 * b.abs().max(1.0);
        let (mut s, mut l, mut t) = (xs, xs, xs);
        sigmoid_in_place(Kernel::Portable, &mut s);
        silu_in_place(Kernel::Portable, &mut l);
        tanh_in_place(Kernel::Portable, &mut t);
        for (i, &x) in xs.iter().enumerate() {
            let sig = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!(close(s[i], sig) && close(l[i], x as f64 * sig) && close(t[i], (x as f64).tanh()), "at {x}");
        }
        let mut row = [1.0f32, 3.0, 2.0, -1000.0];
        softmax_in_place(Kernel::Portable, &mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6 && row[3] == 0.0 && row[1] > row[2]);
    }
}

#[cfg(test)]
mod same_bytes {
    use super::*;
    use crate::test_values::bits;

    #[test]
    fn every_kernel_gives_the_portable_bytes() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.173).collect();
        type Fill = fn(Kernel, &mut [f32]);
        type Definition = fn(f32) -> f32;
        for (name, f, definition) in [
            ("sigmoid", sigmoid_in_place as Fill, (|x| 1.0 / (1.0 + exp(-x))) as Definition),
            ("silu", silu_in_place, |x| x / (1.0 + exp(-x))),
            ("exp", exp_in_place, exp),
            ("tanh", tanh_in_place, |x| 1.0 - 2.0 / (exp(2.0 * x) + 1.0)),
        ] {
            let mut expected = xs.clone();
            f(Kernel::Portable, &mut expected);
            let scalar: Vec<f32> = xs.iter().map(|&x| definition(x)).collect();
            assert_eq!(bits(&expected), bits(&scalar), "{name}: lanes differ from one value at a time");
            for kernel in Kernel::supported() {
                let mut got = xs.clone();
                f(kernel, &mut got);
                let same = got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name} on {}", kernel.name());
            }
        }
    }
    /// Rows of several lengths (shorter and longer than a vector, not whole vectors), a group of
    /// rows that is not whole (11 rows, interleaved by 8), a row with a NaN and a row whose
    /// maximum is a zero of either sign: every kernel gives each row's one-value-at-a-time
    /// definition, NaN where it has NaN.
    #[test]
    fn softmax_rows_give_each_rows_definition() {
        fn definition(row: &mut [f32]) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = exp(*v - max));
            let sum = row.iter().fold(0.0, |s, &v| s + v);
            row.iter_mut().for_each(|v| *v /= sum);
        }
        let same =
            |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan());
        for len in [1, 7, 64, 100, 256] {
            let mut xs: Vec<f32> = (0..11 * len).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.037).collect();
            xs[len / 2] = f32::NAN;
            let zeros = &mut xs[len..2 * len];
            zeros.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { -0.0 } else { -(i as f32) });
            zeros[len - 1] = 0.0;
            let mut expected = xs.clone();
            expected.chunks_exact_mut(len).for_each(definition);
            for kernel in Kernel::supported() {
                let mut got = xs.clone();
                softmax_rows(kernel, &mut got, len);
                assert!(same(&got, &expected), "softmax of {len}-value rows on {}", kernel.name());
                assert!(got[..len].iter().all(|v| v.is_nan()) && !got[len..].iter().any(|v| v.is_nan()));
            }
        }
    }
}
