//! tract's axis move (`AxisOp::Move`) of an f32 tensor on [`edgediff_fkernels::transpose_rows`]:
//! attention turns an image's channels into tokens and back with it, and tract's generic move
//! took as long as the product that read its result (33-42 us for 256x256 values), on one thread.
//! This op transposes in register blocks and, from 64K values, splits the result's rows over the
//! plan's threads. A copy: the bytes are the input's; anything else goes to tract's op.

use edgediff_fkernels::{transpose_rows, Kernel, TransposeShape};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// tract's `AxisOp::Move(from, to)` of f32 tensors, as a batched transpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transpose {
    from: usize,
    to: usize,
    /// Chosen when the plan is made, as the other ops' kernels are when they are wired.
    kernel: Kernel,
    /// tract's op, for what this one does not take.
    tract: Box<dyn TypedOp>,
}

impl Transpose {
    /// Our op in place of `op` if it is tract's axis move, else `op` back (also where no fp32
    /// kernel can be chosen: a bad kernel setting is refused when the model loads).
    pub fn for_op(op: Box<dyn TypedOp>) -> Result<Transpose, Box<dyn TypedOp>> {
        match (op.downcast_ref::<AxisOp>(), crate::kernels::fp32()) {
            (Some(&AxisOp::Move(from, to)), Ok(kernel)) if from != to => Ok(Transpose { from, to, kernel, tract: op }),
            _ => Err(op),
        }
    }

    /// The move as a transpose of `shape`: the moved axis and the axes it passes are the two
    /// sides of a matrix, the axes before it the batch and those after it each element.
    fn shape(&self, shape: &[usize]) -> Option<TransposeShape> {
        let (low, high) = (self.from.min(self.to), self.from.max(self.to));
        if high >= shape.len() {
            return None;
        }
        let product = |axes: &[usize]| axes.iter().product::<usize>();
        let (outer, inner) = (product(&shape[..low]), product(&shape[high + 1..]));
        // Moving `from` later: its rows of (the axes up to `to`); moving it earlier: the axes
        // from `to` on are the rows of its values.
        let (rows, cols) = match self.from < self.to {
            true => (shape[low], product(&shape[low + 1..=high])),
            false => (product(&shape[low..high]), shape[high]),
        };
        Some(TransposeShape { outer, rows, cols, inner })
    }
}

impl Op for Transpose {
    fn name(&self) -> StaticName {
        self.tract.name()
    }

    op_as_typed_op!();
}

impl EvalOp for Transpose {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let natural = x.strides() == &*Tensor::natural_strides(x.shape());
        let shape = self.shape(x.shape()).filter(|s| natural && x.datum_type() == f32::datum_type() && !s.is_empty());
        let Some(shape) = shape else { return self.tract.eval(ctx, inputs) };
        let mut out_shape: TVec<usize> = x.shape().into();
        let moved = out_shape.remove(self.from);
        out_shape.insert(self.to, moved);
        // SAFETY: every value is written below (the runs of rows cover the result).
        let mut y = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let src = x.try_as_plain_ram()?;
        let src = src.as_slice::<f32>()?;
        let mut view = y.try_as_plain_ram_mut()?;
        let pool = crate::threads::move_pool(shape.len());
        let row_len = shape.rows * shape.inner;
        let jobs = pool.as_ref().map_or(1, |p| 4 * p.current_num_threads());
        // Runs of whole 8-row blocks where there are enough rows.
        let rows_per_job = shape.out_rows().div_ceil(jobs).next_multiple_of(8).min(shape.out_rows()).max(1);
        crate::threads::try_for_each_chunk(
            pool.as_deref(),
            view.as_slice_mut::<f32>()?,
            rows_per_job * row_len,
            |i, part| {
                let first = i * rows_per_job;
                transpose_rows(self.kernel, src, shape, first..first + part.len() / row_len, part)
                    .map_err(|e| format_err!("Transpose: {e}"))
            },
        )?;
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Transpose {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tract.output_facts(inputs)
    }

    as_op!();
}
