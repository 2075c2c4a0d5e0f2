//! `EdgediffInt8MatMul`: the fused `QuantizeLinear → MatMulInteger → Cast → Mul [→ Add]` chain
//! of [`crate::rewrite::int8`] (the attention's query/key/value/output projections), run on the
//! [`edgediff_qconv`] kernels as a 1x1 convolution.
//!
//! Why: tract 0.23 runs this chain as five operators (QuantizeLinear, the u8→i8 offset, a
//! packed i32 matmul, Cast, and a broadcast Mul+Add); `op_profile` on the default int8 model
//! put them at about a tenth of an evaluation for 16 small products (64 tokens x 64 channels).
//!
//! `x[.., R, K] · w[K, M]` is a 1x1 convolution of the image `xᵀ` (`K` channels, `R` pixels):
//! [`QConv2d::run_channels_last`] packs its columns straight from the row-major `x`, and the
//! `[M][R]` result is handed to tract as is, followed by an axis move that tract cancels
//! against the graph's own transposes where it can. Same arithmetic as tract on the chain
//! ([`edgediff_qconv::quantize`], exact integer sums, [`edgediff_qconv::dequantize`]), so the
//! output bits do not change.

use std::sync::Arc;

use edgediff_qconv::{Geometry, Input, OutputMut, QConv2d};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::{f32_in_out, is_smoothed, INT8_MATMUL_OP};
use crate::constants::FusedParams;

pub(crate) fn parse(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(FusedInt8MatMul::from_node(node)), vec![]))
}

/// The operator of `node` with its weights packed now (see [`super::int8_conv::packed`]).
pub(crate) fn packed(
    node: &NodeProto,
    konst: impl Fn(usize) -> TractResult<Arc<Tensor>>,
) -> TractResult<Box<dyn InferenceOp>> {
    let mut op = FusedInt8MatMul::from_node(node);
    let params = FusedParams::from_consts(&node.name, konst, op.bias, op.smoothed, 2)?;
    op.packed = Some(Arc::new(pack(&node.name, params)?));
    Ok(expand(op))
}

/// The kernel's 1x1 convolution of `params` (`w` transposed), its weights packed.
fn pack(prefix: &str, params: FusedParams) -> TractResult<QConv2d> {
    let (k, m) = (params.w.shape()[0], params.w.shape()[1]);
    let w = params.w.values();
    // The convolution's weights are [M][K][1][1]: w transposed.
    let transposed: Vec<i8> = (0..m).flat_map(|j| (0..k).map(move |i| w[i * m + j])).collect();
    params.into_conv(prefix, Geometry::square(k, m, 1, 1, 0), Some(&transposed))
}

/// `EdgediffInt8MatMul(x, x_scale, x_zero, w[K, M], scale[M][, bias[M]][, multipliers[K]])`.
#[derive(Debug, Clone)]
struct FusedInt8MatMul {
    bias: bool,
    /// The last input multiplies `x` along its last axis before quantisation.
    smoothed: bool,
    /// Packed while the model loaded: the weight input is then a stand-in, never read.
    packed: Option<Arc<QConv2d>>,
}

impl FusedInt8MatMul {
    fn from_node(node: &NodeProto) -> FusedInt8MatMul {
        let smoothed = is_smoothed(node);
        FusedInt8MatMul { bias: node.input.len() == 6 + smoothed as usize, smoothed, packed: None }
    }
}

