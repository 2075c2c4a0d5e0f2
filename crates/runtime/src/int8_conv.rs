//! Our int8 convolution inside tract: an [`Int8Conv`] operator running [`edgediff_qconv`]
//! kernels, in two places:
//! - `EdgediffInt8Conv`, the node [`crate::int8_fusion`] makes of each
//!   `QuantizeLinear → ConvInteger → Cast → Mul [→ Add]` chain (`train quantize`'s default
//!   form): f32 in, f32 out.
//! - `QLinearConv` (`--form qoperator`): the parser is replaced by one that builds an
//!   [`Int8Conv`] (u8 in, u8 out) whenever the node has the shape edgediff's quantiser writes
//!   (one group, no dilation, explicit padding, constant symmetric int8 weights, per-tensor u8
//!   activation parameters); anything else goes to tract's own `QLinearConv`, unchanged.
//!
//! Why: tract 0.23 runs `QLinearConv` as an eager im2col into a generic i32 matmul followed by
//! separate requantisation ops, which made int8 slower than fp32 (issue 4, measured in
//! `models/sprites-eps.md`). The file stays standard ONNX, so ONNX Runtime runs the very same
//! model as our reference.

use std::sync::{Arc, OnceLock};

use edgediff_qconv::{Geometry, Input, Kernel, Output, QConv2d, QuantParams};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::cnn::Conv;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

type OpBuilder = fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// tract's ONNX framework that also parses our fused nodes (`EdgediffInt8Conv`,
/// `EdgediffInt8MatMul`, `EdgediffGroupNorm`, `EdgediffChannelAffine`) and, with `int8_kernels` (this CPU has a SIMD int8 kernel; see
/// [`crate::model::prepare`]), `QLinearConv` into [`Int8Conv`].
pub(crate) fn onnx_with_edgediff_ops(int8_kernels: bool) -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    if int8_kernels {
        onnx.op_register.insert("QLinearConv", parse_qlinear_conv);
    }
    onnx.op_register.insert(crate::int8_fusion::FUSED_OP, parse_fused);
    onnx.op_register.insert(crate::int8_fusion::FUSED_MATMUL_OP, crate::int8_matmul::parse);
    onnx.op_register.insert(crate::channel_affine::FUSED_OP, crate::channel_affine::parse);
    onnx.op_register.insert(crate::group_norm::FUSED_OP, crate::group_norm::parse);
    onnx
}

fn parse_fused(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let ints = |name: &str, default: Vec<i64>| {
        node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone()).unwrap_or(default)
    };
    let pads = ints("pads", vec![0; 4]);
    let strides = ints("strides", vec![1; 2]);
    ensure!(pads.len() == 4 && strides.len() == 2, "{}: pads {pads:?} strides {strides:?}", node.name);
    let u = |v: i64| usize::try_from(v).map_err(|_| format_err!("{}: negative pad or stride", node.name));
    Ok((
        expand(FusedInt8Conv {
            pads: [u(pads[0])?, u(pads[1])?, u(pads[2])?, u(pads[3])?],
            strides: [u(strides[0])?, u(strides[1])?],
            smoothed: crate::int8_fusion::is_smoothed(node),
            bias: node.input.len() == 6 + crate::int8_fusion::is_smoothed(node) as usize,
        }),
        vec![],
    ))
}

/// `EdgediffInt8Conv(x, x_scale, x_zero, w, scale[, bias][, multipliers])`, see
/// [`crate::int8_fusion`].
#[derive(Debug, Clone)]
struct FusedInt8Conv {
    /// Top, left, bottom, right.
    pads: [usize; 4],
    strides: [usize; 2],
    bias: bool,
    /// The last input multiplies `x` per channel before quantisation.
    smoothed: bool,
}

