//! What a model file holds, read from its protobuf without building a graph: metadata, weight
//! counts and the graph's inputs and outputs (what `sampler info` prints).

use std::collections::{BTreeMap, HashSet};

use edgediff_core::meta;
use tract_onnx::pb::{tensor_proto::DataType, tensor_shape_proto::dimension, type_proto, ModelProto, ValueInfoProto};

use crate::error::RuntimeError;

/// What `sampler info` prints about a model, gathered at load time.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// All `metadata_props`, as stored.
    pub props: BTreeMap<String, String>,
    /// Number of stored weight values (initializers other than int64 shape constants).
    pub param_count: u64,
    /// Bytes of stored weights (int8 weights count one byte each).
    pub weight_bytes: u64,
    /// Graph inputs and outputs as `name: type[dims]`.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// ai.onnx opset the file declares.
    pub opset: i64,
    /// The model takes a `class_labels` input (class-conditional).
    pub conditional: bool,
    /// How the export's inputs and outputs were brought to the graph contract.
    pub interface: crate::rewrite::interface::InterfaceChanges,
    /// `Constant` nodes turned into initializers.
    pub constants_moved: usize,
}

fn elem_size(data_type: i32) -> u64 {
    match DataType::try_from(data_type) {
        Ok(DataType::Int8 | DataType::Uint8 | DataType::Bool) => 1,
        Ok(DataType::Int16 | DataType::Uint16 | DataType::Float16 | DataType::Bfloat16) => 2,
        Ok(DataType::Int64 | DataType::Uint64 | DataType::Double) => 8,
        _ => 4,
    }
}

pub(crate) fn describe(v: &ValueInfoProto) -> String {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return format!("{}: ?", v.name);
    };
    let ty = DataType::try_from(t.elem_type).map(|d| format!("{d:?}").to_lowercase()).unwrap_or("?".into());
    let dims: Vec<String> = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(n)) => n.to_string(),
                    Some(dimension::Value::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{}: {}[{}]", v.name, ty, dims.join(", "))
}

pub(crate) fn model_info(proto: &ModelProto) -> Result<ModelInfo, RuntimeError> {
    let graph = proto.graph.as_ref().ok_or_else(|| RuntimeError::Decode("the file holds no graph".into()))?;
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let (mut param_count, mut weight_bytes) = (0u64, 0u64);
    // int64 initializers are shape/axes constants of Reshape, Slice, ... not weights.
    for t in graph.initializer.iter().filter(|t| t.data_type != DataType::Int64 as i32) {
        let n: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product();
        param_count += n;
        weight_bytes += n * elem_size(t.data_type);
    }
    let inputs: Vec<&ValueInfoProto> = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    Ok(ModelInfo {
        props: proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
        param_count,
        weight_bytes,
        inputs: inputs.iter().map(|v| describe(v)).collect(),
        outputs: graph.output.iter().map(describe).collect(),
        opset: proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0),
        conditional: inputs.iter().any(|i| i.name == meta::INPUT_CLASS_LABELS),
        interface: Default::default(),
        constants_moved: 0,
    })
}
