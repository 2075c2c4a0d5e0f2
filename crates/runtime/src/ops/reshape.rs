//! tract's `IntoShape` without the optimiser's axes mapping, for running.
//!
//! An `IntoShape` keeps the `AxesMapping` the optimiser used to place it, about 5 KB per
//! reshape in tract 0.23.9, for the life of the model. [`crate::compact_plan`] swaps each one
//! for a [`Reshape`], which runs the same two lines.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::IntoShape;

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
