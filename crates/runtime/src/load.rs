//! From ONNX bytes to a checked model, before tract sees it: decode the protobuf, read weights
//! stored beside the file, turn `Constant` nodes into initializers, bring the inputs and outputs
//! to the graph contract ([`crate::rewrite::interface`]), merge the metadata (the file's, then the
//! caller's overrides: configuration files and `--meta`), and check the result against itself
//! and the graph.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use edgediff_core::meta::{self, FloatOrder, ModelMeta};
use tract_onnx::pb::tensor_proto::DataLocation;
use tract_onnx::pb::{tensor_shape_proto::dimension, type_proto, GraphProto, ModelProto, ValueInfoProto};

use crate::error::RuntimeError;
use crate::memory_plan::{check_constant_builders, initializer_bytes, MemoryLimit};
use crate::model_info::{describe, model_info, ModelInfo};
use crate::rewrite::interface::normalize_interface;
use crate::Ops;

/// How to load a model file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Metadata that replaces or supplies the file's, keys with or without the `edgediff.`
    /// prefix: configuration files' values first, `--meta` over them.
    pub overrides: BTreeMap<String, String>,
    /// Which operators run the graph.
    pub ops: Ops,
    /// The folder the file's external data is read from (the file's own); `None` for a model
    /// whose weights must all be inside it (e.g. one embedded in the binary).
    pub dir: Option<PathBuf>,
    /// Which graph output is the prediction, for a graph with several.
    pub output: Option<String>,
    /// The model's name when neither the file nor the overrides give one.
    pub default_name: Option<String>,
    /// The most memory the run may use (`--memory-budget`); `None`: the machine's memory. A
    /// model whose weights, or whose constant-built tensors, would not fit is refused before
    /// they are read or built ([`crate::memory_plan`]).
    pub memory_budget: Option<u64>,
    /// Where the model's bytes can be read again: its weights are then freed while tract
    /// parses the graph and read back one by one ([`crate::handover`]). `None` keeps them held.
    pub weights: Option<crate::source::regions::WeightSource>,
}

/// A decoded model brought to the contract, with what it says about itself.
pub(crate) struct Decoded {
    pub proto: ModelProto,
    pub meta: ModelMeta,
    pub info: ModelInfo,
    /// The bytes of the model's weights (its initializers, by their dims).
    pub weights: u64,
}

/// The protobuf of an ONNX file's bytes (decoded in place: no copy of the bytes is made).
pub fn decode_bytes(bytes: &[u8]) -> Result<ModelProto, RuntimeError> {
    if bytes.is_empty() {
        return Err(RuntimeError::Decode("file is empty".into()));
    }
    prost::Message::decode(bytes).map_err(|e| RuntimeError::Decode(e.to_string()))
}

/// `proto` brought to the contract and checked (see the module doc).
pub(crate) fn decode(mut proto: ModelProto, opts: &LoadOptions) -> Result<Decoded, RuntimeError> {
    let graph = proto.graph.as_mut().ok_or_else(|| RuntimeError::Decode("the file holds no graph".into()))?;
    let limit = MemoryLimit::new(opts.memory_budget);
    let weights = initializer_bytes(graph);
    limit.check(weights, "the model's weights")?;
    check_constant_builders(graph, &limit)?;
    read_external_data(graph, opts)?;
    crate::rewrite::names::name_nodes(graph);
    crate::validate::nodes_write_outputs(graph)?;
    crate::rewrite::drop_trailing_empty_inputs(graph);
    let constants = crate::rewrite::constants::constants_to_initializers(graph);
    crate::rewrite::constants::bypass_initializer_identities(graph);
    let changes = normalize_interface(graph, opts.output.as_deref()).map_err(RuntimeError::Interface)?;
    let mut info = model_info(&proto)?;
    info.interface = changes;
    info.constants_moved = constants;
    let props = merged_props(&proto, &info, opts)?;
    let meta = ModelMeta::from_props(&props)?;
    check_interface(&proto, &meta)?;
    if let Some(graph) = &proto.graph {
        crate::validate::validate(graph, &meta)?;
    }
    Ok(Decoded { proto, meta, info, weights })
}