impl Expansion for FusedInt8MatMul {
    fn name(&self) -> StaticName {
        INT8_MATMUL_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        f32_in_out(
            s,
            inputs,
            outputs,
            if self.packed.is_some() { 1 } else { 5 + self.bias as usize + self.smoothed as usize },
        )?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        if let Some(conv) = &self.packed {
            let m = conv.geometry().out_channels.to_dim();
            return s.given(&inputs[0].shape, move |s, x| {
                ensure!(!x.is_empty(), "{INT8_MATMUL_OP}: scalar input");
                let mut out = x.clone();
                *out.last_mut().expect("not empty") = m.clone();
                s.equals(&outputs[0].shape, ShapeFactoid::from(out))
            });
        }
        s.equals(&inputs[3].rank, 2)?;
        s.given_2(&inputs[0].shape, &inputs[3].shape, move |s, x, w| {
            ensure!(!x.is_empty(), "{INT8_MATMUL_OP}: scalar input");
            ensure!(w.len() == 2, "{INT8_MATMUL_OP}: weights of rank {}, expected [K, M]", w.len());
            let mut out = x.clone();
            *out.last_mut().expect("not empty") = w[1].clone();
            s.equals(&outputs[0].shape, ShapeFactoid::from(out))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let conv = match &self.packed {
            Some(conv) => conv.clone(),
            None => Arc::new(pack(prefix, FusedParams::read(model, prefix, inputs, self.bias, self.smoothed, 2)?)?),
        };
        let op = Int8MatMul { conv };
        // Our op writes each `[R][M]` product transposed, `[M][R]`; tract's own axis move puts
        // it back. Where the graph transposes the product anyway (the attention's keys and its
        // output projection, back to channels-first) tract cancels the two moves.
        let rank = model.outlet_fact(inputs[0])?.rank();
        ensure!(rank >= 2, "{prefix}: input must have rank 2 or more");
        let by_channel = model.wire_node(format!("{prefix}.by_channel"), op, &[inputs[0]])?;
        model.wire_node(prefix, AxisOp::Move(rank - 2, rank - 1), &by_channel)
    }
}

/// The typed operator: f32 `[.., R, K]` in, f32 `[.., M, R]` out (the product, transposed).
#[derive(Debug, Clone)]
pub struct Int8MatMul {
    conv: Arc<QConv2d>,
}

impl PartialEq for Int8MatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conv, &other.conv)
    }
}
impl Eq for Int8MatMul {}

impl Op for Int8MatMul {
    fn name(&self) -> StaticName {
        "Int8MatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = self.conv.geometry();
        Ok(vec![format!("{}->{} kernel {}", g.in_channels, g.out_channels, self.conv.kernel().name())])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let (k, m) = (self.conv.geometry().in_channels, self.conv.geometry().out_channels);
        let shape: TVec<usize> = x.shape().into();
        ensure!(shape.last() == Some(&k), "Int8MatMul: input {shape:?}, expected last axis {k}");
        ensure!(shape.len() >= 2, "Int8MatMul: input {shape:?}");
        let rows = shape[shape.len() - 2];
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut out_shape = shape;
        let r = out_shape.len();
        (out_shape[r - 2], out_shape[r - 1]) = (m, rows);
        // Each product is written straight into its place in the tensor.
        // SAFETY: the products cover the tensor (one `[M][rows]` block per input matrix) and
        // `run_channels_last_into` writes every value of its block; on an error it is dropped.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let mut view = y.try_as_plain_ram_mut()?;
        let pool = crate::threads::int8_product_pool(rows * k * m);
        for (matrix, out) in x.chunks_exact(rows * k).zip(view.as_slice_mut::<f32>()?.chunks_exact_mut(m * rows)) {
            match &pool {
                Some(pool) => {
                    let parallel =
                        |jobs: usize, job: &(dyn Fn(usize) + Sync)| crate::threads::parallel_for(pool, jobs, job);
                    self.conv.run_channels_last_into(Input::F32(matrix), rows, Some(&parallel), OutputMut::F32(out))
                }
                None => self.conv.run_channels_last_into(Input::F32(matrix), rows, None, OutputMut::F32(out)),
            }
            .map_err(|e| format_err!("Int8MatMul: {e}"))?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Int8MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        let k = self.conv.geometry().in_channels;
        let r = shape.len();
        ensure!(r >= 2 && shape[r - 1] == k.to_dim(), "Int8MatMul: input {:?}, expected [.., R, {k}]", inputs[0].shape);
        (shape[r - 2], shape[r - 1]) = (self.conv.geometry().out_channels.to_dim(), shape[r - 2].clone());
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}
