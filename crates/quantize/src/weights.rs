//! Weight and activation quantisation parameters.
//!
//! Weights: symmetric int8 per output channel (zero point 0, range ±127). Symmetric because a
//! zero point on the weight side would add a term per output in every integer matmul; per
//! channel because U-Net conv filters differ in scale by orders of magnitude, and one scale per
//! tensor would flush the small filters to zero. -128 is never used, so negating a weight can
//! never overflow (some int8 kernels, e.g. VNNI's u8×s8 trick, rely on that).
//!
//! Activations: asymmetric uint8 per tensor (scale, zero point) from a calibrated [min, max]
//! that always contains 0, so zero padding and ReLU/SiLU zeros are exact.

/// Per-channel symmetric int8 weights: `values[i] ≈ q[i] * scales[channel(i)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeights {
    pub values: Vec<i8>,
    /// One scale per channel along `axis`.
    pub scales: Vec<f32>,
    pub axis: usize,
}

/// Quantises `values` (row-major, `dims`) with one symmetric scale per index of `axis`.
///
/// A channel that is all zeros gets scale 1 (its weights quantise to 0 either way; a zero scale
/// would be an invalid ONNX quantisation parameter).
pub fn quantize_per_channel(values: &[f32], dims: &[usize], axis: usize) -> QuantizedWeights {
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    let mut max_abs = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(v.abs());
    }
    let scales: Vec<f32> = max_abs.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let values = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    QuantizedWeights { values, scales, axis }
}

/// How activations are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationType {
    /// uint8 with a zero point: the full 256 levels over [min, max].
    U8Asymmetric,
    /// int8 with zero point 0: half the levels for one-sided tensors (SiLU outputs), but an
    /// engine needs no zero-point correction terms in the integer matmul.
    I8Symmetric,
}

impl std::str::FromStr for ActivationType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "u8" => Ok(ActivationType::U8Asymmetric),
            "i8" => Ok(ActivationType::I8Symmetric),
            _ => Err(format!("unknown activation type `{s}`, expected u8 or i8")),
        }
    }
}

impl std::fmt::Display for ActivationType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActivationType::U8Asymmetric => "uint8 asymmetric",
            ActivationType::I8Symmetric => "int8 symmetric",
        })
    }
}

/// Affine parameters of an activation tensor: `x ≈ (q - zero_point) * scale`. `zero_point` is
/// the stored byte: uint8 for [`ActivationType::U8Asymmetric`], 0 (as int8) for the symmetric type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationParams {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActivationParams {
    /// Parameters of `kind` for the observed range.
    pub fn new(kind: ActivationType, min: f32, max: f32) -> ActivationParams {
        match kind {
            ActivationType::U8Asymmetric => ActivationParams::from_range(min, max),
            ActivationType::I8Symmetric => {
                let m = min.abs().max(max.abs());
                let scale = if m.is_finite() && m > 0.0 { m / 127.0 } else { 1.0 };
                ActivationParams { scale, zero_point: 0 }
            }
        }
    }

    /// From an observed range; the range is widened to contain 0 so that 0 is exactly
    /// representable (ONNX requires it for padding). A degenerate range gets scale 1.
    pub fn from_range(min: f32, max: f32) -> ActivationParams {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let span = hi - lo;
        if !(span.is_finite() && span > 0.0) {
            return ActivationParams { scale: 1.0, zero_point: 0 };
        }
        let scale = span / 255.0;
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        ActivationParams { scale, zero_point }
    }

    /// The smallest and largest real values the quantiser of `kind` represents (the ends where
    /// it saturates): uint8 `[0, 255]` or int8 `[-128, 127]` about the zero point.
    pub fn representable(&self, kind: ActivationType) -> (f32, f32) {
        let (qmin, qmax) = match kind {
            ActivationType::U8Asymmetric => (0.0, 255.0),
            ActivationType::I8Symmetric => (-128.0, 127.0),
        };
        ((qmin - self.zero_point as f32) * self.scale, (qmax - self.zero_point as f32) * self.scale)
    }

    /// What the value `x` becomes after a quantise/dequantise round trip.
    pub fn fake_quantize(&self, x: f32) -> f32 {
        let q = (x / self.scale).round_ties_even() + self.zero_point as f32;
        (q.clamp(0.0, 255.0) - self.zero_point as f32) * self.scale
    }
}

/// int32 bias of an integer conv/matmul: `round(b / (x_scale * w_scale[c]))` per channel.
pub fn quantize_bias(bias: &[f32], x_scale: f32, w_scales: &[f32]) -> Vec<i32> {
    bias.iter()
        .zip(w_scales)
        .map(|(b, w)| {
            let q = (*b as f64 / (x_scale as f64 * *w as f64)).round();
            q.clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_scales_follow_each_output_channel() {
        // Two output channels of a [2, 1, 1, 3] conv: very different magnitudes.
        let w = [0.011, -0.02, 0.005, 10.0, -4.0, 2.5];
        let q = quantize_per_channel(&w, &[2, 1, 1, 3], 0);
        assert_eq!(q.scales, vec![0.02 / 127.0, 10.0 / 127.0]);
        assert_eq!(q.values, vec![70, -127, 32, 127, -51, 32]);
        for (i, v) in w.iter().enumerate() {
            let back = q.values[i] as f32 * q.scales[i / 3];
            assert!((back - v).abs() <= q.scales[i / 3] / 2.0 + 1e-9, "{i}: {back} vs {v}");
        }
    }

    #[test]
    fn matmul_weights_quantise_per_column() {
        // [in = 2, out = 3], axis 1: column c has scale max|w[:, c]| / 127.
        let w = [0.9, 0.0, -0.5, -2.0, 0.0, 0.2];
        let q = quantize_per_channel(&w, &[2, 3], 1);
        assert_eq!(q.scales, vec![2.0 / 127.0, 1.0, 0.5 / 127.0]);
        assert_eq!(q.values, vec![57, 0, -127, -127, 0, 51]);
    }

    #[test]
    fn activation_range_always_contains_zero() {
        let p = ActivationParams::from_range(0.5, 2.0);
        assert_eq!(p.zero_point, 0);
        assert_eq!(p.fake_quantize(0.0), 0.0);
        let silu = ActivationParams::from_range(-0.278, 4.0);
        assert_eq!(silu.fake_quantize(0.0), 0.0);
        assert!((silu.fake_quantize(1.234) - 1.234).abs() <= silu.scale / 2.0);
        assert_eq!(silu.fake_quantize(100.0), (255 - silu.zero_point as i32) as f32 * silu.scale);
        assert_eq!(ActivationParams::from_range(0.0, 0.0), ActivationParams { scale: 1.0, zero_point: 0 });
        // A NaN bound is ignored (f32::min/max), an all-NaN range degenerates to scale 1.
        assert_eq!(ActivationParams::from_range(f32::NAN, 1.0).scale, 1.0 / 255.0);
        assert_eq!(ActivationParams::from_range(f32::NAN, f32::NAN).scale, 1.0);
        let sym = ActivationParams::new(ActivationType::I8Symmetric, -0.278, 4.0);
        assert_eq!((sym.scale, sym.zero_point), (4.0 / 127.0, 0));
    }

    #[test]
    fn bias_uses_the_product_of_scales() {
        assert_eq!(quantize_bias(&[1.0, -0.5], 0.5, &[0.01, 0.1]), vec![200, -10]);
    }
}
