//! A denoiser, the network a diffusion model samples with (it predicts ε, v or x0 from a noisy
//! sample and its timestep): loaded from ONNX bytes ([`crate::load`]: decoded, brought to the
//! graph contract, its metadata checked), its graph rewritten for our ops, and handed to
//! [`Network`] for planning at a fixed batch size.

use std::collections::BTreeMap;

use edgediff_core::meta::ModelMeta;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::error::{guarded, RuntimeError};
use crate::load::{decode, decode_bytes, Decoded};
pub use crate::load::{prepare, FastPaths, LoadOptions};
use crate::memory_plan::{MemoryLimit, MemoryPrediction};
use crate::model_info::ModelInfo;
use crate::network::{Network, PlanBudget};

/// Which operators run an ONNX graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ops {
    /// tract plus our own ops where they apply: int8 convolutions and matrix products on
    /// [`edgediff_qconv`] ([`crate::ops::int8_conv`], on CPUs with one of its SIMD kernels:
    /// AVX2 or better on x86_64, any aarch64), GroupNorm as one node ([`crate::ops::group_norm`]) and fp32
    /// convolutions and products with constant weights on [`edgediff_fkernels`]
    /// ([`crate::ops::float_conv`], [`crate::ops::float_matmul`]). The int8 ops and GroupNorm
    /// give tract's bits; the fp32 ones sum in their own fixed order (the same for any batch,
    /// thread count and CPU), so the output is within rounding of tract's. The default.
    #[default]
    Edgediff,
    /// [`Ops::Edgediff`] with the fp32 convolutions and products left to tract: the same output
    /// bits as
    /// [`Ops::TractOnly`] (`tests/int8_kernels.rs` checks it).
    TractMatMul,
    /// [`Ops::TractMatMul`] with GroupNorm left to tract's operators too, only its per-channel
    /// affine fused ([`crate::ops::channel_affine`]): each fusion can be checked on its own
    /// against [`Ops::TractOnly`].
    TractGroupNorm,
    /// tract's operators only (for comparison).
    TractOnly,
}

/// A loaded, validated denoiser (ε-, v- or x0-predicting), ready to be planned for a batch size.
pub struct Denoiser {
    pub meta: ModelMeta,
    pub info: ModelInfo,
    /// The load-time fusions that fired.
    pub fast_paths: FastPaths,
    /// The bytes of the model's weights, as stored.
    pub weight_bytes: u64,
    limit: MemoryLimit,
    graph: InferenceModel,
}

impl Denoiser {
    /// Loads from the bytes of an ONNX file as `opts` says (see [`LoadOptions`]).
    pub fn load(bytes: &[u8], opts: &LoadOptions) -> Result<Self, RuntimeError> {
        Self::load_proto(decode_bytes(bytes)?, opts)
    }

    /// Loads a decoded ONNX model (e.g. from [`crate::source::stream::read_model_proto`], which
    /// never holds the file's bytes and the protobuf together). Each weight passes from the
    /// protobuf to tract's graph in turn ([`crate::handover`]), so they are not held twice.
    pub fn load_proto(proto: ModelProto, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        crate::kernels::fp32()?;
        let Decoded { mut proto, meta, info, weights } = decode(proto, opts)?;
        let (framework, fast_paths) = prepare(&mut proto, opts.ops, meta.float_order);
        let graph = guarded(|| crate::handover::into_tract_model(&framework, &mut proto, opts.weights.as_ref()))
            .map_err(RuntimeError::Load)?;
        drop(proto);
        let limit = MemoryLimit::new(opts.memory_budget);
        Ok(Denoiser { meta, info, fast_paths, weight_bytes: weights, limit, graph })
    }

    /// Loads from the bytes of a self-contained ONNX file. `overrides` (keys with or without the
    /// `edgediff.` prefix) replace or supply metadata values, so a model without our keys can
    /// still run.
    pub fn from_onnx_bytes(bytes: &[u8], overrides: &BTreeMap<String, String>) -> Result<Self, RuntimeError> {
        Self::from_onnx_bytes_with(bytes, overrides, Ops::Edgediff)
    }

    /// As [`Denoiser::from_onnx_bytes`], choosing which operators run the graph.
    pub fn from_onnx_bytes_with(
        bytes: &[u8],
        overrides: &BTreeMap<String, String>,
        ops: Ops,
    ) -> Result<Self, RuntimeError> {
        Self::load(bytes, &LoadOptions { overrides: overrides.clone(), ops, ..Default::default() })
    }

