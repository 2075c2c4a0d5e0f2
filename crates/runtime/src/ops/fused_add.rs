//! Taking an `Add` into the convolution before it ([`super::float_conv::FloatConv`],
//! [`super::int8_conv::Int8Conv`]): where the convolution's only reader adds a residual
//! (`[n|1, M, oh, ow]`) or one value per image and channel (`[n|1, M, 1, 1]`, a timestep
//! embedding), the convolution adds it after the bias as it writes its outputs (the bytes of
//! the separate add), and the output is not written, read back and written again.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::Add;

/// What a convolution's second input holds, added to its outputs after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddendKind {
    /// One value per output: `[n or 1, M, oh, ow]`.
    Outputs,
    /// One value per image and output channel: `[n or 1, M, 1, 1]`.
    Channels,
}

impl AddendKind {
    /// How `info` describes a convolution adding this.
    pub(crate) fn describe(kind: Option<AddendKind>) -> &'static str {
        match kind {
            None => "",
            Some(AddendKind::Outputs) => ", adding a residual",
            Some(AddendKind::Channels) => ", adding one value per channel",
        }
    }
}

/// The values of a convolution's addend input (`inputs[1]`) where it adds one (`kind`), with
/// their kind; an error naming `op` where the input is missing or not f32.
pub(crate) fn addend_values<'t>(
    op: &str,
    kind: Option<AddendKind>,
    inputs: &'t [TValue],
) -> TractResult<Option<(AddendKind, &'t [f32])>> {
    let Some(kind) = kind else { return Ok(None) };
    let values = inputs.get(1).with_context(|| format!("{op}: its addend input is missing"))?;
    Ok(Some((kind, values.try_as_plain_ram()?.as_slice::<f32>()?)))
}

/// The `Add` that is the only reader of `node`'s f32 output (not a model output), with its
/// other input and how the convolution would add it; `None` where there is none to take.
pub(crate) fn add_to_take<'m>(
    model: &'m TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(&'m TypedNode, OutletId, AddendKind)>> {
    let out = OutletId::new(node.id, 0);
    if model.outputs.contains(&out) {
        return Ok(None);
    }
    let Some(add) = model.single_succ(node.id)? else { return Ok(None) };
    let is_add = add.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<Add>() && op.1.is_none());
    let others: TVec<OutletId> = add.inputs.iter().copied().filter(|&i| i != out).collect();
    let (true, [other]) = (is_add && add.inputs.len() == 2, others.as_slice()) else { return Ok(None) };
    let (out_fact, other_fact) = (model.outlet_fact(out)?, model.outlet_fact(*other)?);
    let f32s = out_fact.datum_type == f32::datum_type() && other_fact.datum_type == f32::datum_type();
    if !f32s || model.outlet_fact(add.id.into())?.shape != out_fact.shape {
        return Ok(None);
    }
    Ok(kind(out_fact, other_fact).map(|kind| (add, *other, kind)))
}

/// How `other` is added to a convolution's output `out`, if the output pass can: the output's
/// channels, and its pixels or one value per channel, for each image or for all alike.
fn kind(out: &TypedFact, other: &TypedFact) -> Option<AddendKind> {
    let (out, other) = (out.shape.as_concrete()?, other.shape.as_concrete()?);
    let ([n, m, oh, ow], [on, om, oy, ox]) = (out, other) else { return None };
    if !(*on == 1 || on == n) || om != m {
        return None;
    }
    match (*oy, *ox) {
        (1, 1) => Some(AddendKind::Channels),
        (y, x) if (y, x) == (*oh, *ow) => Some(AddendKind::Outputs),
        _ => None,
    }
}

/// The patch that wires `op` (the convolution, now adding) on `node`'s input and `other` in
/// place of `add`.
pub(crate) fn take_add(
    model: &TypedModel,
    node: &TypedNode,
    add: &TypedNode,
    other: OutletId,
    op: impl Into<Box<dyn TypedOp>>,
) -> TractResult<TypedModelPatch> {
    let mut patch = TypedModelPatch::default();
    let inputs = patch.taps(model, &[node.inputs[0], other])?;
    let fused = patch.wire_node(&node.name, op.into(), &inputs)?;
    patch.shunt_outside(model, add.id.into(), fused[0])?;
    Ok(patch)
}
