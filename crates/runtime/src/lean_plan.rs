//! The optimised tract model, re-held in a smaller graph for running.
//!
//! tract's plan keeps its whole optimised model for the plan's life, and in tract 0.23.9 a
//! `TypedNode` takes 1,624 bytes whatever it does: each node holds its outputs in a
//! `SmallVec<[Outlet<TypedFact>; 4]>`, and a `TypedFact` (symbolic shape, constant and
//! uniform values, ROI expressions…) is 304 bytes. A reshape (`IntoShape`) also keeps
//! the `AxesMapping` the optimiser used, about 5 KB. On the 1.5 MiB default int8 model that
//! is 0.6 MiB of the plan, more than issue 4's whole 25% allowance over weights and
//! activations.
//!
//! None of it is needed once the model is optimised: running a plan only needs each node's
//! op, its inputs and successors, and (to check the inputs) each tensor's type and shape.
//! tract's `SimplePlan` is generic over the fact type, so [`lean`] moves the same ops into a
//! `Graph<LeanFact, Box<dyn TypedOp>>` whose fact is a datum type and a concrete shape, and
//! replaces each `IntoShape` by [`Reshape`], which does the same thing without the mapping.
//! The ops are moved, not copied, and evaluate exactly as before: the bytes do not change.

use std::borrow::Cow;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::{Fact, Graph, Node, Outlet};
use tract_onnx::tract_core::ops::change_axes::IntoShape;

/// What a lean plan knows of a tensor: its element type and its concrete shape (boxed: an
/// inline `TVec` would take 48 bytes in each of a node's four inline outlets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeanFact {
    pub datum_type: DatumType,
    pub shape: Box<[usize]>,
}

impl Fact for LeanFact {
    fn to_typed_fact(&self) -> TractResult<Cow<'_, TypedFact>> {
        Ok(Cow::Owned(self.datum_type.fact(&*self.shape)))
    }

    fn matches(&self, t: &Tensor, _symbols: Option<&SymbolValues>) -> TractResult<bool> {
        Ok(t.datum_type() == self.datum_type && t.shape() == &*self.shape)
    }

    fn compatible_with(&self, other: &dyn Fact) -> bool {
        other.downcast_ref::<LeanFact>() == Some(self)
    }

    fn datum_type(&self) -> Option<DatumType> {
        Some(self.datum_type)
    }
}

/// A model to run: tract's optimised ops over [`LeanFact`]s.
pub type LeanModel = Graph<LeanFact, Box<dyn TypedOp>>;
/// The plan of a [`LeanModel`].
pub type LeanPlan = SimplePlan<LeanFact, Box<dyn TypedOp>>;
/// A running state of a [`LeanPlan`].
pub type LeanState = SimpleState<LeanFact, Box<dyn TypedOp>>;
/// One node of a [`LeanModel`] (what [`lean`] saves is `size_of::<TypedNode>() -
/// size_of::<LeanNode>()` per node).
pub type LeanNode = Node<LeanFact, Box<dyn TypedOp>>;

/// Moves the ops of an optimised `model` into a [`LeanModel`]. Every tensor shape must be
/// concrete (the runtime fixes the batch before optimising); node names are kept for errors.
pub fn lean(mut model: TypedModel) -> TractResult<LeanModel> {
    let old = std::mem::take(&mut model.nodes);
    // Collected into a new vector: collecting in place would keep the old table's allocation
    // (1,624 bytes a node) for the smaller nodes.
    let mut nodes = Vec::with_capacity(old.len());
    for node in old {
        nodes.push(lean_node(node)?);
    }
    Ok(Graph {
        nodes,
        inputs: std::mem::take(&mut model.inputs),
        outputs: std::mem::take(&mut model.outputs),
        outlet_labels: Default::default(),
        properties: Default::default(),
        symbols: model.symbols.clone(),
    })
}

