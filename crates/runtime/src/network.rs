//! One planned network: a tract plan for a fixed batch size, evaluated step after step.
//!
//! The batch is fixed at planning time so tract can optimise for concrete shapes (it packs
//! weights and picks kernels once). Threads come from a private rayon pool per plan, in scope
//! while it runs (for our ops, and with the `tract-threads` feature for tract's kernels), so two
//! models in one process do not share a global setting.
//! tract's matmul splits work between threads without changing the summation order, so the
//! output is bit-identical for any thread count (tested).

use edgediff_core::meta::{self, ModelMeta};
use tract_onnx::prelude::*;

use crate::error::{guarded, tract_message, RuntimeError};
use crate::memory_plan::{activation_peak, MemoryLimit, MemoryPrediction};
use crate::ops::channel_affine::ChannelAffine;
use crate::ops::float_conv::FloatConv;
use crate::ops::float_matmul::FloatMatMul;
use crate::ops::{group_norm::GroupNorm, int8_conv::Int8Conv, int8_matmul::Int8MatMul};

/// Which graph input is which, by position in tract's input list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Sample,
    Timestep,
    ClassLabels,
}

/// Fixes every graph input to its type and shape for `batch` images (`sample` f32
/// [batch, C, H, W], `timestep` f32 [batch], `class_labels` i64 [batch]) and says which input
/// is which. Shared with tools that plan the graph differently (the quantiser's calibration
/// adds outputs; `examples/op_profile.rs` times each node).
pub fn fix_input_facts(
    mut graph: InferenceModel,
    meta: &ModelMeta,
    batch: usize,
) -> Result<(InferenceModel, Vec<Slot>), RuntimeError> {
    let load = |e: TractError| RuntimeError::Load(tract_message(&e));
    let (c, s) = (meta.channels, meta.image_size);
    let mut slots = Vec::new();
    let outlets = graph.input_outlets().map_err(load)?.to_vec();
    for (ix, outlet) in outlets.iter().enumerate() {
        let name = graph.node(outlet.node).name.clone();
        let (slot, fact) = match name.as_str() {
            meta::INPUT_SAMPLE => (Slot::Sample, InferenceFact::dt_shape(f32::datum_type(), tvec![batch, c, s, s])),
            meta::INPUT_TIMESTEP => (Slot::Timestep, InferenceFact::dt_shape(f32::datum_type(), tvec![batch])),
            meta::INPUT_CLASS_LABELS => (Slot::ClassLabels, InferenceFact::dt_shape(i64::datum_type(), tvec![batch])),
            other => return Err(RuntimeError::Interface(format!("unexpected input `{other}`"))),
        };
        graph = graph.with_input_fact(ix, fact).map_err(load)?;
        slots.push(slot);
    }
    Ok((graph, slots))
}

/// The input tensors of one evaluation, in `slots` order (`sample` is [batch, C, H, W]).
pub fn input_values(
    slots: &[Slot],
    meta: &ModelMeta,
    sample: &[f32],
    timesteps: &[f32],
    class_labels: &[i64],
) -> TractResult<TVec<TValue>> {
    let (b, c, s) = (timesteps.len(), meta.channels, meta.image_size);
    slots
        .iter()
        .map(|slot| {
            Ok(match slot {
                Slot::Sample => Tensor::from_shape(&[b, c, s, s], sample)?,
                Slot::Timestep => Tensor::from_shape(&[b], timesteps)?,
                Slot::ClassLabels => Tensor::from_shape(&[b], class_labels)?,
            }
            .into_tvalue())
        })
        .collect()
}

/// The memory limit a plan is checked against, and what the caller predicted besides the
/// activations (weights, its own buffers).
pub(crate) struct PlanBudget {
    pub limit: MemoryLimit,
    pub prediction: MemoryPrediction,
}

