//! Loading a denoiser, the network a diffusion model samples with (it predicts ε, v or x0 from a
//! noisy sample and its timestep): decode the ONNX file, read its self-description from
//! `metadata_props`, check its inputs and outputs against the graph contract, rewrite the graph
//! for our ops, and hand a tract model to [`Network`] for planning at a fixed batch size.

use std::collections::BTreeMap;

use edgediff_core::meta::{self, ModelMeta};
use tract_onnx::pb::{tensor_shape_proto::dimension, type_proto, ModelProto, ValueInfoProto};
use tract_onnx::prelude::*;

use crate::error::{tract_message, RuntimeError};
use crate::model_info::{describe, model_info, ModelInfo};
use crate::network::Network;

/// Which operators run an ONNX graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ops {
    /// tract plus our own ops where they apply: int8 convolutions and matrix products on
    /// [`edgediff_qconv`] ([`crate::ops::int8_conv`], on CPUs with one of its SIMD kernels:
    /// AVX-512 VNNI, any aarch64) and GroupNorm as one node ([`crate::ops::group_norm`]). Same
    /// output bits as tract alone. The default.
    #[default]
    Edgediff,
    /// [`Ops::Edgediff`] with GroupNorm left to tract's operators, only its per-channel affine
    /// fused ([`crate::ops::channel_affine`]): each fusion can be checked on its own against
    /// [`Ops::TractOnly`] (`tests/int8_kernels.rs`).
    TractGroupNorm,
    /// tract's operators only (for comparison).
    TractOnly,
}

/// A loaded, validated denoiser (ε-, v- or x0-predicting), ready to be planned for a batch size.
pub struct Denoiser {
    pub meta: ModelMeta,
    pub info: ModelInfo,
    graph: InferenceModel,
}

impl Denoiser {
    /// Loads from the bytes of an ONNX file. `overrides` (keys with or without the `edgediff.`
    /// prefix) replace or supply metadata values, so a model without our keys can still run.
    pub fn from_onnx_bytes(bytes: &[u8], overrides: &BTreeMap<String, String>) -> Result<Self, RuntimeError> {
        Self::from_onnx_bytes_with(bytes, overrides, Ops::Edgediff)
    }

    /// As [`Denoiser::from_onnx_bytes`], choosing which operators run the graph.
    pub fn from_onnx_bytes_with(
        bytes: &[u8],
        overrides: &BTreeMap<String, String>,
        ops: Ops,
    ) -> Result<Self, RuntimeError> {
        let (mut proto, meta, info) = decode(bytes, overrides)?;
        let framework = prepare(&mut proto, ops);
        let graph = framework.model_for_proto_model(&proto).map_err(|e| RuntimeError::Load(tract_message(&e)))?;
        drop(proto);
        Ok(Denoiser { meta, info, graph })
    }

    /// Reads metadata and interface only, without building the tract graph (cheap: used by
    /// `sampler info` and `sampler schedule`).
    pub fn inspect(bytes: &[u8], overrides: &BTreeMap<String, String>) -> Result<(ModelMeta, ModelInfo), RuntimeError> {
        let (_, meta, info) = decode(bytes, overrides)?;
        Ok((meta, info))
    }

    /// Name of the int8 convolution kernel this CPU runs (`avx512-vnni`, `arm-dotprod`,
    /// `arm-neon` or `portable`).
    pub fn int8_kernel() -> &'static str {
        edgediff_qconv::Kernel::detect().name()
    }

    /// Plans the network for `batch` images at a time on `threads` threads, and checks that
    /// its output has the shape of its `sample` input.
    pub fn into_network(self, batch: usize, threads: usize) -> Result<Network, RuntimeError> {
        Network::plan(self.graph, self.meta, self.info.conditional, batch, threads)
    }
}