fn read_external_data(graph: &mut GraphProto, opts: &LoadOptions) -> Result<(), RuntimeError> {
    let external = graph.initializer.iter().find(|t| t.data_location == Some(DataLocation::External as i32));
    match (&opts.dir, external) {
        (_, None) => Ok(()),
        (Some(dir), Some(_)) => crate::source::external::inline_external_data(graph, dir)
            .map(|_| ())
            .map_err(|e| RuntimeError::Decode(e.to_string())),
        (None, Some(t)) => Err(RuntimeError::Decode(format!(
            "tensor `{}` is stored in a file beside the model; load the model from its path",
            t.name
        ))),
    }
}

/// The file's metadata, the overrides over it, and the facts the graph alone gives where
/// neither says (the image size and channels of a fixed-size sample input, the model's name).
fn merged_props(
    proto: &ModelProto,
    info: &ModelInfo,
    opts: &LoadOptions,
) -> Result<BTreeMap<String, String>, RuntimeError> {
    let mut props = info.props.clone();
    for (k, v) in &opts.overrides {
        let key = if k.starts_with("edgediff.") { k.clone() } else { format!("edgediff.{k}") };
        props.insert(key, v.clone());
    }
    if !props.contains_key(meta::FORMAT) {
        return Err(RuntimeError::Interface(
            "has no edgediff metadata: give the model's folder (with scheduler_config.json), \
             --scheduler-config FILE, or the keys with --meta KEY=VALUE (see `sampler info`)"
                .into(),
        ));
    }
    let defaults = [(meta::MODEL_NAME, opts.default_name.clone()), (meta::VALUE_RANGE, Some("-1,1".into()))];
    for (key, value) in defaults.into_iter().chain(sample_shape_props(proto)) {
        if let (false, Some(value)) = (props.contains_key(key), value) {
            props.insert(key.into(), value);
        }
    }
    Ok(props)
}

/// Channels and image size from a sample input of fixed `[N, C, S, S]`.
fn sample_shape_props(proto: &ModelProto) -> [(&'static str, Option<String>); 2] {
    let dims = sample_dims(proto).unwrap_or_default();
    let (c, h, w) = (dims.get(1).copied().flatten(), dims.get(2).copied().flatten(), dims.get(3).copied().flatten());
    let size = h.filter(|&h| Some(h) == w);
    [(meta::CHANNELS, c.map(|c| c.to_string())), (meta::IMAGE_SIZE, size.map(|s| s.to_string()))]
}

/// The declared dims of the `sample` input (`None` for a symbolic one).
fn sample_dims(proto: &ModelProto) -> Option<Vec<Option<i64>>> {
    let graph = proto.graph.as_ref()?;
    let sample = graph.input.iter().find(|i| i.name == meta::INPUT_SAMPLE)?;
    let Some(type_proto::Value::TensorType(t)) = sample.r#type.as_ref()?.value.as_ref() else { return None };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(dimension::Value::DimValue(n)) => Some(n),
                _ => None,
            })
            .collect(),
    )
}

