//! `EdgediffUnary` and `EdgediffSoftmax`: the fp32 models' transcendental functions (sigmoid,
//! SiLU, sine, cosine, exp, tanh, softmax) computed the same way on every CPU
//! ([`edgediff_fkernels::math`], `libm` for sine and cosine), so they give the same bytes
//! everywhere; tract's versions are per-CPU polynomial kernels. Taken by
//! [`crate::rewrite::fixed_math`].

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use edgediff_fkernels::Kernel;

use super::{f32_in_out, FUNCTION_ATTR, SOFTMAX_OP, UNARY_OP};

/// The functions `EdgediffUnary` computes, by the name its `function` attribute holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Sigmoid,
    /// `x · sigmoid(x)`, ONNX `Mul(x, Sigmoid(x))`.
    Silu,
    Sin,
    Cos,
    Exp,
    Tanh,
}

impl Function {
    pub const ALL: [Function; 6] =
        [Function::Sigmoid, Function::Silu, Function::Sin, Function::Cos, Function::Exp, Function::Tanh];

    pub fn name(self) -> &'static str {
        match self {
            Function::Sigmoid => "sigmoid",
            Function::Silu => "silu",
            Function::Sin => "sin",
            Function::Cos => "cos",
            Function::Exp => "exp",
            Function::Tanh => "tanh",
        }
    }

    /// The function of ONNX operator `op_type`, if it is one of these (SiLU is a pattern).
    pub fn of_onnx(op_type: &str) -> Option<Function> {
        Some(match op_type {
            "Sigmoid" => Function::Sigmoid,
            "Sin" => Function::Sin,
            "Cos" => Function::Cos,
            "Exp" => Function::Exp,
            "Tanh" => Function::Tanh,
            _ => return None,
        })
    }

    /// Applies the function to every value: exp and what follows from it on
    /// [`edgediff_fkernels::math`] (vectorised), sine and cosine from `libm` (the timestep
    /// embedding's few values).
    fn apply(self, kernel: Kernel, values: &mut [f32]) {
        use edgediff_fkernels::math;
        match self {
            Function::Sigmoid => math::sigmoid_in_place(kernel, values),
            Function::Silu => math::silu_in_place(kernel, values),
            Function::Sin => values.iter_mut().for_each(|v| *v = libm::sinf(*v)),
            Function::Cos => values.iter_mut().for_each(|v| *v = libm::cosf(*v)),
            Function::Exp => math::exp_in_place(kernel, values),
            Function::Tanh => math::tanh_in_place(kernel, values),
        }
    }
}

pub(crate) fn parse_unary(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let name = node.attribute.iter().find(|a| a.name == FUNCTION_ATTR).map(|a| a.s.as_slice()).unwrap_or_default();
    let f = Function::ALL.into_iter().find(|f| f.name().as_bytes() == name);
    let f = f.with_context(|| format!("{}: unknown function {:?}", node.name, String::from_utf8_lossy(name)))?;
    Ok((expand(Elementwise(Kind::Unary(f))), vec![]))
}

pub(crate) fn parse_softmax(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(Elementwise(Kind::Softmax)), vec![]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Unary(Function),
    /// Along the last axis.
    Softmax,
}

/// Both ops: one f32 input, an output of its shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Elementwise(Kind);

impl Expansion for Elementwise {
    fn name(&self) -> StaticName {
        match self.0 {
            Kind::Unary(_) => UNARY_OP.into(),
            Kind::Softmax => SOFTMAX_OP.into(),
        }
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        f32_in_out(s, inputs, outputs, 1)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let kernel = crate::kernels::fp32_for_op()?;
        model.wire_node(prefix, FixedMath(self.0, kernel), &[inputs[0]])
    }
}

/// Values per job when threads share a function's values.
const CHUNK: usize = 1 << 14;

/// The typed op.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FixedMath(Kind, Kernel);

impl Op for FixedMath {
    fn name(&self) -> StaticName {
        match self.0 {
            Kind::Unary(f) => {
                let name = f.name();
                format!("Fixed{}{}", name[..1].to_uppercase(), &name[1..]).into()
            }
            Kind::Softmax => "FixedSoftmax".into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for FixedMath {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut x = inputs.into_iter().next().context("FixedMath: no input")?.into_tensor();
        let last = x.shape().last().copied().unwrap_or(1);
        {
            let mut view = x.try_as_plain_ram_mut()?;
            let values = view.as_slice_mut::<f32>()?;
            // Chunks of whole rows (whole values for a function) that threads may share.
            let chunk = match self.0 {
                Kind::Unary(_) => CHUNK,
                Kind::Softmax => (CHUNK / last.max(1)).max(1) * last.max(1),
            };
            // A function: about 8 multiply-accumulates' time per value (exp and a division). A
            // softmax reads each row three times (maximum, exponentials, division): split as
            // an element-wise pass is (an attention's 256 x 256 scores take 90 us on one core).
            let pool = match self.0 {
                Kind::Unary(_) => crate::threads::fp32_thread_pool(8 * values.len().div_ceil(chunk) * chunk),
                Kind::Softmax => crate::threads::values_pool(values.len()),
            };
            crate::threads::try_for_each_chunk(pool.as_deref(), values, chunk, |_, part| {
                match self.0 {
                    Kind::Unary(f) => f.apply(self.1, part),
                    Kind::Softmax => edgediff_fkernels::math::softmax_rows(self.1, part, last),
                }
                Ok(())
            })?;
        }
        Ok(tvec!(x.into_tvalue()))
    }
}

impl TypedOp for FixedMath {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_match_their_definitions() {
        let xs = [-20.0f32, -3.5, -0.25, 0.0, 0.75, 4.0, 30.0];
        let run = |f: Function| {
            let mut v = xs;
            f.apply(Kernel::Portable, &mut v);
            v
        };
        let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-6 * b.abs().max(1.0);
        let (sig, silu, sin, cos, tanh) =
            (run(Function::Sigmoid), run(Function::Silu), run(Function::Sin), run(Function::Cos), run(Function::Tanh));
        for (i, &x) in xs.iter().enumerate() {
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!(close(sig[i], s) && close(silu[i], x as f64 * s), "sigmoid, silu({x})");
            assert!(close(sin[i], (x as f64).sin()) && close(cos[i], (x as f64).cos()), "sin, cos({x})");
            assert!(close(tanh[i], (x as f64).tanh()), "tanh({x})");
        }
    }
}
