//! `EdgediffInt8Conv`: the node [`crate::rewrite::int8`] makes of each
//! `QuantizeLinear → ConvInteger → Cast → Mul [→ Add]` chain (`train quantize`'s default form),
//! run on the [`edgediff_qconv`] kernels: f32 in, f32 out. [`Int8Conv`] is the typed operator,
//! shared with `QLinearConv` ([`super::qlinear_conv`]).
//!
//! Why: tract 0.23 runs the chain as five operators and its int8 convolution as an eager
//! im2col into a generic i32 matmul, slower than its own fp32 (`models/sprites-eps.md`). The
//! file stays standard ONNX, so ONNX Runtime runs the very same model as our reference.

use std::sync::Arc;

use edgediff_qconv::{Addend, Geometry, Input, OutputMut, QConv2d};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::fused_add::{add_to_take, addend_values, take_add, AddendKind};
use super::{f32_in_out, is_smoothed, INT8_CONV_OP};
use crate::constants::FusedParams;
use crate::threads::{parallel_for, thread_pool};

pub(crate) fn parse(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(FusedInt8Conv::from_node(node)?), vec![]))
}

/// The operator of `node` with its weights packed now, from the constants `konst(i)` gives
/// for its inputs: the loader packs each int8 weight as it leaves the file, so the unpacked
/// tensor is never held beside the packed one (see [`crate::handover`]).
pub(crate) fn packed(
    node: &NodeProto,
    konst: impl Fn(usize) -> TractResult<Arc<Tensor>>,
) -> TractResult<Box<dyn InferenceOp>> {
    let mut op = FusedInt8Conv::from_node(node)?;
    let params = FusedParams::from_consts(&node.name, konst, op.bias, op.smoothed, 4)?;
    op.packed = Some(Arc::new(op.pack(&node.name, params)?));
    Ok(expand(op))
}

impl FusedInt8Conv {
    fn from_node(node: &NodeProto) -> TractResult<FusedInt8Conv> {
        let ints = |name: &str, default: Vec<i64>| {
            node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone()).unwrap_or(default)
        };
        let pads = ints("pads", vec![0; 4]);
        let strides = ints("strides", vec![1; 2]);
        ensure!(pads.len() == 4 && strides.len() == 2, "{}: pads {pads:?} strides {strides:?}", node.name);
        let u = |v: i64| usize::try_from(v).map_err(|_| format_err!("{}: negative pad or stride", node.name));
        Ok(FusedInt8Conv {
            pads: [u(pads[0])?, u(pads[1])?, u(pads[2])?, u(pads[3])?],
            strides: [u(strides[0])?, u(strides[1])?],
            smoothed: is_smoothed(node),
            bias: node.input.len() == 6 + is_smoothed(node) as usize,
            packed: None,
        })
    }

    /// The kernel's convolution of `params`, its weights packed.
    fn pack(&self, prefix: &str, params: FusedParams) -> TractResult<QConv2d> {
        let shape = params.w.shape();
        let [t, l, b, r] = self.pads;
        let geometry = Geometry {
            in_channels: shape[1],
            out_channels: shape[0],
            kernel_h: shape[2],
            kernel_w: shape[3],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            pad_top: t,
            pad_left: l,
            pad_bottom: b,
            pad_right: r,
        };
        params.into_conv(prefix, geometry, None)
    }
}

/// `EdgediffInt8Conv(x, x_scale, x_zero, w, scale[, bias][, multipliers])`, see
/// [`crate::rewrite::int8`].
#[derive(Debug, Clone)]
struct FusedInt8Conv {
    /// Top, left, bottom, right.
    pads: [usize; 4],
    strides: [usize; 2],
    bias: bool,
    /// The last input multiplies `x` per channel before quantisation.
    smoothed: bool,
    /// Packed while the model loaded: the weight input is then a stand-in, never read.
    packed: Option<Arc<QConv2d>>,
}

