//! `EdgediffConv`: an fp32 2-D convolution with constant weights (one group, no dilation), the
//! ONNX `Conv` nodes [`crate::rewrite::float_conv`] takes, run on [`edgediff_fkernels::Conv2d`].
//!
//! Every output is summed in one fixed order (see that crate), so an image's output bytes do not
//! depend on the batch it is in, the threads or the CPU; tract's convolution picked kernels
//! and fused neighbouring adds by shape, so a batch of three changed every value's last bits.
//!
//! An `Add` that is the convolution's only reader is taken in while tract declutters the graph
//! (see [`super::fused_add`]).

use std::sync::Arc;

use edgediff_fkernels::{Addend, Conv2d, ConvGeometry};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::fused_add::{add_to_take, addend_values, take_add, AddendKind};
use super::{f32_in_out, FLOAT_CONV_OP};
use crate::constants::{const_input, f32_values};

pub(crate) fn parse(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(FusedConv::from_node(node)?), vec![]))
}

/// The operator of `node` with its weights packed now, from `konst(i)` (the weights while the
/// model loads: [`crate::handover`]).
pub(crate) fn packed(
    node: &NodeProto,
    konst: impl Fn(usize) -> TractResult<Arc<Tensor>>,
) -> TractResult<Box<dyn InferenceOp>> {
    let mut op = FusedConv::from_node(node)?;
    op.packed = Some(Arc::new(op.pack(&node.name, konst)?));
    Ok(expand(op))
}

/// `EdgediffConv(x, w[M, C, kh, kw][, bias[M]])` with `Conv`'s `pads` and `strides`.
#[derive(Debug, Clone)]
struct FusedConv {
    /// Top, left, bottom, right.
    pads: [usize; 4],
    strides: [usize; 2],
    bias: bool,
    /// Packed while the model loaded: the weight input is then a stand-in, never read.
    packed: Option<Arc<Conv2d>>,
}

impl FusedConv {
    fn from_node(node: &NodeProto) -> TractResult<FusedConv> {
        let ints = |name: &str, default: Vec<i64>| {
            node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone()).unwrap_or(default)
        };
        let (pads, strides) = (ints("pads", vec![0; 4]), ints("strides", vec![1; 2]));
        ensure!(pads.len() == 4 && strides.len() == 2, "{}: pads {pads:?} strides {strides:?}", node.name);
        let u = |v: i64| usize::try_from(v).map_err(|_| format_err!("{}: negative pad or stride", node.name));
        let strides = [u(strides[0])?, u(strides[1])?];
        ensure!(strides.iter().all(|&s| s > 0), "{}: stride 0", node.name);
        Ok(FusedConv {
            pads: [u(pads[0])?, u(pads[1])?, u(pads[2])?, u(pads[3])?],
            strides,
            bias: node.input.len() == 3,
            packed: None,
        })
    }

    /// The kernel's convolution of the weights `konst(1)` and bias `konst(2)`.
    fn pack(&self, prefix: &str, konst: impl Fn(usize) -> TractResult<Arc<Tensor>>) -> TractResult<Conv2d> {
        let w = konst(1)?;
        ensure!(w.datum_type() == f32::datum_type() && w.rank() == 4, "{prefix}: weights must be f32 of rank 4");
        let s = w.shape();
        let geometry = ConvGeometry {
            in_channels: s[1],
            out_channels: s[0],
            kernel: [s[2], s[3]],
            strides: self.strides,
            pads: self.pads,
        };
        let bias = self.bias.then(|| f32_values(&*konst(2)?)).transpose()?;
        let kernel = crate::kernels::fp32_for_op()?;
        Conv2d::new(w.try_as_plain_ram()?.as_slice::<f32>()?, geometry, bias.as_deref(), kernel)
            .map_err(|e| format_err!("{prefix}: {e}"))
    }

    /// The output's shape for input shape `x` and weights `[M, C, kh, kw]`.
    fn output_shape<'r>(
        &self,
        s: &mut Solver<'r>,
        outputs: &'r [TensorProxy],
        x: &[TDim],
        [m, kh, kw]: [TDim; 3],
    ) -> InferenceResult {
        let (Ok(h), Ok(w), Ok(kh), Ok(kw)) = (x[2].to_usize(), x[3].to_usize(), kh.to_usize(), kw.to_usize()) else {
            return Ok(());
        };
        let geometry =
            ConvGeometry { in_channels: 0, out_channels: 0, kernel: [kh, kw], strides: self.strides, pads: self.pads };
        let (oh, ow) =
            geometry.output_size(h, w).with_context(|| format!("{FLOAT_CONV_OP}: input smaller than the kernel"))?;
        s.equals(&outputs[0].shape, ShapeFactoid::from(tvec![x[0].clone(), m, oh.to_dim(), ow.to_dim()]))
    }
}