pub struct Network {
    pub meta: ModelMeta,
    /// The memory the run holds at least (see [`crate::memory_plan`]).
    pub predicted: MemoryPrediction,
    pub batch: usize,
    /// Threads the evaluations run on: those asked for, or 1 for a network too small to gain
    /// from more ([`SMALL_NETWORK_MACS`]).
    pub threads: usize,
    /// Convolutions running on our int8 kernels ([`crate::ops::int8_conv::Int8Conv`]).
    pub int8_convs: usize,
    /// Matrix products running on our int8 kernels ([`crate::ops::int8_matmul::Int8MatMul`]).
    pub int8_matmuls: usize,
    /// fp32 matrix products on our fixed-order kernel ([`crate::ops::float_matmul::FloatMatMul`]).
    pub float_matmuls: usize,
    /// fp32 convolutions on our fixed-order kernel ([`crate::ops::float_conv::FloatConv`]).
    pub float_convs: usize,
    /// GroupNorms running as [`crate::ops::group_norm::GroupNorm`].
    pub group_norms: usize,
    /// GroupNorm affines running as [`crate::ops::channel_affine::ChannelAffine`] (GroupNorms of
    /// another form than our exporter's, or [`crate::Ops::TractGroupNorm`]).
    pub channel_affines: usize,
    conditional: bool,
    slots: Vec<Slot>,
    plan: crate::compact_plan::CompactPlan,
}

impl Network {
    pub(crate) fn plan(
        graph: InferenceModel,
        meta: ModelMeta,
        conditional: bool,
        batch: usize,
        threads: usize,
        budget: PlanBudget,
    ) -> Result<Network, RuntimeError> {
        if batch == 0 {
            return Err(RuntimeError::Invalid("batch must be at least 1".into()));
        }
        let load = |e: TractError| RuntimeError::Load(tract_message(&e));
        let (c, s) = (meta.channels, meta.image_size);
        let (graph, slots) = fix_input_facts(graph, &meta, batch)?;
        let (typed, predicted) = typed_with_prediction(graph, budget.prediction)?;
        budget.limit.check(predicted.total(), &predicted.describe(batch))?;
        // Counted before optimising, while tract's own convolutions are still `Conv` nodes.
        let macs = conv_macs(&typed);
        let typed = guarded(|| typed.into_optimized()).map_err(RuntimeError::Load)?;
        let int8_convs = count_ops::<Int8Conv>(&typed);
        let int8_matmuls = count_ops::<Int8MatMul>(&typed);
        let float_matmuls = count_ops::<FloatMatMul>(&typed);
        let float_convs = count_ops::<FloatConv>(&typed);
        let channel_affines = count_ops::<ChannelAffine>(&typed);
        let group_norms = count_ops::<GroupNorm>(&typed);
        let want: TVec<usize> = tvec![batch, c, s, s];
        let out = typed.output_fact(0).map_err(load)?;
        let shape = out.shape.as_concrete().map(|d| d.iter().copied().collect::<TVec<usize>>());
        if shape.as_ref() != Some(&want) || out.datum_type != f32::datum_type() {
            return Err(RuntimeError::Interface(format!(
                "output is {:?} {:?}, expected f32 {:?} (same shape as `sample`)",
                out.datum_type, out.shape, want
            )));
        }
        // tract's ops in tract's order, without tract's graph (same bytes; see `compact_plan`).
        // A network too small for a second thread to pay for waking it runs on one (the bytes
        // are the same for any thread count).
        let threads = if macs < SMALL_NETWORK_MACS { 1 } else { threads.max(1) };
        let plan = guarded(|| crate::compact_plan::CompactPlan::new(typed, threads)).map_err(RuntimeError::Load)?;
        Ok(Network {
            meta,
            predicted,
            batch,
            threads,
            int8_convs,
            int8_matmuls,
            float_matmuls,
            float_convs,
            group_norms,
            channel_affines,
            conditional,
            slots,
            plan,
        })
    }

    /// True if the model takes `class_labels`.
    pub fn is_conditional(&self) -> bool {
        self.conditional
    }

