//! `QLinearConv` (`train quantize --form qoperator`) on our int8 kernels: tract's parser is
//! replaced by one that builds an [`Int8Conv`] (u8 in, u8 out) whenever the node has the shape
//! edgediff's quantiser writes (one group, no dilation, explicit padding, constant symmetric
//! int8 weights, per-tensor u8 activation parameters); anything else goes to tract's own
//! `QLinearConv`, unchanged.
//!
//! Why: tract 0.23 runs `QLinearConv` as an eager im2col into a generic i32 matmul followed by
//! separate requantisation ops, slower than its own fp32 convolution
//! (`models/sprites-eps.md`).

use std::sync::{Arc, OnceLock};

use edgediff_qconv::{Geometry, QConv2d, QuantParams};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::cnn::Conv;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::int8_conv::Int8Conv;
use super::OpParser;

fn tract_qlinear_conv() -> OpParser {
    static BUILDER: OnceLock<OpParser> = OnceLock::new();
    *BUILDER
        .get_or_init(|| *tract_onnx::onnx().op_register.0.get("QLinearConv").expect("tract-onnx parses QLinearConv"))
}

pub(crate) fn parse_qlinear_conv(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (op, extra) = tract_qlinear_conv()(ctx, node)?;
    let conv = op
        .as_op()
        .downcast_ref::<Box<dyn Expansion>>()
        .and_then(|e| tract_onnx::tract_core::downcast_rs::Downcast::as_any(&**e).downcast_ref::<Conv>())
        .cloned();
    match conv {
        Some(conv) => Ok((expand(QLinearConvExpansion { conv }), extra)),
        None => Ok((op, extra)),
    }
}

/// Parsed `QLinearConv`: tract's own description of it, used for shape inference and as the
/// fallback when our kernel does not apply.
#[derive(Debug, Clone)]
struct QLinearConvExpansion {
    conv: Conv,
}

impl Expansion for QLinearConvExpansion {
    fn name(&self) -> StaticName {
        "QLinearConv".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.conv.rules(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        match self.int8_conv(model, inputs)? {
            Some(op) => model.wire_node(prefix, op, &[inputs[0]]),
            None => self.conv.wire(prefix, model, inputs),
        }
    }
}

impl QLinearConvExpansion {
    /// Our operator for this node, or `None` if the node is outside what it supports.
    fn int8_conv(&self, model: &TypedModel, inputs: &[OutletId]) -> TractResult<Option<Int8Conv>> {
        let c = &self.conv;
        let plain = c.data_format == DataFormat::NCHW
            && c.kernel_fmt == KernelFormat::OIHW
            && c.group.unwrap_or(1) == 1
            && c.dilations.as_ref().is_none_or(|d| d.iter().all(|&v| v == 1))
            && (inputs.len() == 8 || inputs.len() == 9);
        if !plain {
            return Ok(None);
        }
        let x = model.outlet_fact(inputs[0])?;
        if x.datum_type.unquantized() != u8::datum_type() || x.rank() != 4 {
            return Ok(None);
        }
        let konst = |i: usize| model.outlet_fact(inputs[i]).ok().and_then(|f| f.konst.clone());
        let consts: Option<Vec<Arc<Tensor>>> = (1..inputs.len()).map(konst).collect();
        let Some(consts) = consts else { return Ok(None) };
        let (x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero) =
            (&consts[0], &consts[1], &consts[2], &consts[3], &consts[4], &consts[5], &consts[6]);
        let bias = consts.get(7);
        let f32s = |t: &Tensor| {
            t.cast_to::<f32>().ok().and_then(|t| t.try_as_plain_ram().ok()?.as_slice::<f32>().ok().map(|s| s.to_vec()))
        };
        let u8_scalar = |t: &Tensor| {
            (t.len() == 1 && t.datum_type().unquantized() == u8::datum_type())
                // SAFETY: one element whose datum type is u8 (or quantised u8), checked just before.
                .then(|| unsafe { t.as_slice_unchecked::<u8>()[0] })
        };
        let w_is_i8 = w.datum_type().unquantized() == i8::datum_type() && w.rank() == 4;
        let w_zero_is_0 = w_zero
            .cast_to::<i32>()
            .ok()
            .and_then(|t| Some(t.try_as_plain_ram().ok()?.as_slice::<i32>().ok()?.iter().all(|&v| v == 0)))
            == Some(true);
        let (Some(x_scale), Some(x_zero), Some(w_scales), Some(y_scale), Some(y_zero)) =
            (f32s(x_scale), u8_scalar(x_zero), f32s(w_scale), f32s(y_scale), u8_scalar(y_zero))
        else {
            return Ok(None);
        };
        if !w_is_i8 || !w_zero_is_0 || x_scale.len() != 1 || y_scale.len() != 1 {
            return Ok(None);
        }
        let shape = w.shape();
        let (m, cin, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
        let (before, after) = match &c.padding {
            PaddingSpec::Valid => (tvec![0, 0], tvec![0, 0]),
            PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => (b.clone(), a.clone()),
            _ => return Ok(None),
        };
        let strides = c.strides.clone().unwrap_or(tvec![1, 1]);
        if strides.len() != 2 {
            return Ok(None);
        }
        let geometry = Geometry {
            in_channels: cin,
            out_channels: m,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: strides[0],
            stride_w: strides[1],
            pad_top: before[0],
            pad_left: before[1],
            pad_bottom: after[0],
            pad_right: after[1],
        };
        let bias: Option<Vec<i32>> = match bias {
            Some(b) if b.datum_type() == i32::datum_type() && b.len() == m => {
                Some(b.try_as_plain_ram()?.as_slice::<i32>()?.to_vec())
            }
            Some(_) => return Ok(None),
            None => None,
        };
        // SAFETY: `w_is_i8` checked that the weights' datum type is i8 (or quantised i8); the
        // function returned above otherwise.
        let weights = unsafe { w.as_slice_unchecked::<i8>() };
        if weights.contains(&i8::MIN) {
            // -128 is outside symmetric int8; the Arm kernel's signed maths assumes it away.
            return Ok(None);
        }
        let params = QuantParams { x_scale: x_scale[0], x_zero, w_scales, y_scale: y_scale[0], y_zero };
        match QConv2d::qlinear(geometry, weights, bias.as_deref(), &params, crate::kernels::int8_for_op()?) {
            Ok(conv) => Ok(Some(Int8Conv::new(Arc::new(conv)))),
            Err(_) => Ok(None),
        }
    }
}
