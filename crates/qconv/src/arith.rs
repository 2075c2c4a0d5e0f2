//! The scalar arithmetic every kernel shares: rounding, quantisation and the two epilogues.
//! IEEE f32 operations with round-to-nearest-even and no fused multiply-add, so the same inputs
//! give the same bytes on every CPU and at every vector width.

use crate::Kernel;

/// `v` rounded to the nearest integer, ties to even, for |v| <= 2^22: adding 1.5 * 2^23 leaves
/// no fraction bits, so the IEEE addition itself rounds (ties to even), and the integer sits in
/// the low mantissa bits. Plain f32 and i32 adds, so it vectorises on every CPU:
/// `f32::round_ties_even` is a `rintf` call per value on baseline x86_64, and `as i32` a
/// saturating conversion with NaN checks.
#[inline(always)]
pub(crate) fn round_even(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// `QuantizeLinear` to u8 as tract computes it: `clamp(round_half_even(x · (1/scale)) + zero,
/// 0, 255)`, with `inv_scale = 1/scale` rounded to f32 once. ONNX writes `x / scale`; the two
/// differ only when the product lands within an ulp of a rounding tie. We follow tract because
/// the rest of an int8 graph (the `MatMulInteger` inputs) is quantised by tract, and because the
/// shipped int8 models' quality gates were measured with this arithmetic: with it our kernels
/// give bit for bit the network outputs tract's own int8 path gives.
#[inline]
pub fn quantize(x: f32, inv_scale: f32, zero: u8) -> u8 {
    let q = round_even((x * inv_scale).clamp(-512.0, 512.0)) + zero as i32;
    q.clamp(0, 255) as u8
}

/// [`quantize`] over a slice, into `out` (resized to fit). The same scalar code, compiled
/// 16 lanes wide where the AVX-512 kernel runs (baseline x86_64 code is 4 lanes wide, and this
/// loop is about a tenth of an int8 evaluation); every width gives the same bytes. `kernel` must
/// be supported by this CPU (every `QConv2d::kernel` is).
// `#[inline]`: called out of line, this loop compiles worse on aarch64 (a Cortex-A53 int8
// evaluation takes 35.3 M instead of 33.8 M instructions, firmware-sim).
#[inline]
pub(crate) fn quantize_slice(kernel: Kernel, x: &[f32], inv_scale: f32, zero: u8, out: &mut Vec<u8>) {
    // Every value is written below: `resize` without `clear` keeps the last call's bytes
    // instead of zeroing them first (a `memset` of the whole input, 2% of a 3x3 layer).
    out.resize(x.len(), 0);
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Vnni {
        // SAFETY: the CPU has AVX-512 F and BW: `kernel` comes from a `QConv2d`, whose `build`
        // refuses kernels `Kernel::is_supported` denies, and that detects F, BW and VNNI.
        unsafe { quantize_avx512(x, inv_scale, zero, out) };
        return;
    }
    let _ = kernel;
    quantize_loop(x, inv_scale, zero, out);
}

/// [`quantize_slice`] of `x · multipliers[channel]`: the product rounded to f32 first, as a
/// separate `Mul` node computes it (never folded into `inv_scale`, which would round once
/// instead of twice). Channel `c` of `x` is every run of `inner` values at `(i / inner) % C`:
/// planes of NCHW (`inner` = H·W) or the last axis (`inner` = 1). `kernel` must be supported by
/// this CPU.
#[inline]
pub(crate) fn quantize_slice_multiplied(
    kernel: Kernel,
    x: &[f32],
    multipliers: &[f32],
    inner: usize,
    inv_scale: f32,
    zero: u8,
    out: &mut Vec<u8>,
) {
    // Every value is written below (`multipliers` has one entry per input channel, checked
    // when the convolution was built): `resize` without `clear` keeps the last call's bytes
    // instead of zeroing them first.
    out.resize(x.len(), 0);
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Vnni {
        // SAFETY: the CPU has AVX-512 F and BW, as in `quantize_slice`.
        unsafe { quantize_multiplied_avx512(x, multipliers, inner, inv_scale, zero, out) };
        return;
    }
    let _ = kernel;
    quantize_multiplied_loop(x, multipliers, inner, inv_scale, zero, out);
}

#[inline(always)]
fn quantize_multiplied_loop(x: &[f32], m: &[f32], inner: usize, inv_scale: f32, zero: u8, out: &mut [u8]) {
    let c = m.len().max(1);
    if inner == 1 {
        for (o, x) in out.chunks_mut(c).zip(x.chunks(c)) {
            for ((o, &v), &m) in o.iter_mut().zip(x).zip(m) {
                *o = quantize(v * m, inv_scale, zero);
            }
        }
    } else {
        for (k, (o, x)) in out.chunks_mut(inner).zip(x.chunks(inner)).enumerate() {
            let m = m[k % c];
            for (o, &v) in o.iter_mut().zip(x) {
                *o = quantize(v * m, inv_scale, zero);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_multiplied_avx512(x: &[f32], m: &[f32], inner: usize, inv_scale: f32, zero: u8, out: &mut [u8]) {
    quantize_multiplied_loop(x, m, inner, inv_scale, zero, out);
}

#[inline(always)]
fn quantize_loop(x: &[f32], inv_scale: f32, zero: u8, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize(v, inv_scale, zero);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_avx512(x: &[f32], inv_scale: f32, zero: u8, out: &mut [u8]) {
    quantize_loop(x, inv_scale, zero, out);
}

/// The f32 epilogue every kernel implements: `f32(acc) · scale + bias` (two IEEE roundings,
/// never fused, so every CPU agrees).
#[inline]
pub fn dequantize(acc: i32, scale: f32, bias: Option<f32>) -> f32 {
    let y = acc as f32 * scale;
    match bias {
        Some(b) => y + b,
        None => y,
    }
}

/// The requantisation every kernel implements, for one value.
#[inline]
pub fn requantize(acc: i32, mult: f32, y_zero: u8) -> u8 {
    let f = (acc as f32 * mult).clamp(-512.0, 512.0);
    (round_even(f) + y_zero as i32).clamp(0, 255) as u8
}
