//! tract's optimised f32 additions and products with a broadcast operand (the residual adds,
//! the timestep embedding added to every pixel), split over the plan's threads.
//!
//! tract runs them on the calling thread below a million values. With a second thread, the
//! operands were written by both cores, and one core reading all of them took longer than the
//! whole pass at one thread (the 35.7M-parameter int8 net's adds: 0.44-0.69 ms at one thread,
//! 0.85-1.14 ms at two). [`SplitBinary`] hands each thread a run of the values. Each value is
//! the same IEEE addition or product of the same two values, so the bytes are tract's; anything
//! else (other types, other strides, under 64K values, one thread) goes to tract's op itself.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{OptBinByScalar, OptBinUnicast};

/// The arithmetic of a [`SplitBinary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Mul,
}

/// How `b` lines up with `a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broadcast {
    /// `b` repeats over `a`'s leading axes: value `i` takes `b[i % b.len()]` (`OptBinUnicast`).
    Lockstep,
    /// One value of `b` per block of `a`'s trailing values: value `i` takes `b[i / (a.len() /
    /// b.len())]` (`OptBinByScalar`).
    PerBlock,
}

/// tract's `OptBinUnicast` or `OptBinByScalar` of an f32 `Add` or `Mul`, split over threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBinary {
    arith: Arith,
    broadcast: Broadcast,
    /// tract's op, for what this one does not take.
    tract: Box<dyn TypedOp>,
}

impl SplitBinary {
    /// Our op in place of `op` if it is one of tract's broadcast additions or products, else
    /// `op` back.
    pub fn for_op(op: Box<dyn TypedOp>) -> Result<SplitBinary, Box<dyn TypedOp>> {
        let (name, broadcast) = if let Some(unicast) = op.downcast_ref::<OptBinUnicast>() {
            (unicast.binop.name(), Broadcast::Lockstep)
        } else if let Some(by_scalar) = op.downcast_ref::<OptBinByScalar>() {
            (by_scalar.binop.name(), Broadcast::PerBlock)
        } else {
            return Err(op);
        };
        let arith = match name {
            "Add" => Arith::Add,
            "Mul" => Arith::Mul,
            _ => return Err(op),
        };
        Ok(SplitBinary { arith, broadcast, tract: op })
    }

    /// Values of `a` per value of `b` in a run, for f32 operands in natural strides that line
    /// up as `broadcast` says; `None` otherwise (tract's op takes them).
    fn period(&self, a: &Tensor, b: &Tensor) -> Option<usize> {
        let natural = |t: &Tensor| t.strides() == &*Tensor::natural_strides(t.shape());
        let f32s = a.datum_type() == f32::datum_type() && b.datum_type() == f32::datum_type();
        if !f32s || !natural(a) || !natural(b) || b.len() == 0 || !a.len().is_multiple_of(b.len()) {
            return None;
        }
        match self.broadcast {
            // b matches a's trailing axes past its leading ones.
            Broadcast::Lockstep => {
                let lead = a.rank().checked_sub(b.rank())?;
                let trailing = b.shape().iter().skip_while(|&&d| d == 1).count();
                (a.shape()[a.rank() - trailing..] == b.shape()[b.rank() - trailing..] && lead == 0).then_some(b.len())
            }
            // b matches a's leading axes, then is 1.
            Broadcast::PerBlock => {
                let unary = b.shape().iter().rev().take_while(|&&d| d == 1).count();
                let blocks = b.rank() - unary;
                (a.rank() == b.rank() && a.shape()[..blocks] == b.shape()[..blocks]).then(|| a.len() / b.len())
            }
        }
    }

    /// `values[i] ⊕= b[...]` in place, or `out[i] = a[i] ⊕ b[...]`, for the values of flat
    /// index `first..` (a run of the whole tensor), `b` walked run by run (no division per value).
    fn apply(&self, a: Option<&[f32]>, out: &mut [f32], b: &[f32], period: usize, first: usize) {
        match self.arith {
            Arith::Add => self.apply_with(a, out, b, period, first, |x, y| x + y),
            Arith::Mul => self.apply_with(a, out, b, period, first, |x, y| x * y),
        }
    }

    #[inline(always)]
    fn apply_with(
        &self,
        a: Option<&[f32]>,
        out: &mut [f32],
        b: &[f32],
        period: usize,
        first: usize,
        op: impl Fn(f32, f32) -> f32,
    ) {
        let mut at = 0;
        while at < out.len() {
            let global = first + at;
            let (len, operand) = match self.broadcast {
                Broadcast::Lockstep => {
                    let offset = global % period;
                    let len = (period - offset).min(out.len() - at);
                    (len, Operand::Values(&b[offset..offset + len]))
                }
                Broadcast::PerBlock => {
                    let len = ((global / period + 1) * period - global).min(out.len() - at);
                    (len, Operand::Scalar(b[global / period]))
                }
            };
            let out = &mut out[at..at + len];
            match (a.map(|a| &a[at..at + len]), operand) {
                (Some(x), Operand::Values(y)) => out.iter_mut().zip(x).zip(y).for_each(|((o, &x), &y)| *o = op(x, y)),
                (Some(x), Operand::Scalar(y)) => out.iter_mut().zip(x).for_each(|(o, &x)| *o = op(x, y)),
                (None, Operand::Values(y)) => out.iter_mut().zip(y).for_each(|(o, &y)| *o = op(*o, y)),
                (None, Operand::Scalar(y)) => out.iter_mut().for_each(|o| *o = op(*o, y)),
            }
            at += len;
        }
    }
}

/// The values of `b` one run of `a` takes.
enum Operand<'b> {
    Values(&'b [f32]),
    Scalar(f32),
}

impl Op for SplitBinary {
    fn name(&self) -> StaticName {
        self.tract.name()
    }

    op_as_typed_op!();
}

impl EvalOp for SplitBinary {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let pool = crate::threads::move_pool(inputs.first().map_or(0, |a| a.len()));
        let period = inputs.get(1).and_then(|b| self.period(&inputs[0], b));
        let (Some(pool), Some(period), 2) = (pool, period, inputs.len()) else {
            return self.tract.eval(ctx, inputs);
        };
        let (a, b) = args_2!(inputs);
        let b = b.try_as_plain_ram()?;
        let b = b.as_slice::<f32>()?;
        let chunk = a.len().div_ceil(4 * pool.current_num_threads()).max(1);
        // A shared `a` (the residual stream) is read where it is; an unshared one is overwritten.
        if a.is_exclusive() {
            let mut a = a.into_tensor();
            let mut view = a.try_as_plain_ram_mut()?;
            crate::threads::try_for_each_chunk(Some(&pool), view.as_slice_mut::<f32>()?, chunk, |i, part| {
                self.apply(None, part, b, period, i * chunk);
                Ok(())
            })?;
            return Ok(tvec!(a.into_tvalue()));
        }
        // SAFETY: every value is written below (the chunks cover the tensor).
        let mut out = unsafe { Tensor::uninitialized::<f32>(a.shape())? };
        let src = a.try_as_plain_ram()?;
        let src = src.as_slice::<f32>()?;
        let mut view = out.try_as_plain_ram_mut()?;
        crate::threads::try_for_each_chunk(Some(&pool), view.as_slice_mut::<f32>()?, chunk, |i, part| {
            self.apply(Some(&src[i * chunk..i * chunk + part.len()]), part, b, period, i * chunk);
            Ok(())
        })?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for SplitBinary {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tract.output_facts(inputs)
    }

    as_op!();
}
