//! Mutations of an ONNX graph's parts: inputs and outputs, nodes, attributes, initializers and
//! value names.

use edgediff_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use edgediff_onnx::proto::type_proto;
use edgediff_onnx::{attribute_type, AttributeProto, GraphProto, StringStringEntryProto, ValueInfoProto};
use rand::seq::{IndexedMutRandom, IndexedRandom};
use rand::Rng as _;

use crate::mutate::edge_int;
use crate::Rng;

/// Operators the loader and its rewrites treat specially, and a few it cannot know.
const OPS: &[&str] = &[
    "Conv",
    "Add",
    "Mul",
    "Div",
    "Sub",
    "MatMul",
    "Reshape",
    "Gather",
    "Cast",
    "Identity",
    "Constant",
    "Softmax",
    "Sigmoid",
    "ReduceMean",
    "Sqrt",
    "GroupNormalization",
    "InstanceNormalization",
    "QLinearConv",
    "QuantizeLinear",
    "DequantizeLinear",
    "ConvInteger",
    "MatMulInteger",
    "Resize",
    "Concat",
    "Transpose",
    "Unsqueeze",
    "Loop",
    "If",
    "NoSuchOp",
    "",
];

/// Names the interface rewrite looks for, and degenerate ones.
const NAMES: &[&str] =
    &["sample", "timestep", "timesteps", "t", "class_labels", "x", "encoder_hidden_states", "prediction", "", " "];

const ATTRIBUTES: &[&str] = &[
    "axis",
    "axes",
    "keepdims",
    "kernel_shape",
    "pads",
    "strides",
    "dilations",
    "group",
    "epsilon",
    "num_groups",
    "to",
    "perm",
    "value",
];

/// External-data locations: the file the model target provides, and ones outside the folder.
const LOCATIONS: &[&str] =
    &["weights.bin", "", ".", "../weights.bin", "/etc/hostname", "missing.bin", "a/../weights.bin"];

pub(super) fn mutate(rng: &mut Rng, graph: &mut GraphProto) {
    match rng.random_range(0..6) {
        0 => value_info(rng, graph),
        1 => node(rng, graph),
        2 => attribute(rng, graph),
        3 => initializer(rng, graph),
        4 => external(rng, graph),
        _ => rename(rng, graph),
    }
}

/// All value names of the graph (inputs, initializers, node outputs).
fn names(graph: &GraphProto) -> Vec<String> {
    let inputs = graph.input.iter().map(|v| v.name.clone());
    let inits = graph.initializer.iter().map(|t| t.name.clone());
    inputs.chain(inits).chain(graph.node.iter().flat_map(|n| n.output.clone())).collect()
}

fn some_name(rng: &mut Rng, graph: &GraphProto) -> String {
    let existing = names(graph);
    match existing.choose(rng) {
        Some(n) if rng.random_bool(0.7) => n.clone(),
        _ => NAMES.choose(rng).copied().unwrap_or("").to_string(),
    }
}

fn value_info(rng: &mut Rng, graph: &mut GraphProto) {
    let outputs = rng.random_bool(0.4);
    let list = if outputs { &mut graph.output } else { &mut graph.input };
    if list.is_empty() {
        list.push(ValueInfoProto { name: "sample".into(), ..Default::default() });
    }
    let i = rng.random_range(0..list.len());
    match rng.random_range(0..6) {
        0 => drop(list.remove(i)),
        1 => list.push(list[i].clone()),
        2 => list[i].name = NAMES.choose(rng).copied().unwrap_or("").to_string(),
        _ => tensor_type(rng, &mut list[i]),
    }
}

fn tensor_type(rng: &mut Rng, info: &mut ValueInfoProto) {
    let ty = info.r#type.get_or_insert_with(Default::default);
    let value = ty.value.get_or_insert_with(|| type_proto::Value::TensorType(Default::default()));
    let type_proto::Value::TensorType(tensor) = value;
    let dims = &mut tensor.shape.get_or_insert_with(Default::default).dim;
    match rng.random_range(0..5) {
        0 => tensor.elem_type = rng.random_range(0..=18),
        1 => tensor.shape = None,
        2 => dims.push(Dimension { value: Some(dimension::Value::DimValue(edge_int(rng))), denotation: String::new() }),
        3 => drop(dims.pop()),
        _ if !dims.is_empty() => {
            let d = rng.random_range(0..dims.len());
            dims[d].value = match rng.random_range(0..3) {
                0 => Some(dimension::Value::DimParam(["N", "", "batch"].choose(rng).copied().unwrap_or("N").into())),
                1 => None,
                _ => Some(dimension::Value::DimValue(edge_int(rng))),
            };
        }
        _ => {}
    }
}

