//! Activation smoothing: each input channel's share of an activation's range moved into the
//! weights that read it, so one per-tensor activation scale fits every channel.
//!
//! `QLinearConv` and `ConvInteger` take one scale per activation tensor, but the channels of a
//! U-Net conv input differ in range: over the calibration trajectories of the default model the
//! median channel spans half its tensor's range (a tenth of the channels under a third), so
//! most channels use half the uint8 levels or fewer. SmoothQuant (Xiao et al., 2023) divides
//! channel `c` by a factor `a_c` before quantising (a `Mul` by a constant, in fp32) and
//! multiplies the weights reading channel `c` by the same `a_c`: the real product is unchanged,
//! the activation's channels are closer in range, and the weights take on the spread (they are
//! quantised per output channel, after the scaling). `a_c = (r_c / max r)^α` with `r_c` the
//! channel's largest magnitude: `α = 0` is no smoothing, `α = 1` equalises the channels fully.

/// The smallest factor: a channel that is (nearly) always zero is not scaled up more than
/// 64x, so its weights stay representable.
pub const MIN_FACTOR: f32 = 1.0 / 64.0;

/// `a_c` for each channel of one activation from its calibrated per-channel `[min, max]`.
pub fn channel_factors(channels: &[(f32, f32)], alpha: f32) -> Vec<f32> {
    let magnitude: Vec<f32> = channels.iter().map(|&(lo, hi)| lo.abs().max(hi.abs())).collect();
    let max = magnitude.iter().copied().fold(0f32, f32::max);
    if !(max > 0.0 && max.is_finite()) {
        return vec![1.0; channels.len()];
    }
    magnitude.iter().map(|&r| (r / max).max(MIN_FACTOR).powf(alpha)).collect()
}

/// The per-tensor `[min, max]` of the activation once each channel is divided by its factor.
pub fn smoothed_range(channels: &[(f32, f32)], factors: &[f32]) -> (f32, f32) {
    channels.iter().zip(factors).fold((0f32, 0f32), |(lo, hi), (&(clo, chi), &a)| (lo.min(clo / a), hi.max(chi / a)))
}

/// Multiplies `weights` (row-major, `dims`) by `factors` along `axis`, the input-channel axis.
pub fn scale_input_channels(weights: &mut [f32], dims: &[usize], axis: usize, factors: &[f32]) {
    let inner: usize = dims[axis + 1..].iter().product();
    for (i, w) in weights.iter_mut().enumerate() {
        *w *= factors[(i / inner) % dims[axis]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smoothed activation times the scaled weights is the original product, and the
    /// channels come out equal in magnitude at α = 1.
    #[test]
    fn smoothing_keeps_the_product_and_equalises_channels() {
        let channels = [(-0.2, 4.0), (-1.0, 0.5), (0.0, 0.0)];
        let a = channel_factors(&channels, 1.0);
        assert_eq!(a, vec![1.0, 0.25, MIN_FACTOR]);
        let (lo, hi) = smoothed_range(&channels, &a);
        assert_eq!((lo, hi), (-4.0, 4.0));
        assert_eq!(channel_factors(&channels, 0.0), vec![1.0; 3]);
        // MatMul weight [C=3][M=2]: input channel axis 0.
        let mut w = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        scale_input_channels(&mut w, &[3, 2], 0, &a);
        let x = [2.0f32, -0.5, 0.0];
        for m in 0..2 {
            let original: f32 = (0..3).map(|c| x[c] * [1.0, 2.0, 3.0, 4.0, 5.0, 6.0][c * 2 + m]).sum();
            let smoothed: f32 = (0..3).map(|c| x[c] / a[c] * w[c * 2 + m]).sum();
            assert!((original - smoothed).abs() < 1e-6);
        }
    }
}
