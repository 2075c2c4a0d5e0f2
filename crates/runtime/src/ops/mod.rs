//! Our operators inside tract, one file each, and the ONNX framework that parses them.
//!
//! The graph rewrites of [`crate::rewrite`] turn chains of standard ONNX nodes into single nodes
//! of the op types named here; [`onnx_with_edgediff_ops`] registers a parser for each, which
//! builds the operator when tract reads the graph. Each op computes the same bits as tract on the
//! chain it replaces.

pub mod batch_matmul;
pub mod channel_affine;
pub mod fixed_math;
pub mod float_conv;
pub mod float_matmul;
mod fused_add;
pub mod group_norm;
pub mod int8_conv;
pub mod int8_matmul;
mod qlinear_conv;
pub mod reshape;
pub mod split_binary;
pub mod split_concat;
pub mod transpose;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// A fused int8 convolution ([`int8_conv`]).
pub const INT8_CONV_OP: &str = "EdgediffInt8Conv";
/// A fused int8 matrix product, the attention projections ([`int8_matmul`]).
pub const INT8_MATMUL_OP: &str = "EdgediffInt8MatMul";
/// An fp32 convolution with constant weights, summed in one fixed order ([`float_conv`]).
pub const FLOAT_CONV_OP: &str = "EdgediffConv";
/// An fp32 matrix product with constant weights, summed in one fixed order ([`float_matmul`]).
pub const FLOAT_MATMUL_OP: &str = "EdgediffMatMul";
/// A whole GroupNorm ([`group_norm`]).
pub const GROUP_NORM_OP: &str = "EdgediffGroupNorm";
/// A per-channel `x · gamma + beta` ([`channel_affine`]).
pub const CHANNEL_AFFINE_OP: &str = "EdgediffChannelAffine";

/// The attribute a fused int8 node carries when its last input multiplies `x` per channel
/// before quantisation (a smoothed input, `train quantize --smooth`).
pub const SMOOTHED_ATTR: &str = "smoothed";

/// An fp32 function (sigmoid, SiLU, sine, ...) computed with `libm` ([`fixed_math`]).
pub const UNARY_OP: &str = "EdgediffUnary";
/// A last-axis softmax computed with `libm` ([`fixed_math`]).
pub const SOFTMAX_OP: &str = "EdgediffSoftmax";
/// The matrix product of two computed f32 tensors ([`batch_matmul`]).
pub const BATCH_MATMUL_OP: &str = "EdgediffBatchMatMul";
/// The attribute of an `EdgediffUnary` naming its function.
pub const FUNCTION_ATTR: &str = "function";

/// The attribute on an `EdgediffGroupNorm` (set for fp32 models) that asks for our own
/// arithmetic, the same on every CPU, instead of tract's kernels.
pub const FIXED_ORDER_ATTR: &str = "fixed_order";

/// The attribute on a fixed-order `EdgediffGroupNorm` whose output goes through SiLU (the
/// `EdgediffUnary` that read it, folded in).
pub const SILU_ATTR: &str = "silu";

/// The attribute of an `EdgediffMatMul` whose weights are `[M, K]` (`Gemm` with `transB = 1`).
pub const TRANS_B_ATTR: &str = "trans_b";

/// How tract's ONNX framework builds an operator from a node.
pub(crate) type OpParser = fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// tract's ONNX framework that also parses our fused nodes (`EdgediffInt8Conv`,
/// `EdgediffInt8MatMul`, `EdgediffConv`, `EdgediffMatMul`, `EdgediffGroupNorm`,
/// `EdgediffChannelAffine`) and, with `int8_kernels` (this CPU has a SIMD int8 kernel; see
/// [`crate::model::prepare`]), `QLinearConv` into [`Int8Conv`].
pub(crate) fn onnx_with_edgediff_ops(int8_kernels: bool) -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    if int8_kernels {
        onnx.op_register.insert("QLinearConv", qlinear_conv::parse_qlinear_conv);
    }
    onnx.op_register.insert(INT8_CONV_OP, int8_conv::parse);
    onnx.op_register.insert(INT8_MATMUL_OP, int8_matmul::parse);
    onnx.op_register.insert(FLOAT_CONV_OP, float_conv::parse);
    onnx.op_register.insert(UNARY_OP, fixed_math::parse_unary);
    onnx.op_register.insert(SOFTMAX_OP, fixed_math::parse_softmax);
    onnx.op_register.insert(BATCH_MATMUL_OP, batch_matmul::parse);
    onnx.op_register.insert(FLOAT_MATMUL_OP, float_matmul::parse);
    onnx.op_register.insert(CHANNEL_AFFINE_OP, channel_affine::parse);
    onnx.op_register.insert(GROUP_NORM_OP, group_norm::parse);
    onnx
}

/// The inference rules every op here starts with: `arity` inputs, one output, the first input
/// and the output f32.
pub(crate) fn f32_in_out<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    arity: usize,
) -> InferenceResult {
    check_input_arity(inputs, arity)?;
    check_output_arity(outputs, 1)?;
    s.equals(&inputs[0].datum_type, f32::datum_type())?;
    s.equals(&outputs[0].datum_type, f32::datum_type())
}

/// True if a fused int8 node carries the [`SMOOTHED_ATTR`].
pub(crate) fn is_smoothed(node: &NodeProto) -> bool {
    node.attribute.iter().any(|a| a.name == SMOOTHED_ATTR && a.i == 1)
}

/// A tensor of `shape` filled with Gaussian values from `seed` (the tests' inputs).
#[cfg(test)]
pub(crate) fn gaussian_tensor(shape: &[usize], seed: u64) -> tract_onnx::prelude::TValue {
    use tract_onnx::prelude::*;
    let mut v = vec![0f32; shape.iter().product()];
    edgediff_core::GaussianStream::new(seed).fill(&mut v);
    Tensor::from_shape(shape, &v).expect("as many values as the shape holds").into_tvalue()
}

/// The bit patterns of the first output of `model` (optimised) run by tract's plan on `inputs`.
#[cfg(test)]
pub(crate) fn first_output_bits(
    model: tract_onnx::prelude::TypedModel,
    inputs: tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>,
) -> Vec<u32> {
    let out = model.into_runnable().expect("a runnable model").run(inputs).expect("the model runs");
    let values = out[0].try_as_plain_ram().expect("plain values");
    values.as_slice::<f32>().expect("f32 values").iter().map(|v| v.to_bits()).collect()
}