fn lean_node(node: TypedNode) -> TractResult<LeanNode> {
    let mut outputs = TVec::new();
    for o in node.outputs {
        let shape = o
            .fact
            .shape
            .as_concrete()
            .with_context(|| format!("node {}: shape {:?} is not concrete", node.name, o.fact.shape))?;
        outputs.push(Outlet {
            fact: LeanFact { datum_type: o.fact.datum_type, shape: shape.to_vec().into_boxed_slice() },
            successors: o.successors,
        });
    }
    let op = match node.op.downcast_ref::<IntoShape>() {
        Some(reshape) => Box::new(Reshape::from(reshape)) as Box<dyn TypedOp>,
        None => node.op,
    };
    Ok(Node { id: node.id, name: node.name, inputs: node.inputs, op, outputs })
}

/// tract's `IntoShape` without the axes mapping it keeps for the optimiser: gives the input
/// buffer a new shape and strides, no copy (the same two lines as `IntoShape::eval`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reshape {
    len: usize,
    dims: TVec<usize>,
    strides: TVec<isize>,
}

impl From<&IntoShape> for Reshape {
    fn from(op: &IntoShape) -> Reshape {
        Reshape { len: op.len, dims: op.dims.clone(), strides: op.strides.clone() }
    }
}

impl Op for Reshape {
    fn name(&self) -> StaticName {
        "Reshape".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Reshape {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut input = args_1!(inputs).into_tensor();
        ensure!(input.len() == self.len, "Reshape: {} values, expected {}", input.len(), self.len);
        // SAFETY: same element count, and `dims`/`strides` are the contiguous geometry tract's
        // IntoShape computed for this shape.
        unsafe { input.set_geometry_unchecked(&self.dims, &self.strides) };
        Ok(tvec!(input.into_tvalue()))
    }
}

impl TypedOp for Reshape {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(&*self.dims)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{fix_input_facts, input_values};
    use edgediff_core::meta::ModelMeta;

    /// The shipped int8 default, planned as the sampler plans it, on tract's own plan and on
    /// the lean one: same node count, every `IntoShape` replaced, bit-identical outputs.
    #[test]
    fn lean_plan_gives_tracts_bits() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/sprites-cond-int8.onnx");
        let mut proto = tract_onnx::onnx().proto_model_for_path(path).unwrap();
        let props = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let meta = ModelMeta::from_props(&props).unwrap();
        let model = crate::model::prepare(&mut proto, crate::Ops::Edgediff).model_for_proto_model(&proto).unwrap();
        let (model, slots) = fix_input_facts(model, &meta, 2).unwrap();
        let optimized = model.into_optimized().unwrap();
        let reshapes = optimized.nodes.iter().filter(|n| n.op_is::<IntoShape>()).count();
        assert!(reshapes > 0, "the attention blocks reshape");
        let tract_plan = optimized.clone().into_runnable().unwrap();
        let lean_model = lean(optimized).unwrap();
        assert_eq!(lean_model.nodes.len(), tract_plan.model().nodes.len());
        assert_eq!(lean_model.nodes.iter().filter(|n| n.op_is::<Reshape>()).count(), reshapes);
        assert!(lean_model.nodes.iter().all(|n| !n.op_is::<IntoShape>()));
        assert!(std::mem::size_of::<LeanNode>() * 2 < std::mem::size_of::<TypedNode>());
        let lean_plan = std::sync::Arc::new(LeanPlan::build(lean_model, &Default::default()).unwrap());
        let mut noise = vec![0f32; 2 * meta.image_len()];
        edgediff_core::GaussianStream::new(3).fill(&mut noise);
        let inputs = input_values(&slots, &meta, &noise, &[999.0, 321.0], &[7, 2]).unwrap();
        let a = tract_plan.run(inputs.clone()).unwrap();
        let b = lean_plan.run(inputs).unwrap();
        let bits = |v: &TValue| {
            v.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(bits(&a[0]), bits(&b[0]));
    }
}