fn node(rng: &mut Rng, graph: &mut GraphProto) {
    if graph.node.is_empty() {
        return;
    }
    let i = rng.random_range(0..graph.node.len());
    let name = some_name(rng, graph);
    let n = &mut graph.node[i];
    match rng.random_range(0..8) {
        0 => drop(graph.node.remove(i)),
        1 => graph.node.push(graph.node[i].clone()),
        2 => n.op_type = OPS.choose(rng).copied().unwrap_or("").into(),
        3 => drop(n.input.pop()),
        4 => n.input.push(name),
        5 if !n.input.is_empty() => {
            let k = rng.random_range(0..n.input.len());
            n.input[k] = name;
        }
        6 if !n.output.is_empty() => {
            let k = rng.random_range(0..n.output.len());
            n.output[k] = name;
        }
        _ => n.domain = ["com.microsoft", "ai.onnx", "edgediff", "x"].choose(rng).copied().unwrap_or("").into(),
    }
}

fn attribute(rng: &mut Rng, graph: &mut GraphProto) {
    let Some(node) = graph.node.choose_mut(rng) else { return };
    if node.attribute.is_empty() || rng.random_bool(0.2) {
        let name = ATTRIBUTES.choose(rng).copied().unwrap_or("axis");
        node.attribute.push(AttributeProto {
            name: name.into(),
            r#type: attribute_type::INT,
            i: Some(0),
            ..Default::default()
        });
    }
    let k = rng.random_range(0..node.attribute.len());
    let a = &mut node.attribute[k];
    let floats = [0.0f32, -0.0, 1e-45, 1e38, f32::MAX, f32::NAN, f32::INFINITY, -1.0];
    match rng.random_range(0..6) {
        0 => drop(node.attribute.remove(k)),
        1 => a.r#type = rng.random_range(0..=10),
        2 => a.i = Some(edge_int(rng)),
        3 => a.f = floats.choose(rng).copied(),
        4 => a.ints = (0..rng.random_range(0..6)).map(|_| edge_int(rng)).collect(),
        _ if !a.ints.is_empty() => {
            let j = rng.random_range(0..a.ints.len());
            a.ints[j] = edge_int(rng);
        }
        _ => a.floats = (0..rng.random_range(0..4)).map(|_| floats.choose(rng).copied().unwrap_or(0.0)).collect(),
    }
}

fn initializer(rng: &mut Rng, graph: &mut GraphProto) {
    let name = some_name(rng, graph);
    let Some(t) = graph.initializer.choose_mut(rng) else { return };
    match rng.random_range(0..9) {
        0 if !t.dims.is_empty() => {
            let d = rng.random_range(0..t.dims.len());
            t.dims[d] = edge_int(rng);
        }
        1 => t.dims.push(edge_int(rng)),
        2 => drop(t.dims.pop()),
        3 => t.data_type = rng.random_range(0..=18),
        4 => t.raw_data.truncate(rng.random_range(0..=t.raw_data.len())),
        5 => t.raw_data.extend(f32::NAN.to_le_bytes()),
        6 => t.float_data = std::mem::take(&mut t.raw_data).chunks(4).map(|c| c.len() as f32).collect(),
        7 => t.name = name,
        _ => {
            let i = rng.random_range(0..graph.initializer.len());
            graph.initializer.remove(i);
        }
    }
}

/// An initializer moved to external data: the model target's file, or a location the loader
/// must refuse, at an edge offset and length.
fn external(rng: &mut Rng, graph: &mut GraphProto) {
    let Some(t) = graph.initializer.choose_mut(rng) else { return };
    let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
    let len = t.raw_data.len() as i64;
    let number = |rng: &mut Rng| [0, 4, len, len + 4, edge_int(rng)].choose(rng).copied().unwrap_or(0).to_string();
    t.data_location = 1;
    t.raw_data.clear();
    t.external_data = vec![entry("location", LOCATIONS.choose(rng).copied().unwrap_or("").into())];
    if rng.random_bool(0.8) {
        t.external_data.push(entry("offset", number(rng)));
    }
    if rng.random_bool(0.8) {
        t.external_data.push(entry("length", number(rng)));
    }
}

/// One value renamed everywhere (so the graph stays connected) to a contract or degenerate name,
/// possibly one already taken.
fn rename(rng: &mut Rng, graph: &mut GraphProto) {
    let Some(from) = names(graph).choose(rng).cloned() else { return };
    let to = some_name(rng, graph);
    let swap = |s: &mut String| {
        if *s == from {
            *s = to.clone();
        }
    };
    graph.input.iter_mut().for_each(|v| swap(&mut v.name));
    graph.output.iter_mut().for_each(|v| swap(&mut v.name));
    graph.initializer.iter_mut().for_each(|t| swap(&mut t.name));
    for n in &mut graph.node {
        n.input.iter_mut().chain(n.output.iter_mut()).for_each(swap);
    }
}