impl Expansion for FusedInt8Conv {
    fn name(&self) -> StaticName {
        INT8_CONV_OP.into()
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
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        if let Some(conv) = &self.packed {
            let g = conv.geometry();
            let (o, kh, kw) = (g.out_channels.to_dim(), g.kernel_h.to_dim(), g.kernel_w.to_dim());
            return s.given(&inputs[0].shape, move |s, x| {
                self.output_shape(s, outputs, &x, [o.clone(), kh.clone(), kw.clone()])
            });
        }
        s.equals(&inputs[3].rank, 4)?;
        s.given_2(&inputs[0].shape, &inputs[3].shape, move |s, x, w| {
            self.output_shape(s, outputs, &x, [w[0].clone(), w[2].clone(), w[3].clone()])
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let conv = match &self.packed {
            Some(conv) => conv.clone(),
            None => {
                let params = FusedParams::read(model, prefix, inputs, self.bias, self.smoothed, 4)?;
                Arc::new(self.pack(prefix, params)?)
            }
        };
        model.wire_node(prefix, Int8Conv::new(conv), &[inputs[0]])
    }
}

impl FusedInt8Conv {
    /// The output's shape for input shape `x` and a kernel of `[out channels, kh, kw]`.
    fn output_shape<'r>(
        &self,
        s: &mut Solver<'r>,
        outputs: &'r [TensorProxy],
        x: &[TDim],
        [o, kh, kw]: [TDim; 3],
    ) -> InferenceResult {
        let (Ok(h), Ok(wd), Ok(kh), Ok(kw)) = (x[2].to_usize(), x[3].to_usize(), kh.to_usize(), kw.to_usize()) else {
            return Ok(());
        };
        let [t, l, b, r] = self.pads;
        ensure!(h + t + b >= kh && wd + l + r >= kw, "{}: input smaller than the kernel", INT8_CONV_OP);
        let ho = (h + t + b - kh) / self.strides[0] + 1;
        let wo = (wd + l + r - kw) / self.strides[1] + 1;
        s.equals(&outputs[0].shape, ShapeFactoid::from(tvec![x[0].clone(), o, ho.to_dim(), wo.to_dim()]))
    }
}

/// The typed operator: NCHW in, NCHW out, weights packed once at load. Input u8 (already
/// quantised) or f32 (quantised here); output u8 (`QLinearConv`) or f32 (the fused form),
/// which may add a second input after the bias (an `Add` taken in, see [`super::fused_add`]).
#[derive(Debug, Clone)]
pub struct Int8Conv {
    conv: Arc<QConv2d>,
    addend: Option<AddendKind>,
}

impl Int8Conv {
    pub(crate) fn new(conv: Arc<QConv2d>) -> Int8Conv {
        Int8Conv { conv, addend: None }
    }
}

impl PartialEq for Int8Conv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conv, &other.conv) && self.addend == other.addend
    }
}
impl Eq for Int8Conv {}

