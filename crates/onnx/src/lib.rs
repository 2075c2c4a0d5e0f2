//! Our own ONNX writer/reader: prost messages for `onnx.proto` plus a graph builder.
//!
//! Why hand-written: burn's experimental ONNX exporter cannot express GroupNorm or Permute, and
//! generated bindings would need protoc at build time. The messages cover what a U-Net export
//! and an int8 rewrite need; [`decode_model`] reads any ONNX file into them (unknown fields,
//! e.g. sparse initializers or functions, are dropped).

mod builder;
pub mod proto;

use std::collections::BTreeMap;

use prost::Message;

pub use builder::{
    attr_float, attr_floats, attr_int, attr_ints, attr_string, attr_tensor, ir_version_for_opset, make_model, Dim,
    GraphBuilder,
};
pub use proto::{
    attribute_type, data_type, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not a valid ONNX protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("ONNX value name `{0}` is empty or already used")]
    DuplicateName(String),
    #[error("ONNX value `{0}` does not exist in the graph")]
    UnknownValue(String),
    #[error("tensor `{name}`: dims {dims:?} need {} elements, got {len}", dims.iter().product::<usize>())]
    ShapeMismatch { name: String, dims: Vec<usize>, len: usize },
    #[error("tensor `{name}`: {reason}")]
    BadTensor { name: String, reason: String },
}

/// Serialises a model to the bytes of an `.onnx` file (deterministic for equal inputs).
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Parses the bytes of an `.onnx` file.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    Ok(ModelProto::decode(bytes)?)
}

/// The model's `metadata_props` as a map (a later duplicate key wins).
pub fn metadata_map(model: &ModelProto) -> BTreeMap<String, String> {
    model.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect()
}

/// Number of elements the tensor's dims describe; negative dims are an error.
pub fn tensor_len(t: &TensorProto) -> Result<usize, OnnxError> {
    t.dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| bad(t, format!("invalid dims {:?}", t.dims)))
    })
}

fn bad(t: &TensorProto, reason: String) -> OnnxError {
    OnnxError::BadTensor { name: t.name.clone(), reason }
}

/// Splits `raw_data` into `N`-byte little-endian elements, checking the count.
fn raw_elems<const N: usize>(t: &TensorProto) -> Result<Option<Vec<[u8; N]>>, OnnxError> {
    if t.raw_data.is_empty() {
        return Ok(None);
    }
    let len = tensor_len(t)?;
    if t.raw_data.len() != len * N {
        return Err(bad(t, format!("raw_data has {} bytes, expected {}", t.raw_data.len(), len * N)));
    }
    Ok(Some(t.raw_data.chunks_exact(N).map(|c| c.try_into().unwrap_or([0; N])).collect()))
}

fn check_type(t: &TensorProto, expected: i32, what: &str) -> Result<(), OnnxError> {
    if t.data_type != expected {
        return Err(bad(t, format!("data_type {} is not {what}", t.data_type)));
    }
    if t.data_location != 0 || !t.external_data.is_empty() {
        return Err(bad(t, "external data is not supported".into()));
    }
    Ok(())
}

fn check_len<T>(t: &TensorProto, v: Vec<T>) -> Result<Vec<T>, OnnxError> {
    let len = tensor_len(t)?;
    if v.len() != len {
        return Err(bad(t, format!("{} values for dims {:?}", v.len(), t.dims)));
    }
    Ok(v)
}

/// The values of a FLOAT tensor, from `raw_data` or `float_data`.
pub fn tensor_f32(t: &TensorProto) -> Result<Vec<f32>, OnnxError> {
    check_type(t, data_type::FLOAT, "FLOAT")?;
    match raw_elems::<4>(t)? {
        Some(raw) => Ok(raw.into_iter().map(f32::from_le_bytes).collect()),
        None => check_len(t, t.float_data.clone()),
    }
}

/// The values of an INT64 tensor, from `raw_data` or `int64_data`.
pub fn tensor_i64(t: &TensorProto) -> Result<Vec<i64>, OnnxError> {
    check_type(t, data_type::INT64, "INT64")?;
    match raw_elems::<8>(t)? {
        Some(raw) => Ok(raw.into_iter().map(i64::from_le_bytes).collect()),
        None => check_len(t, t.int64_data.clone()),
    }
}

/// The values of an INT32 tensor, from `raw_data` or `int32_data`.
pub fn tensor_i32(t: &TensorProto) -> Result<Vec<i32>, OnnxError> {
    check_type(t, data_type::INT32, "INT32")?;
    match raw_elems::<4>(t)? {
        Some(raw) => Ok(raw.into_iter().map(i32::from_le_bytes).collect()),
        None => check_len(t, t.int32_data.clone()),
    }
}

