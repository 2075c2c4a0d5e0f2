//! Load-time rewrites of the ONNX graph, before tract parses it: each finds a chain of standard
//! nodes that one of our operators ([`crate::ops`]) computes bit for bit, and replaces the chain
//! with one node of that op type. The file on disk is never changed.
//!
//! This module holds what the rewrites share: who reads each tensor, reading constant
//! initializers, and swapping a chain of nodes for one fused node.

pub mod channel_affine;
pub mod constants;
pub mod fixed_math;
pub mod float_conv;
pub mod float_matmul;
pub mod group_norm;
pub mod int8;
pub mod interface;
pub mod names;
pub mod torch_group_norm;

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

/// Drops the empty names at the end of each node's inputs: ONNX reads an omitted trailing
/// optional input the same as an absent one, and tract's parsers count inputs (a `Conv` with
/// inputs `[x, w, ""]` would look for a bias that is not wired).
pub fn drop_trailing_empty_inputs(graph: &mut GraphProto) {
    for node in &mut graph.node {
        while node.input.last().is_some_and(String::is_empty) {
            node.input.pop();
        }
    }
}

/// How many node inputs and graph outputs read each tensor.
pub(crate) fn readers(graph: &GraphProto) -> HashMap<&str, usize> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *count.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *count.entry(o.name.as_str()).or_default() += 1;
    }
    count
}

/// The index of the one node reading `tensor`, if exactly one node and no graph output reads it.
/// An empty name is no tensor (it marks an omitted optional input or output), so it has no reader.
pub(crate) fn only_reader(graph: &GraphProto, readers: &HashMap<&str, usize>, tensor: &str) -> Option<usize> {
    if tensor.is_empty() || readers.get(tensor).copied() != Some(1) || graph.output.iter().any(|o| o.name == tensor) {
        return None;
    }
    graph.node.iter().position(|n| n.input.iter().any(|i| i == tensor))
}

/// A two-input node's input other than `this`.
pub(crate) fn other_input<'n>(node: &'n NodeProto, this: &str) -> Option<&'n str> {
    match node.input.as_slice() {
        [a, b] if a == this => Some(b),
        [a, b] if b == this => Some(a),
        _ => None,
    }
}

/// Replaces each chain (the indices of its nodes, the fused node) in one pass. The fused node
/// takes the place of the chain's last node: everything the chain reads is produced before
/// that, and everything reading its output comes after, so the order stays topological.
/// Chains must not share nodes.
pub(crate) fn replace_chains(graph: &mut GraphProto, chains: Vec<(Vec<usize>, NodeProto)>) {
    let mut fused_at: HashMap<usize, NodeProto> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for (nodes, fused) in chains {
        let Some(&last) = nodes.iter().max() else { continue };
        removed.extend(nodes);
        fused_at.insert(last, fused);
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| fused_at.remove(&i).or_else(|| (!removed.contains(&i)).then_some(n)))
        .collect();
}

/// The values of an int64 initializer (raw little-endian bytes or `int64_data`).
pub(crate) fn int64_values(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != DataType::Int64 as i32 {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    let chunks = t.raw_data.chunks_exact(8);
    chunks.remainder().is_empty().then(|| chunks.map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())
}

/// The one value of a single-element f32 initializer.
pub(crate) fn scalar_f32(t: &TensorProto) -> Option<f32> {
    if t.data_type != DataType::Float as i32 || t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    match t.raw_data.as_slice() {
        [] => t.float_data.first().copied(),
        raw => Some(f32::from_le_bytes(raw.try_into().ok()?)),
    }
}
