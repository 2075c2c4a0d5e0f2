//! `EdgediffMatMul`: an fp32 matrix product with constant weights, `y = x · w (+ bias)`, from
//! [`crate::rewrite::float_matmul`], run on [`edgediff_fkernels::MatMul`].
//!
//! Every output element is summed in one fixed order (the crate's docs say which), so an image's
//! rows give the same bytes whatever else is in the batch, whichever thread computes them and
//! on every CPU; tract's own products chose their kernel, and so their order, by shape.

use std::sync::Arc;

use edgediff_fkernels::{MatMul, WeightLayout};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::{f32_in_out, FLOAT_MATMUL_OP, TRANS_B_ATTR};
use crate::constants::{const_input, f32_values};

pub(crate) fn parse(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(FusedMatMul::from_node(node)), vec![]))
}

/// The operator of `node` with its weights packed now, from `konst(i)` (the weights while the
/// model loads: [`crate::handover`]).
pub(crate) fn packed(
    node: &NodeProto,
    konst: impl Fn(usize) -> TractResult<Arc<Tensor>>,
) -> TractResult<Box<dyn InferenceOp>> {
    let mut op = FusedMatMul::from_node(node);
    op.packed = Some(Arc::new(op.pack(&node.name, konst)?));
    Ok(expand(op))
}

/// `EdgediffMatMul(x, w[, bias])`; `w` is `[K, M]`, or `[M, K]` with `trans_b = 1`.
#[derive(Debug, Clone)]
struct FusedMatMul {
    bias: bool,
    trans_b: bool,
    /// Packed while the model loaded: the weight input is then a stand-in, never read.
    packed: Option<Arc<MatMul>>,
}

impl FusedMatMul {
    fn from_node(node: &NodeProto) -> FusedMatMul {
        let trans_b = node.attribute.iter().any(|a| a.name == TRANS_B_ATTR && a.i == 1);
        FusedMatMul { bias: node.input.len() == 3, trans_b, packed: None }
    }

    /// The kernel's product of the weights `konst(1)` and bias `konst(2)`.
    fn pack(&self, prefix: &str, konst: impl Fn(usize) -> TractResult<Arc<Tensor>>) -> TractResult<MatMul> {
        let w = konst(1)?;
        ensure!(w.datum_type() == f32::datum_type() && w.rank() == 2, "{prefix}: weights must be f32 of rank 2");
        let (k, m, layout) = match self.trans_b {
            false => (w.shape()[0], w.shape()[1], WeightLayout::KByM),
            true => (w.shape()[1], w.shape()[0], WeightLayout::MByK),
        };
        let bias = self.bias.then(|| f32_values(&*konst(2)?)).transpose()?;
        let weights = w.try_as_plain_ram()?;
        let kernel = crate::kernels::fp32_for_op()?;
        MatMul::new(weights.as_slice::<f32>()?, layout, k, m, bias.as_deref(), kernel)
            .map_err(|e| format_err!("{prefix}: {e}"))
    }
}

impl Expansion for FusedMatMul {
    fn name(&self) -> StaticName {
        FLOAT_MATMUL_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        f32_in_out(s, inputs, outputs, if self.packed.is_some() { 1 } else { 2 + self.bias as usize })?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        if let Some(mm) = &self.packed {
            let m = mm.m().to_dim();
            return s.given(&inputs[0].shape, move |s, x| {
                ensure!(!x.is_empty(), "{FLOAT_MATMUL_OP}: scalar input");
                let mut out = x.clone();
                *out.last_mut().expect("not empty") = m.clone();
                s.equals(&outputs[0].shape, ShapeFactoid::from(out))
            });
        }
        let m_axis = if self.trans_b { 0 } else { 1 };
        s.equals(&inputs[1].rank, 2)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, w| {
            ensure!(!x.is_empty(), "{FLOAT_MATMUL_OP}: scalar input");
            let mut out = x.clone();
            *out.last_mut().expect("not empty") = w[m_axis].clone();
            s.equals(&outputs[0].shape, ShapeFactoid::from(out))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mm = match &self.packed {
            Some(mm) => mm.clone(),
            None => Arc::new(self.pack(prefix, |i| const_input(model, prefix, inputs, i))?),
        };
        model.wire_node(prefix, FloatMatMul { mm }, &[inputs[0]])
    }
}

/// The typed operator: f32 `[.., K]` in, f32 `[.., M]` out.
#[derive(Debug, Clone)]
pub struct FloatMatMul {
    mm: Arc<MatMul>,
}

impl PartialEq for FloatMatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.mm, &other.mm)
    }
}
impl Eq for FloatMatMul {}

impl Op for FloatMatMul {
    fn name(&self) -> StaticName {
        "FloatMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{}->{} kernel {}", self.mm.k(), self.mm.m(), self.mm.kernel().name())])
    }

    op_as_typed_op!();
}

impl EvalOp for FloatMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let k = self.mm.k();
        let mut shape: TVec<usize> = x.shape().into();
        ensure!(shape.last() == Some(&k), "FloatMatMul: input {shape:?}, expected last axis {k}");
        let rows = shape[..shape.len() - 1].iter().product::<usize>();
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        // A product of a few rows (a timestep embedding's projection) is bound by reading its
        // weights from memory, about as long as 16 multiply-adds per weight: split by that.
        let work = (rows * k * self.mm.m()).max(16 * k * self.mm.m());
        let parallel = |jobs: usize, job: &(dyn Fn(usize) + Sync)| crate::threads::run_jobs(work, jobs, job);
        *shape.last_mut().expect("rank checked") = self.mm.m();
        // SAFETY: `run_into` writes every value of `y` (fkernels tests each form on a NaN-filled
        // buffer); on an error `y` is dropped unread.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        let mut view = y.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        self.mm.run_into(x, rows, Some(&parallel), out).map_err(|e| format_err!("FloatMatMul: {e}"))?;
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for FloatMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        let k = self.mm.k().to_dim();
        ensure!(shape.last() == Some(&k), "FloatMatMul: input {:?}, expected [.., {k}]", inputs[0].shape);
        *shape.last_mut().expect("not empty") = self.mm.m().to_dim();
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}