/// The values of an INT8 tensor, from `raw_data` or `int32_data` (one value per int32).
pub fn tensor_i8(t: &TensorProto) -> Result<Vec<i8>, OnnxError> {
    check_type(t, data_type::INT8, "INT8")?;
    match raw_elems::<1>(t)? {
        Some(raw) => Ok(raw.into_iter().map(|[b]| b as i8).collect()),
        None => check_len(t, t.int32_data.iter().map(|&v| v as i8).collect()),
    }
}

/// The values of a UINT8 tensor, from `raw_data` or `int32_data` (one value per int32).
pub fn tensor_u8(t: &TensorProto) -> Result<Vec<u8>, OnnxError> {
    check_type(t, data_type::UINT8, "UINT8")?;
    match raw_elems::<1>(t)? {
        Some(raw) => Ok(raw.into_iter().map(|[b]| b).collect()),
        None => check_len(t, t.int32_data.iter().map(|&v| v as u8).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initializers_round_trip_through_bytes() {
        let mut g = GraphBuilder::new("g");
        let x = g.add_input("x", data_type::FLOAT, &[Dim::Param("N".into()), Dim::Fixed(2)]).unwrap();
        let w = g.initializer_f32("w", &[2], &[1.5, -2.0]).unwrap();
        let q = g.initializer_i8("q", &[3], &[-128, 0, 127]).unwrap();
        let z = g.initializer_u8("z", &[], &[7]).unwrap();
        let b = g.initializer_i32("b", &[2], &[-5, 1 << 20]).unwrap();
        let s = g.const_i64s("shape", &[0, -1]);
        let y = g.node("Mul", "y", &[&x, &w], vec![]);
        g.add_output(&y, data_type::FLOAT, &[Dim::Param("N".into()), Dim::Fixed(2)]).unwrap();
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let bytes = encode_model(&make_model(g.finish(), 17, &[], &meta));
        let model = decode_model(&bytes).unwrap();
        assert_eq!(model.ir_version, 8);
        assert_eq!(metadata_map(&model), meta);
        let graph = model.graph.unwrap();
        let find = |n: &str| graph.initializer.iter().find(|t| t.name == n).unwrap();
        assert_eq!(tensor_f32(find(&w)).unwrap(), vec![1.5, -2.0]);
        assert_eq!(tensor_i8(find(&q)).unwrap(), vec![-128, 0, 127]);
        assert_eq!(tensor_u8(find(&z)).unwrap(), vec![7]);
        assert_eq!(tensor_i32(find(&b)).unwrap(), vec![-5, 1 << 20]);
        assert_eq!(tensor_i64(find(&s)).unwrap(), vec![0, -1]);
        assert!(tensor_i64(find(&w)).is_err());
        assert_eq!(graph.node[0].input, vec!["x".to_string(), "w".to_string()]);
    }

    #[test]
    fn names_stay_unique_and_bad_shapes_are_errors() {
        let mut g = GraphBuilder::new("g");
        g.add_input("a", data_type::FLOAT, &[]).unwrap();
        assert!(g.add_input("a", data_type::FLOAT, &[]).is_err());
        assert_eq!(g.unique_name("a"), "a_1");
        assert_eq!(g.unique_name("a"), "a_2");
        assert!(g.initializer_f32("w", &[2, 2], &[1.0]).is_err());
        assert!(g.add_output("missing", data_type::FLOAT, &[]).is_err());
        assert_eq!(g.initializer_f32("w", &[1], &[1.0]).unwrap(), "w");
        let y = g.node("Relu", "y", &["a"], vec![]);
        // A rebuilt builder knows the graph's inputs, initializers and node outputs.
        let mut rebuilt = GraphBuilder::from_graph(g.finish());
        assert_eq!(rebuilt.unique_name("a"), "a_1");
        assert_eq!(rebuilt.unique_name("w"), "w_1");
        assert_eq!(rebuilt.unique_name(&y), format!("{y}_1"));
        assert!(rebuilt.add_input("w", data_type::FLOAT, &[]).is_err());
    }

    #[test]
    fn zero_valued_int_attribute_is_still_encoded() {
        let bytes = attr_int("keepdims", 0).encode_to_vec();
        let back = AttributeProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.i, Some(0));
        assert!(decode_model(&[0xff, 0xff, 0xff]).is_err());
    }
}