impl Expansion for FusedConv {
    fn name(&self) -> StaticName {
        FLOAT_CONV_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        f32_in_out(s, inputs, outputs, if self.packed.is_some() { 1 } else { 2 + self.bias as usize })?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        if let Some(conv) = &self.packed {
            let g = conv.geometry();
            let shape = [g.out_channels.to_dim(), g.kernel[0].to_dim(), g.kernel[1].to_dim()];
            return s.given(&inputs[0].shape, move |s, x| self.output_shape(s, outputs, &x, shape.clone()));
        }
        s.equals(&inputs[1].rank, 4)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, w| {
            self.output_shape(s, outputs, &x, [w[0].clone(), w[2].clone(), w[3].clone()])
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let conv = match &self.packed {
            Some(conv) => conv.clone(),
            None => Arc::new(self.pack(prefix, |i| const_input(model, prefix, inputs, i))?),
        };
        model.wire_node(prefix, FloatConv { conv, addend: None }, &[inputs[0]])
    }
}

/// The typed operator: f32 NCHW in, f32 NCHW out, weights packed once at load; with an addend,
/// a second input added to the outputs (see the module docs).
#[derive(Debug, Clone)]
pub struct FloatConv {
    conv: Arc<Conv2d>,
    addend: Option<AddendKind>,
}

impl FloatConv {
    pub(crate) fn geometry(&self) -> ConvGeometry {
        self.conv.geometry()
    }
}

impl PartialEq for FloatConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conv, &other.conv) && self.addend == other.addend
    }
}
impl Eq for FloatConv {}