    /// Reads metadata and interface only, without building the tract graph (cheap: used by
    /// `sampler info` and `sampler schedule`).
    pub fn inspect(bytes: &[u8], overrides: &BTreeMap<String, String>) -> Result<(ModelMeta, ModelInfo), RuntimeError> {
        Self::inspect_with(bytes, &LoadOptions { overrides: overrides.clone(), ..Default::default() })
    }

    /// As [`Denoiser::inspect`], with every [`LoadOptions`].
    pub fn inspect_with(bytes: &[u8], opts: &LoadOptions) -> Result<(ModelMeta, ModelInfo), RuntimeError> {
        Self::inspect_proto(decode_bytes(bytes)?, opts)
    }

    /// As [`Denoiser::inspect_with`], for a decoded model.
    pub fn inspect_proto(proto: ModelProto, opts: &LoadOptions) -> Result<(ModelMeta, ModelInfo), RuntimeError> {
        let Decoded { meta, info, .. } = decode(proto, opts)?;
        Ok((meta, info))
    }

    /// The model as one self-describing edgediff file: the graph brought to the contract (inputs
    /// renamed and converted, external weights inside), every `edgediff.*` key of the merged
    /// metadata stored. The result is loaded once more before it is returned, so a file that
    /// would not load is never handed out.
    pub fn import(bytes: &[u8], opts: &LoadOptions) -> Result<Vec<u8>, RuntimeError> {
        Self::import_proto(decode_bytes(bytes)?, opts)
    }

    /// As [`Denoiser::import`], for a decoded model.
    pub fn import_proto(proto: ModelProto, opts: &LoadOptions) -> Result<Vec<u8>, RuntimeError> {
        use tract_onnx::pb::StringStringEntryProto;
        let Decoded { mut proto, meta, .. } = decode(proto, opts)?;
        let ours = meta.to_props();
        proto.metadata_props.retain(|e| !e.key.starts_with("edgediff."));
        proto.metadata_props.extend(ours.into_iter().map(|(key, value)| StringStringEntryProto { key, value }));
        let out = prost::Message::encode_to_vec(&proto);
        Denoiser::load(&out, &LoadOptions { ops: opts.ops, ..Default::default() })?;
        Ok(out)
    }

    /// Name of the int8 convolution kernel our int8 ops run (`avx512-vnni`, `avx-vnni`, `avx2`,
    /// `arm-dotprod`, `arm-neon` or `portable`), or why the one `EDGEDIFF_KERNELS` forces cannot run.
    pub fn int8_kernel() -> Result<&'static str, RuntimeError> {
        crate::kernels::int8().map(|k| k.name())
    }

    /// Name of the fp32 kernel our products run (`avx512`, `avx2`, `neon` or `portable`), or
    /// why the one `EDGEDIFF_KERNELS` forces cannot run.
    pub fn fp32_kernel() -> Result<&'static str, RuntimeError> {
        crate::kernels::fp32().map(|k| k.name())
    }

    /// The metadata, what the file holds, and the tract graph (for tools that plan it their
    /// own way, e.g. with timers around each node).
    pub fn into_parts(self) -> (ModelMeta, ModelInfo, InferenceModel) {
        (self.meta, self.info, self.graph)
    }

    /// Plans the network for `batch` images at a time on `threads` threads, and checks that
    /// its output has the shape of its `sample` input.
    pub fn into_network(self, batch: usize, threads: usize) -> Result<Network, RuntimeError> {
        self.into_network_with(batch, threads, 0)
    }

    /// What a network of `batch` images would hold at least (weights and activations), and the
    /// limit it is checked against, without planning it (`sampler info --memory`).
    pub fn predict_memory(self, batch: usize) -> Result<(MemoryPrediction, MemoryLimit), RuntimeError> {
        if batch == 0 {
            return Err(RuntimeError::Invalid("batch must be at least 1".into()));
        }
        let (graph, _) = crate::network::fix_input_facts(self.graph, &self.meta, batch)?;
        let base = MemoryPrediction { weights: self.weight_bytes, ..Default::default() };
        let (_, prediction) = crate::network::typed_with_prediction(graph, base)?;
        Ok((prediction, self.limit))
    }

    /// As [`Denoiser::into_network`] for a caller that will also hold `buffers` bytes of its
    /// own (the sampling loop's vectors, the image): refused before planning when the weights,
    /// the batch's activations and those buffers cannot fit the memory limit together.
    pub fn into_network_with(self, batch: usize, threads: usize, buffers: u64) -> Result<Network, RuntimeError> {
        let prediction = MemoryPrediction { weights: self.weight_bytes, activations: 0, buffers };
        let budget = PlanBudget { limit: self.limit, prediction };
        Network::plan(self.graph, self.meta, self.info.conditional, batch, threads, budget)
    }
}
