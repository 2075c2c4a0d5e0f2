//! Building a [`QConv2d`]: argument checks, the requantisation multipliers, the weights packed
//! for the kernel, and the per-channel integer offsets that fold the zero points into the bias.

use super::QConv2d;
use crate::error::QConvError;
use crate::geometry::Geometry;
use crate::kernel::Kernel;
use crate::pack::pack_weights;
use crate::params::{Epilogue, QuantParams};

impl QConv2d {
    /// `QLinearConv`: `weights` are ONNX-ordered `[M][C][kh][kw]`, `bias` is `[M]` i32.
    pub fn qlinear(
        geometry: Geometry,
        weights: &[i8],
        bias: Option<&[i32]>,
        params: &QuantParams,
        kernel: Kernel,
    ) -> Result<QConv2d, QConvError> {
        let m = geometry.out_channels;
        let ws = &params.w_scales;
        if ws.len() != 1 && ws.len() != m {
            return Err(QConvError::ParamLen { what: "w_scale", got: ws.len(), want: m });
        }
        check_scale("y_scale", &[params.y_scale])?;
        check_scale("w_scale", ws)?;
        let mult = (0..m).map(|i| (params.x_scale * ws[if ws.len() == 1 { 0 } else { i }]) / params.y_scale).collect();
        let epilogue = Epilogue::Requantize { mult, y_zero: params.y_zero };
        Self::build(geometry, weights, bias, params.x_scale, params.x_zero, epilogue, kernel)
    }

    /// `QuantizeLinear → ConvInteger → Cast → Mul(scale) [→ Add(bias)]`, the form
    /// `train quantize --form integer` writes: f32 out, `scale` and `bias` per output channel.
    pub fn integer(
        geometry: Geometry,
        weights: &[i8],
        x_scale: f32,
        x_zero: u8,
        scale: Vec<f32>,
        bias: Option<Vec<f32>>,
        kernel: Kernel,
    ) -> Result<QConv2d, QConvError> {
        let m = geometry.out_channels;
        if scale.len() != m {
            return Err(QConvError::ParamLen { what: "output scale", got: scale.len(), want: m });
        }
        if let Some(b) = &bias {
            if b.len() != m {
                return Err(QConvError::ParamLen { what: "bias", got: b.len(), want: m });
            }
        }
        Self::build(geometry, weights, None, x_scale, x_zero, Epilogue::Dequantize { scale, bias }, kernel)
    }

    /// The checks and packing both constructors share. This is the only place a [`QConv2d`] is
    /// made, so every `QConv2d::kernel` has passed [`Kernel::is_supported`] here.
    fn build(
        geometry: Geometry,
        weights: &[i8],
        bias: Option<&[i32]>,
        x_scale: f32,
        x_zero: u8,
        epilogue: Epilogue,
        kernel: Kernel,
    ) -> Result<QConv2d, QConvError> {
        let g = &geometry;
        let want = g.out_channels * g.in_channels * g.kernel_h * g.kernel_w;
        if weights.len() != want {
            return Err(QConvError::WeightLen {
                got: weights.len(),
                want,
                m: g.out_channels,
                c: g.in_channels,
                kh: g.kernel_h,
                kw: g.kernel_w,
            });
        }
        if let Some(b) = bias {
            if b.len() != g.out_channels {
                return Err(QConvError::ParamLen { what: "bias", got: b.len(), want: g.out_channels });
            }
        }
        check_scale("x_scale", &[x_scale])?;
        // The SIMD kernels are `unsafe` target-feature code: refuse them where the CPU lacks it.
        if !kernel.is_supported() {
            return Err(QConvError::UnsupportedKernel(kernel.name()));
        }
        let per_row = weights.len() / g.out_channels.max(1);
        let shift = if kernel.signed_activations() { 128 } else { 0 };
        let offsets = (0..g.out_channels)
            .map(|m| {
                let sum: i32 = weights[m * per_row..(m + 1) * per_row].iter().map(|&v| v as i32).sum();
                bias.map_or(0, |b| b[m]) + (shift - x_zero as i32) * sum
            })
            .collect();
        Ok(QConv2d {
            weights: pack_weights(g, weights),
            geometry,
            kernel,
            offsets,
            epilogue,
            x_scale,
            x_zero,
            x_multipliers: None,
        })
    }

    /// Multiplies each input channel `c` of an f32 input by `multipliers[c]` before quantising
    /// it: the arithmetic of a separate `Mul` by a per-channel constant (the f32 product,
    /// rounded, then [`quantize`](crate::quantize)), without its output buffer.
    /// `train quantize --smooth` writes such a `Mul` in front of each smoothed layer. u8 inputs
    /// are then refused.
    pub fn with_input_multipliers(mut self, multipliers: Vec<f32>) -> Result<QConv2d, QConvError> {
        let c = self.geometry.in_channels;
        if multipliers.len() != c {
            return Err(QConvError::ParamLen { what: "input multipliers", got: multipliers.len(), want: c });
        }
        if !multipliers.iter().all(|m| m.is_finite()) {
            return Err(QConvError::Scale("input multipliers"));
        }
        self.x_multipliers = Some(multipliers);
        Ok(self)
    }
}

fn check_scale(what: &'static str, values: &[f32]) -> Result<(), QConvError> {
    if values.iter().all(|&v| v.is_finite() && v > 0.0) {
        Ok(())
    } else {
        Err(QConvError::Scale(what))
    }
}
