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

/// Removes the initializers no node and no graph output reads (the constants of chains the
/// fusions replaced), with their entries in the graph's inputs (old files list initializers
/// there too), so tract makes no constant node for them. Returns how many were removed. A graph
/// with subgraphs (`If`, `Loop`, `Scan`) is left alone: their bodies may read any outer tensor.
pub fn drop_unread_initializers(graph: &mut GraphProto) -> usize {
    if graph.node.iter().any(|n| n.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty())) {
        return 0;
    }
    let read: HashSet<String> = readers(graph).into_keys().map(str::to_owned).collect();
    let before = graph.initializer.len();
    let unread: HashSet<String> =
        graph.initializer.iter().filter(|t| !read.contains(&t.name)).map(|t| t.name.clone()).collect();
    graph.initializer.retain(|t| !unread.contains(&t.name));
    graph.input.retain(|i| !unread.contains(&i.name));
    before - graph.initializer.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{AttributeProto, ValueInfoProto};

    fn graph(nodes: Vec<NodeProto>) -> GraphProto {
        let init = |name: &str| TensorProto { name: name.into(), ..Default::default() };
        let info = |name: &str| ValueInfoProto { name: name.into(), ..Default::default() };
        GraphProto {
            node: nodes,
            initializer: vec![init("w"), init("unread"), init("out")],
            input: vec![info("x"), info("w"), info("unread")],
            output: vec![info("y"), info("out")],
            ..Default::default()
        }
    }

    fn node(op: &str, input: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
        let input = input.iter().map(|&i| i.to_owned()).collect();
        NodeProto { op_type: op.into(), input, output: vec!["y".into()], attribute, ..Default::default() }
    }

    #[test]
    fn unread_initializers_leave_with_their_inputs() {
        let mut g = graph(vec![node("Mul", &["x", "w"], vec![])]);
        assert_eq!(drop_unread_initializers(&mut g), 1);
        let names = |v: Vec<&str>| v.join(",");
        assert_eq!(names(g.initializer.iter().map(|t| t.name.as_str()).collect()), "w,out");
        assert_eq!(names(g.input.iter().map(|i| i.name.as_str()).collect()), "x,w");
    }

    #[test]
    fn a_graph_with_subgraphs_keeps_every_initializer() {
        let body = AttributeProto { name: "then_branch".into(), g: Some(GraphProto::default()), ..Default::default() };
        let mut g = graph(vec![node("If", &["x"], vec![body])]);
        assert_eq!(drop_unread_initializers(&mut g), 0);
        assert_eq!(g.initializer.len(), 3);
    }
}
