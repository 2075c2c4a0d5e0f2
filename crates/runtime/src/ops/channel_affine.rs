//! `EdgediffChannelAffine`: `y = x · gamma[c] + beta[c]` over NCHW activations (the affine end of every GroupNorm our
//! exporter writes: `Mul(x, gamma[C,1,1]) → Add(·, beta[C,1,1])`, matched by
//! [`crate::rewrite::channel_affine`]) as one tract op.
//!
//! Why: tract 0.23.9 fuses that pair into an `OptBinChain` that evaluates it through a generic
//! ndarray broadcasting loop: 40% of an int8 evaluation and 26% of an fp32 one on the default
//! model (`examples/op_profile.rs`). The arithmetic is the ONNX one, a rounded product then a
//! rounded sum, never an FMA, so the output bits do not change (`tests/int8_kernels.rs` checks
//! the fp32 default model bit for bit against tract's graph).

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::{f32_in_out, CHANNEL_AFFINE_OP};
use crate::constants::const_f32s;

pub(crate) fn parse(_ctx: &ParsingContext, _node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(AffineExpansion), vec![]))
}

#[derive(Debug, Clone)]
struct AffineExpansion;

impl Expansion for AffineExpansion {
    fn name(&self) -> StaticName {
        CHANNEL_AFFINE_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        f32_in_out(s, inputs, outputs, 3)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let f32s = |i| const_f32s(model, prefix, inputs, i);
        let (g, b) = (f32s(1)?, f32s(2)?);
        let x = model.outlet_fact(inputs[0])?;
        let fits = x.rank() == 4 && x.shape[1].to_usize().ok() == Some(g.len()) && g.len() == b.len();
        if !fits {
            // Not NCHW with C channels of both: the two plain ops, as ONNX defines them (they
            // broadcast, or refuse shapes that do not).
            use tract_onnx::tract_core::ops::{change_axes::wire_with_rank_broadcast, math};
            let p = wire_with_rank_broadcast(format!("{prefix}.mul"), model, math::mul(), &[inputs[0], inputs[1]])?;
            return wire_with_rank_broadcast(prefix, model, math::add(), &[p[0], inputs[2]]);
        }
        let op = ChannelAffine { gamma: Arc::new(g), beta: Arc::new(b) };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

/// The typed op: `x` f32 `[N, C, H, W]`, per-channel `gamma` and `beta`.
#[derive(Debug, Clone)]
pub struct ChannelAffine {
    gamma: Arc<Vec<f32>>,
    beta: Arc<Vec<f32>>,
}

impl PartialEq for ChannelAffine {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.gamma, &other.gamma) && Arc::ptr_eq(&self.beta, &other.beta)
    }
}
impl Eq for ChannelAffine {}

impl Op for ChannelAffine {
    fn name(&self) -> StaticName {
        "ChannelAffine".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelAffine {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut x = inputs.into_iter().next().context("ChannelAffine: no input")?.into_tensor();
        let c = self.gamma.len();
        let plane = x.len() / (x.shape()[0] * c).max(1);
        let mut view = x.try_as_plain_ram_mut()?;
        let data = view.as_slice_mut::<f32>()?;
        for (i, chunk) in data.chunks_exact_mut(plane).enumerate() {
            let (g, b) = (self.gamma[i % c], self.beta[i % c]);
            for v in chunk {
                *v = *v * g + b;
            }
        }
        Ok(tvec!(x.into_tvalue()))
    }
}

impl TypedOp for ChannelAffine {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}