impl Op for Int8Conv {
    fn name(&self) -> StaticName {
        "Int8Conv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = self.conv.geometry();
        Ok(vec![format!(
            "{}x{} {}->{} stride {} kernel {}{}",
            g.kernel_h,
            g.kernel_w,
            g.in_channels,
            g.out_channels,
            g.stride_h,
            self.conv.kernel().name(),
            AddendKind::describe(self.addend)
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Conv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(shape.len() == 4, "Int8Conv: input shape {shape:?}");
        let (n, h, w) = (shape[0], shape[2], shape[3]);
        let input = if x.datum_type() == f32::datum_type() {
            Input::F32(x.try_as_plain_ram()?.as_slice::<f32>()?)
        } else {
            ensure!(x.datum_type().unquantized() == u8::datum_type(), "Int8Conv: input is {:?}", x.datum_type());
            // SAFETY: u8 or quantised u8, checked just above.
            Input::U8(unsafe { x.as_slice_unchecked::<u8>() })
        };
        let g = self.conv.geometry();
        let (ho, wo) = g.output_size(h, w).with_context(|| format!("Int8Conv: a {h}x{w} input is too small"))?;
        let dims = [n, g.out_channels, ho, wo];
        // The result is written straight into the tensor (no zeroed buffer to fill and copy).
        // SAFETY: `run_into` writes every value of the tensor; on an error it is dropped unread.
        let mut t = unsafe {
            match self.conv.outputs_f32() {
                true => Tensor::uninitialized::<f32>(&dims)?,
                false => Tensor::uninitialized::<u8>(&dims)?,
            }
        };
        let mut view = t.try_as_plain_ram_mut()?;
        let out = match self.conv.outputs_f32() {
            true => OutputMut::F32(view.as_slice_mut::<f32>()?),
            false => OutputMut::U8(view.as_slice_mut::<u8>()?),
        };
        let addend = addend_values("Int8Conv", self.addend, &inputs)?.map(|(kind, values)| match kind {
            AddendKind::Outputs => Addend::Outputs(values),
            AddendKind::Channels => Addend::Channels(values),
        });
        match thread_pool(self.conv.macs_per_image(h, w)) {
            Some(pool) => {
                let parallel = |jobs: usize, job: &(dyn Fn(usize) + Sync)| parallel_for(&pool, jobs, job);
                self.conv.run_into_adding(input, [n, h, w], Some(&parallel), addend, out)
            }
            None => self.conv.run_into_adding(input, [n, h, w], None, addend, out),
        }
        .map_err(|e| format_err!("Int8Conv: {e}"))?;
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Int8Conv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let shape = x.shape.as_concrete().context("Int8Conv needs a concrete input shape")?;
        ensure!(shape.len() == 4 && shape[1] == self.conv.geometry().in_channels, "Int8Conv: input {shape:?}");
        let (ho, wo) =
            self.conv.geometry().output_size(shape[2], shape[3]).context("Int8Conv: input smaller than kernel")?;
        let dims = [shape[0], self.conv.geometry().out_channels, ho, wo];
        Ok(tvec!(if self.conv.outputs_f32() { f32::fact(dims) } else { u8::fact(dims) }))
    }

    /// Takes in the `Add` that is this convolution's only reader, where its output is f32 (see
    /// [`super::fused_add`]).
    fn declutter(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        let Some((add, other, kind)) = add_to_take(model, node)?.filter(|_| self.addend.is_none()) else {
            return Ok(None);
        };
        let op = Int8Conv { conv: self.conv.clone(), addend: Some(kind) };
        take_add(model, node, add, other, op).map(Some)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gaussian_tensor as values;
    use tract_onnx::tract_core::ops::math;

    /// Two f32-output int8 convolutions, the first read by an `Add` of one value per image and
    /// channel, the second by one of the chain's input (a residual). With `outputs_too` each
    /// convolution's output is a model output as well, so neither takes its add in.
    fn chain(outputs_too: bool) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 16, 6, 6])).unwrap();
        let per_channel = model.add_source("per_channel", f32::fact([2, 16, 1, 1])).unwrap();
        let g = Geometry::square(16, 16, 3, 1, 1);
        let w: Vec<i8> = (0..16 * 16 * 9).map(|i| (i * 37 % 255) as i8).collect();
        let conv =
            QConv2d::integer(g, &w, 0.02, 128, vec![0.003; 16], Some(vec![0.1; 16]), edgediff_qconv::Kernel::detect());
        let conv = Arc::new(conv.unwrap());
        let c1 = model.wire_node("c1", Int8Conv::new(conv.clone()), &[x]).unwrap()[0];
        let h = model.wire_node("timed", math::add(), &[per_channel, c1]).unwrap()[0];
        let c2 = model.wire_node("c2", Int8Conv::new(conv), &[h]).unwrap()[0];
        let y = model.wire_node("residual", math::add(), &[c2, x]).unwrap()[0];
        let outputs = if outputs_too { vec![y, c1, c2] } else { vec![y] };
        model.select_output_outlets(&outputs).unwrap();
        model
    }

    #[test]
    fn adds_taken_into_int8_convolutions_give_the_separate_adds_bits() {
        let fused = chain(false).into_optimized().unwrap();
        let adding: Vec<_> = fused.nodes().iter().filter_map(|n| n.op_as::<Int8Conv>()).map(|op| op.addend).collect();
        assert_eq!(adding, [Some(AddendKind::Channels), Some(AddendKind::Outputs)]);
        let inputs = tvec![values(&[2, 16, 6, 6], 1), values(&[2, 16, 1, 1], 2)];
        let bits = |model: TypedModel| crate::ops::first_output_bits(model, inputs.clone());
        assert_eq!(bits(fused), bits(chain(true).into_optimized().unwrap()));
    }
}
