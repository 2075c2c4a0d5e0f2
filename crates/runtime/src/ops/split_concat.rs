//! tract's `Concat` of f32 tensors (the decoder's skip connections) split over the plan's
//! threads.
//!
//! tract copies the inputs on the calling thread. With a second thread, the inputs were
//! written by both cores, and one core reading them all took three times as long as at one
//! thread (the 35.7M-parameter int8 net's concatenations: 0.38-0.62 ms at one thread, 1.3-1.8
//! ms at two). [`SplitConcat`] hands each thread a run of the output to fill. A copy: the bytes
//! are the inputs'; anything else (other types or strides, under 64K values, one thread) goes
//! to tract's op.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::TypedConcat;

/// tract's `TypedConcat` of f32 tensors, split over threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConcat {
    axis: usize,
    /// tract's op, for what this one does not take.
    tract: Box<dyn TypedOp>,
}

impl SplitConcat {
    /// Our op in place of `op` if it is tract's concatenation, else `op` back.
    pub fn for_op(op: Box<dyn TypedOp>) -> Result<SplitConcat, Box<dyn TypedOp>> {
        match op.downcast_ref::<TypedConcat>() {
            Some(concat) => Ok(SplitConcat { axis: concat.axis, tract: op }),
            None => Err(op),
        }
    }

    /// The output shape for f32 inputs in natural strides that agree off the axis; `None`
    /// otherwise (tract's op takes them, and reports what is wrong).
    fn output_shape(&self, inputs: &[TValue]) -> Option<TVec<usize>> {
        let first = inputs.first()?;
        let natural = |t: &Tensor| t.strides() == &*Tensor::natural_strides(t.shape());
        let fits = |t: &TValue| {
            t.datum_type() == f32::datum_type()
                && natural(t)
                && t.rank() == first.rank()
                && (0..t.rank()).all(|ax| ax == self.axis || t.shape()[ax] == first.shape()[ax])
        };
        if self.axis >= first.rank() || !inputs.iter().all(fits) {
            return None;
        }
        let mut shape: TVec<usize> = first.shape().into();
        shape[self.axis] = inputs.iter().map(|t| t.shape()[self.axis]).sum();
        Some(shape)
    }
}

/// Output values `first..first + out.len()` of the concatenation of `inputs` (each `outer`
/// blocks of its own length, side by side in every block of the output).
fn fill(inputs: &[&[f32]], outer: usize, first: usize, out: &mut [f32]) {
    let block: usize = inputs.iter().map(|v| v.len() / outer.max(1)).sum();
    let mut at = 0;
    while at < out.len() {
        let (o, mut within) = ((first + at) / block, (first + at) % block);
        // The input whose part of block `o` holds position `within` (one does: the inputs'
        // lengths add up to the block).
        let Some((input, len)) = inputs.iter().map(|v| (v, v.len() / outer)).find(|&(_, len)| {
            let here = within < len;
            within -= if here { 0 } else { len };
            here
        }) else {
            break;
        };
        let run = (len - within).min(out.len() - at);
        out[at..at + run].copy_from_slice(&input[o * len + within..o * len + within + run]);
        at += run;
    }
}

impl Op for SplitConcat {
    fn name(&self) -> StaticName {
        self.tract.name()
    }

    op_as_typed_op!();
}

impl EvalOp for SplitConcat {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape = self.output_shape(&inputs);
        let len = shape.as_ref().map_or(0, |s| s.iter().product::<usize>());
        let (Some(shape), Some(pool)) = (shape, crate::threads::move_pool(len)) else {
            return self.tract.eval(ctx, inputs);
        };
        let outer: usize = shape[..self.axis].iter().product();
        let views: Vec<_> = inputs.iter().map(|t| t.try_as_plain_ram()).collect::<TractResult<_>>()?;
        let slices: Vec<&[f32]> = views.iter().map(|v| v.as_slice::<f32>()).collect::<TractResult<_>>()?;
        // SAFETY: `fill` writes every value of the output (its runs cover each chunk).
        let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        let mut view = out.try_as_plain_ram_mut()?;
        let chunk = len.div_ceil(4 * pool.current_num_threads()).max(1);
        crate::threads::try_for_each_chunk(Some(&pool), view.as_slice_mut::<f32>()?, chunk, |i, part| {
            fill(&slices, outer, i * chunk, part);
            Ok(())
        })?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for SplitConcat {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tract.output_facts(inputs)
    }

    as_op!();
}
