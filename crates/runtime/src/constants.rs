//! Reading the constant inputs of our fused nodes while they are wired into tract's typed graph:
//! scales, biases, per-channel parameters and int8 weights, checked for what our kernels take.

use std::sync::Arc;

use edgediff_qconv::{Geometry, QConv2d};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// Input `i` of a node being wired, which must be a constant.
pub(crate) fn const_input(model: &TypedModel, prefix: &str, inputs: &[OutletId], i: usize) -> TractResult<Arc<Tensor>> {
    model.outlet_fact(inputs[i])?.konst.clone().with_context(|| format!("{prefix}: input {i} must be a constant"))
}

/// Constant input `i` as f32 values (scales, biases, per-channel parameters).
pub(crate) fn const_f32s(model: &TypedModel, prefix: &str, inputs: &[OutletId], i: usize) -> TractResult<Vec<f32>> {
    f32_values(&*const_input(model, prefix, inputs, i)?)
}

/// A constant's values as f32.
pub(crate) fn f32_values(t: &Tensor) -> TractResult<Vec<f32>> {
    Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

/// The constant inputs of a fused int8 node (`EdgediffInt8Conv`, `EdgediffInt8MatMul`):
/// `(x, x_scale, x_zero, w, scale[, bias][, multipliers])`, checked for what our kernels take.
pub(crate) struct FusedParams {
    pub x_scale: f32,
    pub x_zero: u8,
    pub w: Int8Weights,
    pub scale: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    /// Per input channel, applied to `x` before quantisation (a smoothed input).
    pub multipliers: Option<Vec<f32>>,
}

impl FusedParams {
    /// The constant inputs of a node being wired into `model`.
    pub(crate) fn read(
        model: &TypedModel,
        prefix: &str,
        inputs: &[OutletId],
        bias: bool,
        smoothed: bool,
        weight_rank: usize,
    ) -> TractResult<FusedParams> {
        Self::from_consts(prefix, |i| const_input(model, prefix, inputs, i), bias, smoothed, weight_rank)
    }

    /// The constant inputs as `konst(i)` gives them (from a typed graph being wired, or from
    /// the model's weights while it loads: [`crate::handover`]).
    pub(crate) fn from_consts(
        prefix: &str,
        konst: impl Fn(usize) -> TractResult<Arc<Tensor>>,
        bias: bool,
        smoothed: bool,
        weight_rank: usize,
    ) -> TractResult<FusedParams> {
        let f32s = |i| f32_values(&*konst(i)?);
        let (x_scale, x_zero, w) = (f32s(1)?, konst(2)?, konst(3)?);
        ensure!(x_scale.len() == 1, "{prefix}: x_scale must be one value");
        ensure!(
            x_zero.datum_type().unquantized() == u8::datum_type() && x_zero.len() == 1,
            "{prefix}: x_zero must be one u8"
        );
        ensure!(
            w.datum_type().unquantized() == i8::datum_type() && w.rank() == weight_rank,
            "{prefix}: weights must be {weight_rank}-D int8"
        );
        // SAFETY: datum types checked just above.
        let (weights, x_zero) = unsafe { (w.as_slice_unchecked::<i8>(), x_zero.as_slice_unchecked::<u8>()[0]) };
        ensure!(!weights.contains(&i8::MIN), "{prefix}: weights must be symmetric int8 (no -128)");
        let multipliers = if smoothed { Some(f32s(5 + bias as usize)?) } else { None };
        let bias = if bias { Some(f32s(5)?) } else { None };
        Ok(FusedParams { x_scale: x_scale[0], x_zero, scale: f32s(4)?, bias, multipliers, w: Int8Weights(w) })
    }

    /// Our kernel's convolution of `geometry` with these scales, bias and input multipliers,
    /// its weights packed: `weights` laid out `[O][I][kh][kw]`, or `None` for `w` as read.
    pub(crate) fn into_conv(self, prefix: &str, geometry: Geometry, weights: Option<&[i8]>) -> TractResult<QConv2d> {
        let FusedParams { x_scale, x_zero, w, scale, bias, multipliers } = self;
        let weights = weights.unwrap_or(w.values());
        let mut conv =
            QConv2d::integer(geometry, weights, x_scale, x_zero, scale, bias, crate::kernels::int8_for_op()?)
                .map_err(|e| format_err!("{prefix}: {e}"))?;
        if let Some(m) = multipliers {
            conv = conv.with_input_multipliers(m).map_err(|e| format_err!("{prefix}: {e}"))?;
        }
        Ok(conv)
    }
}

/// Symmetric int8 weights (no -128), checked by [`FusedParams::read`].
pub(crate) struct Int8Weights(Arc<Tensor>);

impl Int8Weights {
    pub(crate) fn values(&self) -> &[i8] {
        // SAFETY: `FusedParams::read` checked the datum type.
        unsafe { self.0.as_slice_unchecked::<i8>() }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        self.0.shape()
    }
}