    /// Evaluates the network on a whole batch: `sample` is `[batch, C, H, W]`, `timesteps`
    /// `[batch]`; `class_labels` is required by conditional models (`None` feeds the null
    /// class, index `class_names.len()`, an error for a model without one) and ignored otherwise.
    pub fn eval(
        &mut self,
        sample: &[f32],
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<Vec<f32>, String> {
        let (b, c, s) = (self.batch, self.meta.channels, self.meta.image_size);
        if sample.len() != b * c * s * s || timesteps.len() != b {
            return Err(format!(
                "expected {} sample values and {b} timesteps, got {} and {}",
                b * c * s * s,
                sample.len(),
                timesteps.len()
            ));
        }
        let null = match (class_labels, self.meta.null_label()) {
            (None, None) if self.conditional => {
                return Err(format!("model `{}` has no null class: give class labels", self.meta.model_name))
            }
            (_, null) => vec![null.unwrap_or(0); b],
        };
        let labels = class_labels.unwrap_or(&null);
        let inputs = input_values(&self.slots, &self.meta, sample, timesteps, labels).map_err(|e| tract_message(&e))?;
        let outputs = guarded(|| self.plan.run(inputs))?;
        let view = outputs[0].try_as_plain_ram().map_err(|e| tract_message(&e))?;
        let out = view.as_slice::<f32>().map_err(|e| tract_message(&e))?;
        Ok(out.to_vec())
    }
}

/// The graph typed for its fixed inputs, and `base` with the activations it holds at most at
/// once. Typing fixes every shape without allocating an activation, so the prediction comes
/// before the optimiser packs anything or a plan runs.
pub(crate) fn typed_with_prediction(
    graph: InferenceModel,
    base: MemoryPrediction,
) -> Result<(TypedModel, MemoryPrediction), RuntimeError> {
    let typed = guarded(|| graph.into_typed()).map_err(RuntimeError::Load)?;
    let activations = guarded(|| activation_peak(&typed)).map_err(RuntimeError::Load)?;
    Ok((typed, MemoryPrediction { activations, ..base }))
}

/// Below this many fp32 convolution multiply-adds per evaluation a network runs on one thread.
/// Its other workers are kept awake while it evaluates (see `team`), so even the default model
/// (60 M, 0.6 ms of convolutions) gains from a second thread: 0.95 -> 0.74 ms per evaluation
/// (`sampler --threads 2`, 2-vCPU VM). Its int8 file does not (0.57 -> 0.60 ms: its int8
/// convolutions split only above `threads::PARALLEL_MACS` each, and its 2.9 M fp32
/// multiply-adds are not enough), so int8 convolutions do not count.
const SMALL_NETWORK_MACS: u64 = 1 << 25;

/// The multiply-adds of the network's fp32 convolutions (ours and tract's) per evaluation, on
/// the typed graph before optimisation.
fn conv_macs(model: &TypedModel) -> u64 {
    let outputs = |n: &TypedNode| {
        n.outputs.first().and_then(|o| o.fact.shape.as_concrete()).map_or(0, |s| s.iter().product::<usize>()) as u64
    };
    let window = |n: &TypedNode| {
        if let Some(op) = n.op_as::<FloatConv>() {
            let g = op.geometry();
            g.in_channels * g.kernel[0] * g.kernel[1]
        } else if let Some(op) = n.op_as::<tract_onnx::tract_core::ops::cnn::Conv>() {
            op.input_channels() / op.group.max(1) * op.pool_spec.kernel_shape.iter().product::<usize>()
        } else {
            0
        }
    };
    model.nodes().iter().map(|n| outputs(n) * window(n) as u64).sum()
}

/// How many nodes of `model` run the op `O`.
fn count_ops<O: TypedOp>(model: &TypedModel) -> usize {
    model.nodes().iter().filter(|n| n.op_is::<O>()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of `models/` typed at batch 1 with `ops` running its convolutions.
    fn typed(name: &str, ops: crate::Ops) -> TypedModel {
        let path = format!("{}/../../models/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut proto = tract_onnx::onnx().proto_model_for_path(path).unwrap();
        let props = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let meta = ModelMeta::from_props(&props).unwrap();
        let model = crate::denoiser::prepare(&mut proto, ops, meta.float_order).0.model_for_proto_model(&proto);
        fix_input_facts(model.unwrap(), &meta, 1).unwrap().0.into_typed().unwrap()
    }

    /// Which ops run the convolutions does not change how many multiply-adds they are, so it
    /// cannot change the thread count either: a model in tract's float order splits as ours does.
    /// The default model is large enough for threads; its int8 file, whose int8 convolutions do
    /// not count, is not.
    #[test]
    fn conv_macs_count_tracts_convolutions_as_ours() {
        let ours = conv_macs(&typed("sprites-cond.onnx", crate::Ops::Edgediff));
        let tract_only = typed("sprites-cond.onnx", crate::Ops::TractOnly);
        assert!(count_ops::<FloatConv>(&tract_only) == 0);
        let tracts = conv_macs(&tract_only);
        assert!(ours > 50_000_000, "{ours} multiply-adds");
        assert!(ours >= SMALL_NETWORK_MACS);
        assert_eq!(tracts, ours);
        let int8 = conv_macs(&typed("sprites-cond-int8.onnx", crate::Ops::Edgediff));
        assert!(int8 > 1_000_000 && int8 < SMALL_NETWORK_MACS, "int8 file: {int8} fp32 multiply-adds");
    }
}
