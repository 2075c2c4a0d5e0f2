//! `Constant` nodes as initializers. Exports write most constants (shapes, axes, scalars,
//! GroupNorm's unit scales) as `Constant` nodes, our exporter as initializers; the rewrites that
//! follow look for constant inputs among the initializers, so every `Constant` whose value is a
//! tensor or a plain number or list becomes one first. tract treats both the same way.
//!
//! torch's exporter also stores identical weights once and passes the copies through `Identity`
//! nodes (every GroupNorm scale of a freshly initialised model is all ones): each reader of such
//! an `Identity` reads the initializer itself instead.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

/// Moves every convertible `Constant` node of `graph` into its initializers; returns how many.
pub fn constants_to_initializers(graph: &mut GraphProto) -> usize {
    let mut moved = Vec::new();
    graph.node.retain(|n| match constant_value(n) {
        Some(tensor) => {
            moved.push(tensor);
            false
        }
        None => true,
    });
    let count = moved.len();
    graph.initializer.extend(moved);
    count
}

/// Makes every reader of an `Identity` of an initializer read the initializer, and drops the
/// `Identity` (unless a graph output names it); returns how many were dropped.
pub fn bypass_initializer_identities(graph: &mut GraphProto) -> usize {
    let inits: std::collections::HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let outputs: std::collections::HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let aliases: std::collections::HashMap<String, String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Identity" && n.domain.is_empty() && n.input.len() == 1 && n.output.len() == 1)
        .filter(|n| inits.contains(&n.input[0]) && !outputs.contains(&n.output[0]))
        .map(|n| (n.output[0].clone(), n.input[0].clone()))
        .collect();
    graph.node.retain(|n| !(n.op_type == "Identity" && n.output.len() == 1 && aliases.contains_key(&n.output[0])));
    for n in &mut graph.node {
        for input in &mut n.input {
            if let Some(source) = aliases.get(input) {
                input.clone_from(source);
            }
        }
    }
    aliases.len()
}

/// The value of a `Constant` node with one output, named as that output.
fn constant_value(node: &NodeProto) -> Option<TensorProto> {
    if node.op_type != "Constant" || !node.domain.is_empty() || node.output.len() != 1 || node.attribute.len() != 1 {
        return None;
    }
    let a = &node.attribute[0];
    let mut tensor = match a.name.as_str() {
        "value" => a.t.clone()?,
        "value_float" => TensorProto { data_type: DataType::Float as i32, float_data: vec![a.f], ..Default::default() },
        "value_floats" => TensorProto {
            data_type: DataType::Float as i32,
            dims: vec![a.floats.len() as i64],
            float_data: a.floats.clone(),
            ..Default::default()
        },
        "value_int" => TensorProto { data_type: DataType::Int64 as i32, int64_data: vec![a.i], ..Default::default() },
        "value_ints" => TensorProto {
            data_type: DataType::Int64 as i32,
            dims: vec![a.ints.len() as i64],
            int64_data: a.ints.clone(),
            ..Default::default()
        },
        _ => return None,
    };
    tensor.name = node.output[0].clone();
    Some(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::AttributeProto;

    fn constant(output: &str, attr: AttributeProto) -> NodeProto {
        NodeProto {
            op_type: "Constant".into(),
            output: vec![output.into()],
            attribute: vec![attr],
            ..Default::default()
        }
    }

    #[test]
    fn identities_of_initializers_are_bypassed() {
        let node = |op: &str, input: &str, output: &str| NodeProto {
            op_type: op.into(),
            input: vec![input.into()],
            output: vec![output.into()],
            ..Default::default()
        };
        let mut graph = GraphProto {
            node: vec![node("Identity", "w", "w2"), node("Identity", "x", "y"), node("Neg", "w2", "z")],
            initializer: vec![TensorProto { name: "w".into(), ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(bypass_initializer_identities(&mut graph), 1);
        let ops: Vec<(&str, &str)> = graph.node.iter().map(|n| (n.op_type.as_str(), n.input[0].as_str())).collect();
        assert_eq!(ops, [("Identity", "x"), ("Neg", "w")]);
    }

    #[test]
    fn tensors_and_numbers_move_and_other_nodes_stay() {
        let tensor = TensorProto {
            dims: vec![2],
            data_type: DataType::Int64 as i32,
            int64_data: vec![0, -1],
            ..Default::default()
        };
        let mut graph = GraphProto {
            node: vec![
                constant("shape", AttributeProto { name: "value".into(), t: Some(tensor), ..Default::default() }),
                NodeProto {
                    op_type: "Reshape".into(),
                    input: vec!["x".into(), "shape".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                },
                constant("eps", AttributeProto { name: "value_float".into(), f: 1e-5, ..Default::default() }),
                constant("axes", AttributeProto { name: "value_ints".into(), ints: vec![2, 3], ..Default::default() }),
                constant("s", AttributeProto { name: "value_string".into(), s: b"x".to_vec(), ..Default::default() }),
            ],
            ..Default::default()
        };
        assert_eq!(constants_to_initializers(&mut graph), 3);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Reshape", "Constant"]);
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["shape", "eps", "axes"]);
        assert_eq!((graph.initializer[1].float_data.clone(), graph.initializer[1].dims.len()), (vec![1e-5], 0));
        assert_eq!(graph.initializer[2].int64_data, vec![2, 3]);
    }
}