/// Checks names and fixed dims of the graph's inputs against the metadata, so a model that
/// does not fit the contract fails at load with a message instead of deep inside tract.
fn check_interface(proto: &ModelProto, m: &ModelMeta) -> Result<(), RuntimeError> {
    let graph = proto.graph.as_ref().ok_or_else(|| RuntimeError::Decode("the file holds no graph".into()))?;
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&ValueInfoProto> = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let has = |name| names.contains(&name);
    if has(meta::INPUT_CLASS_LABELS) && m.class_names.is_empty() {
        return Err(RuntimeError::Interface(format!(
            "takes `{}` but its metadata names no classes (supply --meta class_names=A,B,...)",
            meta::INPUT_CLASS_LABELS
        )));
    }
    let Some(dims) = sample_dims(proto) else { return Ok(()) };
    let want = [None, Some(m.channels as i64), Some(m.image_size as i64), Some(m.image_size as i64)];
    let fits = dims.len() == 4 && dims.iter().zip(want).skip(1).all(|(got, want)| got.is_none() || *got == want);
    if !fits {
        let sample = inputs.iter().find(|i| i.name == meta::INPUT_SAMPLE).map(|s| describe(s)).unwrap_or_default();
        return Err(RuntimeError::Interface(format!(
            "input `sample` is {sample}, but the metadata says [N, {}, {}, {}]",
            m.channels, m.image_size, m.image_size
        )));
    }
    Ok(())
}

/// The fusions that fired while preparing a graph, by kind, for `sampler info --verbose`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPaths {
    /// int8 convolution and matrix-product chains fused into our int8 ops.
    pub int8_chains: usize,
    /// GroupNorms in our exporter's eleven-node form.
    pub group_norms: usize,
    /// GroupNorms in torch's InstanceNormalization form or opset 21's GroupNormalization.
    pub torch_group_norms: usize,
    /// Per-channel affines (`Mul` then `Add`) of GroupNorms left to tract.
    pub channel_affines: usize,
    /// fp32 matrix products with constant weights (and their bias) taken by our kernel.
    pub float_matmuls: usize,
    /// fp32 convolutions with constant weights taken by our kernel.
    pub float_convs: usize,
    /// Functions, softmaxes, products of two computed tensors and GroupNorms moved to our own
    /// arithmetic (the same bytes on every CPU).
    pub fixed_math: usize,
}

/// Rewrites `proto` for `ops` (the load-time fusions) and returns the tract framework that
/// parses the result, with what fired. Shared with tools that load graphs themselves
/// (`examples/op_profile.rs`).
pub fn prepare(proto: &mut ModelProto, ops: Ops, order: FloatOrder) -> (tract_onnx::Onnx, FastPaths) {
    let mut fired = FastPaths::default();
    let opset =
        proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version);
    let Some(graph) = proto.graph.as_mut() else { return (tract_onnx::onnx(), fired) };
    let framework = match ops {
        Ops::Edgediff | Ops::TractMatMul | Ops::TractGroupNorm => {
            // int8 convolutions only where a SIMD kernel exists (AVX2 or better, any aarch64):
            // the portable one is far slower than tract's own (x86_64 before AVX2, targets
            // other than x86_64 and aarch64).
            let simd = crate::kernels::int8().is_ok_and(|k| k != edgediff_qconv::Kernel::Portable);
            if simd {
                fired.int8_chains = crate::rewrite::int8::fuse_integer_convs(graph);
            }
            // Every float layer, of fp32 and int8 models alike, in the one order fkernels sums
            // in: the same bytes on every CPU (an int8 model's integer sums are exact already),
            // unless the model asks for tract's kernels.
            let fixed_order = ops == Ops::Edgediff && order == FloatOrder::Fixed;
            if fixed_order {
                fired.float_matmuls = crate::rewrite::float_matmul::fuse_float_matmuls(graph);
                fired.float_convs = crate::rewrite::float_conv::fuse_float_convs(graph);
            }
            if ops != Ops::TractGroupNorm {
                fired.group_norms = crate::rewrite::group_norm::fuse_group_norms(graph);
                fired.torch_group_norms = crate::rewrite::torch_group_norm::fuse_torch_group_norms(graph, opset);
            }
            if fixed_order && crate::rewrite::fixed_math::all_f32(graph) {
                fired.fixed_math = crate::rewrite::fixed_math::fix_math_order(graph);
            }
            fired.channel_affines = crate::rewrite::channel_affine::fuse_channel_affines(graph);
            crate::ops::onnx_with_edgediff_ops(simd)
        }
        Ops::TractOnly => tract_onnx::onnx(),
    };
    (framework, fired)
}