impl Expansion for FusedInt8Conv {
    fn name(&self) -> StaticName {
        crate::int8_fusion::FUSED_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 5 + self.bias as usize + self.smoothed as usize)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&inputs[3].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        s.given_2(&inputs[0].shape, &inputs[3].shape, move |s, x, w| {
            let (Ok(h), Ok(wd), Ok(kh), Ok(kw)) = (x[2].to_usize(), x[3].to_usize(), w[2].to_usize(), w[3].to_usize())
            else {
                return Ok(());
            };
            let [t, l, b, r] = self.pads;
            ensure!(
                h + t + b >= kh && wd + l + r >= kw,
                "{}: input smaller than the kernel",
                crate::int8_fusion::FUSED_OP
            );
            let ho = (h + t + b - kh) / self.strides[0] + 1;
            let wo = (wd + l + r - kw) / self.strides[1] + 1;
            s.equals(&outputs[0].shape, ShapeFactoid::from(tvec![x[0].clone(), w[0].clone(), ho.to_dim(), wo.to_dim()]))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let FusedParams { x_scale, x_zero, w, scale, bias, multipliers } =
            FusedParams::read(model, prefix, inputs, self.bias, self.smoothed, 4)?;
        let shape = w.shape();
        let [t, l, b, r] = self.pads;
        let geometry = Geometry {
            in_channels: shape[1],
            out_channels: shape[0],
            kernel_h: shape[2],
            kernel_w: shape[3],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            pad_top: t,
            pad_left: l,
            pad_bottom: b,
            pad_right: r,
        };
        let mut conv = QConv2d::integer(geometry, w.values(), x_scale, x_zero, scale, bias, Kernel::detect())
            .map_err(|e| format_err!("{prefix}: {e}"))?;
        if let Some(m) = multipliers {
            conv = conv.with_input_multipliers(m).map_err(|e| format_err!("{prefix}: {e}"))?;
        }
        model.wire_node(prefix, Int8Conv(Arc::new(conv)), &[inputs[0]])
    }
}

/// Input `i` of a node being wired, which must be a constant.
pub(crate) fn const_input(model: &TypedModel, prefix: &str, inputs: &[OutletId], i: usize) -> TractResult<Arc<Tensor>> {
    model.outlet_fact(inputs[i])?.konst.clone().with_context(|| format!("{prefix}: input {i} must be a constant"))
}

/// Constant input `i` as f32 values (scales, biases, per-channel parameters).
pub(crate) fn const_f32s(model: &TypedModel, prefix: &str, inputs: &[OutletId], i: usize) -> TractResult<Vec<f32>> {
    let t = const_input(model, prefix, inputs, i)?;
    Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

/// The constant inputs of a fused int8 node (`EdgediffInt8Conv`, `EdgediffInt8MatMul`):
/// `(x, x_scale, x_zero, w, scale[, bias][, multipliers])`, checked for what our kernels take.
pub(crate) struct FusedParams {
    pub x_scale: f32,
    pub x_zero: u8,
    pub w: Int8Weights,
    pub scale: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    /// Per input channel, applied to `x` before quantisation (a smoothed input).
    pub multipliers: Option<Vec<f32>>,
}

impl FusedParams {
    pub(crate) fn read(
        model: &TypedModel,
        prefix: &str,
        inputs: &[OutletId],
        bias: bool,
        smoothed: bool,
        weight_rank: usize,
    ) -> TractResult<FusedParams> {
        let konst = |i| const_input(model, prefix, inputs, i);
        let f32s = |i| const_f32s(model, prefix, inputs, i);
        let (x_scale, x_zero, w) = (f32s(1)?, konst(2)?, konst(3)?);
        ensure!(x_scale.len() == 1, "{prefix}: x_scale must be one value");
        ensure!(
            x_zero.datum_type().unquantized() == u8::datum_type() && x_zero.len() == 1,
            "{prefix}: x_zero must be one u8"
        );
        ensure!(
            w.datum_type().unquantized() == i8::datum_type() && w.rank() == weight_rank,
            "{prefix}: weights must be {weight_rank}-D int8"
        );
        // SAFETY: datum types checked just above.
        let (weights, x_zero) = unsafe { (w.as_slice_unchecked::<i8>(), x_zero.as_slice_unchecked::<u8>()[0]) };
        ensure!(!weights.contains(&i8::MIN), "{prefix}: weights must be symmetric int8 (no -128)");
        let multipliers = if smoothed { Some(f32s(5 + bias as usize)?) } else { None };
        let bias = if bias { Some(f32s(5)?) } else { None };
        Ok(FusedParams { x_scale: x_scale[0], x_zero, scale: f32s(4)?, bias, multipliers, w: Int8Weights(w) })
    }
}

/// Symmetric int8 weights (no -128), checked by [`FusedParams::read`].
pub(crate) struct Int8Weights(Arc<Tensor>);

impl Int8Weights {
    pub(crate) fn values(&self) -> &[i8] {
        // SAFETY: `FusedParams::read` checked the datum type.
        unsafe { self.0.as_slice_unchecked::<i8>() }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        self.0.shape()
    }
}

fn tract_qlinear_conv() -> OpBuilder {
    static BUILDER: OnceLock<OpBuilder> = OnceLock::new();
    *BUILDER
        .get_or_init(|| *tract_onnx::onnx().op_register.0.get("QLinearConv").expect("tract-onnx parses QLinearConv"))
}

fn parse_qlinear_conv(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (op, extra) = tract_qlinear_conv()(ctx, node)?;
    let conv = op
        .as_op()
        .downcast_ref::<Box<dyn Expansion>>()
        .and_then(|e| tract_onnx::tract_core::downcast_rs::Downcast::as_any(&**e).downcast_ref::<Conv>())
        .cloned();
    match conv {
        Some(conv) => Ok((expand(QLinearConvExpansion { conv }), extra)),
        None => Ok((op, extra)),
    }
}

/// Parsed `QLinearConv`: tract's own description of it, used for shape inference and as the
/// fallback when our kernel does not apply.
#[derive(Debug, Clone)]
struct QLinearConvExpansion {
    conv: Conv,
}

impl Expansion for QLinearConvExpansion {
    fn name(&self) -> StaticName {
        "QLinearConv".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.conv.rules(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        match self.int8_conv(model, inputs)? {
            Some(op) => model.wire_node(prefix, op, &[inputs[0]]),
            None => self.conv.wire(prefix, model, inputs),
        }
    }
}

impl QLinearConvExpansion {
    /// Our operator for this node, or `None` if the node is outside what it supports.
    fn int8_conv(&self, model: &TypedModel, inputs: &[OutletId]) -> TractResult<Option<Int8Conv>> {
        let c = &self.conv;
        let plain = c.data_format == DataFormat::NCHW
            && c.kernel_fmt == KernelFormat::OIHW
            && c.group.unwrap_or(1) == 1
            && c.dilations.as_ref().is_none_or(|d| d.iter().all(|&v| v == 1))
            && (inputs.len() == 8 || inputs.len() == 9);
        if !plain {
            return Ok(None);
        }
        let x = model.outlet_fact(inputs[0])?;
        if x.datum_type.unquantized() != u8::datum_type() || x.rank() != 4 {
            return Ok(None);
        }
        let konst = |i: usize| model.outlet_fact(inputs[i]).ok().and_then(|f| f.konst.clone());
        let consts: Option<Vec<Arc<Tensor>>> = (1..inputs.len()).map(konst).collect();
        let Some(consts) = consts else { return Ok(None) };
        let (x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero) =
            (&consts[0], &consts[1], &consts[2], &consts[3], &consts[4], &consts[5], &consts[6]);
        let bias = consts.get(7);
        let f32s = |t: &Tensor| {
            t.cast_to::<f32>().ok().and_then(|t| t.try_as_plain_ram().ok()?.as_slice::<f32>().ok().map(|s| s.to_vec()))
        };
        let u8_scalar = |t: &Tensor| {
            (t.len() == 1 && t.datum_type().unquantized() == u8::datum_type())
                .then(|| unsafe { t.as_slice_unchecked::<u8>()[0] })
        };
        let w_is_i8 = w.datum_type().unquantized() == i8::datum_type() && w.rank() == 4;
        let w_zero_is_0 = w_zero
            .cast_to::<i32>()
            .ok()
            .and_then(|t| Some(t.try_as_plain_ram().ok()?.as_slice::<i32>().ok()?.iter().all(|&v| v == 0)))
            == Some(true);
        let (Some(x_scale), Some(x_zero), Some(w_scales), Some(y_scale), Some(y_zero)) =
            (f32s(x_scale), u8_scalar(x_zero), f32s(w_scale), f32s(y_scale), u8_scalar(y_zero))
        else {
            return Ok(None);
        };
        if !w_is_i8 || !w_zero_is_0 || x_scale.len() != 1 || y_scale.len() != 1 {
            return Ok(None);
        }
        let shape = w.shape();
        let (m, cin, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
        let (before, after) = match &c.padding {
            PaddingSpec::Valid => (tvec![0, 0], tvec![0, 0]),
            PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => (b.clone(), a.clone()),
            _ => return Ok(None),
        };
        let strides = c.strides.clone().unwrap_or(tvec![1, 1]);
        if strides.len() != 2 {
            return Ok(None);
        }
        let geometry = Geometry {
            in_channels: cin,
            out_channels: m,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: strides[0],
            stride_w: strides[1],
            pad_top: before[0],
            pad_left: before[1],
            pad_bottom: after[0],
            pad_right: after[1],
        };
        let bias: Option<Vec<i32>> = match bias {
            Some(b) if b.datum_type() == i32::datum_type() && b.len() == m => {
                Some(b.try_as_plain_ram()?.as_slice::<i32>()?.to_vec())
            }
            Some(_) => return Ok(None),
            None => None,
        };
        let weights = unsafe { w.as_slice_unchecked::<i8>() };
        if weights.contains(&i8::MIN) {
            // -128 is outside symmetric int8; the Arm kernel's signed maths assumes it away.
            return Ok(None);
        }
        let params = QuantParams { x_scale: x_scale[0], x_zero, w_scales, y_scale: y_scale[0], y_zero };
        match QConv2d::qlinear(geometry, weights, bias.as_deref(), &params, Kernel::detect()) {
            Ok(conv) => Ok(Some(Int8Conv(Arc::new(conv)))),
            Err(_) => Ok(None),
        }
    }
}

/// Below this many multiply-accumulates per image a convolution runs on the calling thread.
/// Waking another worker costs 20–100 us on a 2-vCPU VM (more the longer it slept), and under
/// qemu the workers' spinning shows in the instruction counts. `examples/parallel_speedup.rs`
/// measured, on that VM: 37.7 M MACs (128 channels at 16x16) 1.0–1.2x faster on 2 threads,
/// 151 M (128 at 32x32) 1.1–1.7x, 604 M (256 at 32x32) 1.5–1.9x. 2^26 (67 M) keeps the
/// default 16x16 model's convs on one thread but the widest (256 to 128 channels, 75 M), and
/// splits the 35.7M model's 16x16 and 32x32 levels.
const PARALLEL_MACS: usize = 1 << 26;

/// The pool of the plan being run (`Network::plan` gives the plan an executor when `threads > 1`;
/// `CompactPlan` puts it in scope while it runs), if it has more than one thread and the work is
/// worth splitting. Threads change only who computes each band, never the bytes.
fn thread_pool(macs: usize) -> Option<std::sync::Arc<rayon::ThreadPool>> {
    use tract_linalg::multithread::{current_tract_executor, Executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 && macs >= PARALLEL_MACS => Some(pool),
        _ => None,
    }
}

/// Runs `job(i)` for every `i < jobs` on the calling thread and the other threads of `pool`,
/// each taking the next job from a shared counter until none are left.
///
/// Not rayon's `par_iter`: that splits the range in halves up front, so a worker that wakes
/// late holds its half while the caller waits. On a 2-vCPU VM the second worker sometimes
/// took longer to wake than the whole convolution (a band log showed every job of some convs on
/// one thread), and the same conv ran 1.2x to 1.9x faster on 2 threads from one run to the
/// next. With a counter the caller starts at once and a late worker only takes what is left.
/// Which thread computes a job never changes its bytes.
pub fn parallel_for(pool: &rayon::ThreadPool, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= jobs {
            break;
        }
        job(i);
    };
    pool.in_place_scope(|scope| {
        for _ in 1..pool.current_num_threads().min(jobs) {
            scope.spawn(|_| work());
        }
        work();
    });
}

/// The typed operator: NCHW in, NCHW out, weights packed once at load. Input u8 (already
/// quantised) or f32 (quantised here); output u8 (`QLinearConv`) or f32 (the fused form).
#[derive(Debug, Clone)]
pub struct Int8Conv(Arc<QConv2d>);

impl PartialEq for Int8Conv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Int8Conv {}

impl Op for Int8Conv {
    fn name(&self) -> StaticName {
        "Int8Conv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = self.0.geometry();
        Ok(vec![format!(
            "{}x{} {}->{} stride {} kernel {}",
            g.kernel_h,
            g.kernel_w,
            g.in_channels,
            g.out_channels,
            g.stride_h,
            self.0.kernel().name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Conv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(shape.len() == 4, "Int8Conv: input shape {shape:?}");
        let (n, h, w) = (shape[0], shape[2], shape[3]);
        let input = if x.datum_type() == f32::datum_type() {
            Input::F32(x.try_as_plain_ram()?.as_slice::<f32>()?)
        } else {
            ensure!(x.datum_type().unquantized() == u8::datum_type(), "Int8Conv: input is {:?}", x.datum_type());
            // SAFETY: u8 or quantised u8, checked just above.
            Input::U8(unsafe { x.as_slice_unchecked::<u8>() })
        };
        let (out, ho, wo) = match thread_pool(self.0.macs_per_image(h, w)) {
            Some(pool) => {
                let parallel = |jobs: usize, job: &(dyn Fn(usize) + Sync)| parallel_for(&pool, jobs, job);
                self.0.run_parallel(input, n, h, w, &parallel)
            }
            None => self.0.run(input, n, h, w),
        }
        .map_err(|e| format_err!("Int8Conv: {e}"))?;
        let dims = (n, self.0.geometry().out_channels, ho, wo);
        let t = match out {
            Output::U8(v) => tract_ndarray::Array4::from_shape_vec(dims, v)?.into_tensor(),
            Output::F32(v) => tract_ndarray::Array4::from_shape_vec(dims, v)?.into_tensor(),
        };
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Int8Conv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let shape = x.shape.as_concrete().context("Int8Conv needs a concrete input shape")?;
        ensure!(shape.len() == 4 && shape[1] == self.0.geometry().in_channels, "Int8Conv: input {shape:?}");
        let (ho, wo) =
            self.0.geometry().output_size(shape[2], shape[3]).context("Int8Conv: input smaller than kernel")?;
        let dims = [shape[0], self.0.geometry().out_channels, ho, wo];
        Ok(tvec!(if self.0.outputs_f32() { f32::fact(dims) } else { u8::fact(dims) }))
    }

    as_op!();
}