/// Rewrites `proto` for `ops` (the load-time fusions) and returns the tract framework that
/// parses the result. Shared with tools that load graphs themselves (`examples/op_profile.rs`).
pub fn prepare(proto: &mut ModelProto, ops: Ops) -> tract_onnx::Onnx {
    match ops {
        Ops::Edgediff | Ops::TractGroupNorm => {
            // int8 convolutions only where a SIMD kernel exists: the portable one is far slower
            // than tract's own (x86_64 without AVX-512 VNNI, e.g. under valgrind; targets other
            // than x86_64 and aarch64).
            let simd = edgediff_qconv::Kernel::detect() != edgediff_qconv::Kernel::Portable;
            if simd {
                crate::rewrite::int8::fuse_integer_convs(proto);
            }
            if ops == Ops::Edgediff {
                crate::rewrite::group_norm::fuse_group_norms(proto);
            }
            crate::rewrite::channel_affine::fuse_channel_affines(proto);
            crate::ops::onnx_with_edgediff_ops(simd)
        }
        Ops::TractOnly => tract_onnx::onnx(),
    }
}

fn decode(
    bytes: &[u8],
    overrides: &BTreeMap<String, String>,
) -> Result<(ModelProto, ModelMeta, ModelInfo), RuntimeError> {
    if bytes.is_empty() {
        return Err(RuntimeError::Decode("file is empty".into()));
    }
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| RuntimeError::Decode(tract_message(&e)))?;
    let info = model_info(&proto)?;
    let mut props = info.props.clone();
    for (k, v) in overrides {
        let key = if k.starts_with("edgediff.") { k.clone() } else { format!("edgediff.{k}") };
        props.insert(key, v.clone());
    }
    let meta = ModelMeta::from_props(&props)?;
    check_interface(&proto, &meta)?;
    Ok((proto, meta, info))
}

/// Checks names and fixed dims of the graph's inputs against the metadata, so a model that
/// does not fit the contract fails at load with a message instead of deep inside tract.
fn check_interface(proto: &ModelProto, m: &ModelMeta) -> Result<(), RuntimeError> {
    let graph = proto.graph.as_ref().ok_or_else(|| RuntimeError::Decode("the file holds no graph".into()))?;
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&ValueInfoProto> = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let allowed = [meta::INPUT_SAMPLE, meta::INPUT_TIMESTEP, meta::INPUT_CLASS_LABELS];
    if !names.contains(&meta::INPUT_SAMPLE)
        || !names.contains(&meta::INPUT_TIMESTEP)
        || names.iter().any(|n| !allowed.contains(n))
    {
        return Err(RuntimeError::Interface(format!(
            "inputs are [{}], expected `sample` [N,C,H,W], `timestep` [N] and optionally `class_labels` [N]",
            names.join(", ")
        )));
    }
    if graph.output.len() != 1 {
        return Err(RuntimeError::Interface(format!(
            "has {} outputs, expected exactly one (the prediction)",
            graph.output.len()
        )));
    }
    let sample = inputs.iter().find(|i| i.name == meta::INPUT_SAMPLE);
    if let Some((sample, type_proto::Value::TensorType(t))) =
        sample.and_then(|s| Some((s, s.r#type.as_ref()?.value.as_ref()?)))
    {
        if let Some(shape) = &t.shape {
            let want = [None, Some(m.channels as i64), Some(m.image_size as i64), Some(m.image_size as i64)];
            let fixed: Vec<Option<i64>> = shape
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(n)) => Some(n),
                    _ => None,
                })
                .collect();
            let fits =
                fixed.len() == 4 && fixed.iter().zip(want).skip(1).all(|(got, want)| got.is_none() || *got == want);
            if !fits {
                return Err(RuntimeError::Interface(format!(
                    "input `sample` is {}, but the metadata says [N, {}, {}, {}]",
                    describe(sample),
                    m.channels,
                    m.image_size,
                    m.image_size
                )));
            }
        }
    }
    Ok(())
}