impl Op for FloatConv {
    fn name(&self) -> StaticName {
        "FloatConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = self.conv.geometry();
        let adding = AddendKind::describe(self.addend);
        Ok(vec![format!(
            "{}x{} {}->{} stride {} kernel {}{adding}",
            g.kernel[0],
            g.kernel[1],
            g.in_channels,
            g.out_channels,
            g.strides[0],
            self.conv.kernel().name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for FloatConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let g = self.conv.geometry();
        let &[n, c, h, w] = x.shape() else { bail!("FloatConv: input {:?}, expected NCHW", x.shape()) };
        ensure!(c == g.in_channels, "FloatConv: input {:?}, expected {} channels", x.shape(), g.in_channels);
        let (oh, ow) = g.output_size(h, w).context("FloatConv: input smaller than the kernel")?;
        let pool = crate::threads::fp32_thread_pool(n * oh * ow * g.out_channels * g.k());
        let on_pool = pool
            .as_ref()
            .map(|pool| move |jobs: usize, job: &(dyn Fn(usize) + Sync)| crate::threads::parallel_for(pool, jobs, job));
        let parallel = on_pool.as_ref().map(|f| f as edgediff_fkernels::ParallelFor<'_>);
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        // SAFETY: `run_into` writes every value of `y` (fkernels tests each form on a NaN-filled
        // buffer); on an error `y` is dropped unread.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&[n, g.out_channels, oh, ow])? };
        let mut view = y.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        let addend = addend_values("FloatConv", self.addend, &inputs)?.map(|(kind, values)| match kind {
            AddendKind::Outputs => Addend::Outputs(values),
            AddendKind::Channels => Addend::Channels(values),
        });
        self.conv.run_into_adding(x, [n, h, w], parallel, addend, out).map_err(|e| format_err!("FloatConv: {e}"))?;
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for FloatConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = self.conv.geometry();
        let x = &inputs[0].shape;
        ensure!(x.rank() == 4, "FloatConv: input {x:?}, expected NCHW");
        let (h, w) = (x[2].to_usize()?, x[3].to_usize()?);
        let (oh, ow) = g.output_size(h, w).context("FloatConv: input smaller than the kernel")?;
        Ok(tvec!(f32::fact([x[0].clone(), g.out_channels.to_dim(), oh.to_dim(), ow.to_dim()])))
    }

    /// Takes in the `Add` that is this convolution's only reader (see [`super::fused_add`]).
    fn declutter(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        let Some((add, other, kind)) = add_to_take(model, node)?.filter(|_| self.addend.is_none()) else {
            return Ok(None);
        };
        let op = FloatConv { conv: self.conv.clone(), addend: Some(kind) };
        take_add(model, node, add, other, op).map(Some)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gaussian_tensor as values;
    use tract_onnx::tract_core::ops::math;

    /// A chain of 3x3 convolutions, each read by an `Add`: of one value per image and channel
    /// (as the first operand), of the chain's input (a residual), of one image's values for
    /// every image, of the convolution's own output, and of values broadcast over channels.
    /// With `outputs_too` every convolution's output is a model output as well, so none can
    /// take its add in.
    fn chain(outputs_too: bool) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 16, 6, 6])).unwrap();
        let per_channel = model.add_source("per_channel", f32::fact([2, 16, 1, 1])).unwrap();
        let lead = model.add_source("lead", f32::fact([1, 16, 6, 6])).unwrap();
        let plane = model.add_source("plane", f32::fact([2, 1, 6, 6])).unwrap();
        let mut weights = vec![0f32; 16 * 16 * 9];
        edgediff_core::GaussianStream::new(9).fill(&mut weights);
        let g = ConvGeometry { in_channels: 16, out_channels: 16, kernel: [3, 3], strides: [1, 1], pads: [1; 4] };
        let conv = Arc::new(Conv2d::new(&weights, g, Some(&[0.25; 16]), edgediff_fkernels::Kernel::detect()).unwrap());
        let mut convs = Vec::new();
        let mut wire = |model: &mut TypedModel, name: &str, input: OutletId, other: Option<OutletId>| {
            let op = FloatConv { conv: conv.clone(), addend: None };
            let y = model.wire_node(format!("{name}.conv"), op, &[input]).unwrap()[0];
            convs.push(y);
            let (a, b) = if name == "channels" { (other.unwrap(), y) } else { (y, other.unwrap_or(y)) };
            model.wire_node(name, math::add(), &[a, b]).unwrap()[0]
        };
        let h = wire(&mut model, "channels", x, Some(per_channel));
        let h = wire(&mut model, "residual", h, Some(x));
        let h = wire(&mut model, "leading", h, Some(lead));
        let h = wire(&mut model, "doubled", h, None);
        let h = wire(&mut model, "over_channels", h, Some(plane));
        let mut outputs = vec![h];
        if outputs_too {
            outputs.extend(convs);
        }
        model.select_output_outlets(&outputs).unwrap();
        model
    }

    #[test]
    fn adds_taken_into_the_convolutions_give_the_separate_adds_bits() {
        let fused = chain(false).into_optimized().unwrap();
        let separate = chain(true).into_optimized().unwrap();
        let adding: Vec<Option<AddendKind>> =
            fused.nodes().iter().filter_map(|n| n.op_as::<FloatConv>()).map(|op| op.addend).collect();
        use AddendKind::{Channels, Outputs};
        assert_eq!(adding, [Some(Channels), Some(Outputs), Some(Outputs), None, None]);
        assert!(separate.nodes().iter().filter_map(|n| n.op_as::<FloatConv>()).all(|op| op.addend.is_none()));
        let inputs = tvec![
            values(&[2, 16, 6, 6], 1),
            values(&[2, 16, 1, 1], 2),
            values(&[1, 16, 6, 6], 3),
            values(&[2, 1, 6, 6], 4)
        ];
        let bits = |model: TypedModel| crate::ops::first_output_bits(model, inputs.clone());
        assert_eq!(bits(fused), bits(separate));
    }
}
