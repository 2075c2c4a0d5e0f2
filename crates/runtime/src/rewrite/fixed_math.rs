//! The rest of an fp32 network on arithmetic of our own, the same on every CPU: each
//! `Sigmoid`, `Sin`, `Cos`, `Exp` and `Tanh` becomes an `EdgediffUnary` node (and
//! `Mul(x, Sigmoid(x))` one SiLU node), each last-axis `Softmax` an `EdgediffSoftmax`, each
//! `MatMul` of two computed tensors an `EdgediffBatchMatMul`, and each fused GroupNorm asks for
//! its fixed-order arithmetic (and takes in the SiLU that is its only reader, if any: the same
//! function on the same values while they are in cache). Only for graphs whose floats are all
//! f32 ([`all_f32`]); the ops are in [`crate::ops::fixed_math`] and [`crate::ops::batch_matmul`].

use std::collections::HashMap;

use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto};

use super::{only_reader, readers, replace_chains};
use crate::ops::fixed_math::Function;
use crate::ops::{BATCH_MATMUL_OP, FIXED_ORDER_ATTR, FUNCTION_ATTR, GROUP_NORM_OP, SILU_ATTR, SOFTMAX_OP, UNARY_OP};

/// Rewrites `graph` in place and returns how many nodes now run on our arithmetic.
pub fn fix_math_order(graph: &mut GraphProto) -> usize {
    let silus = fuse_silus(graph);
    let GraphProto { node: nodes, initializer, .. } = graph;
    let inits: std::collections::HashSet<&str> = initializer.iter().map(|t| t.name.as_str()).collect();
    let mut taken = silus;
    for node in nodes.iter_mut() {
        let converted = if let Some(f) = Function::of_onnx(&node.op_type) {
            node.attribute = vec![function_attr(f)];
            node.op_type = UNARY_OP.into();
            true
        } else if node.op_type == "Softmax" && last_axis(node) {
            node.attribute.clear();
            node.op_type = SOFTMAX_OP.into();
            true
        } else if node.op_type == "MatMul"
            && node.input.len() == 2
            && node.input.iter().all(|i| !inits.contains(i.as_str()))
        {
            node.op_type = BATCH_MATMUL_OP.into();
            true
        } else if node.op_type == GROUP_NORM_OP {
            node.attribute.push(AttributeProto {
                name: FIXED_ORDER_ATTR.into(),
                r#type: AttributeType::Int as i32,
                i: 1,
                ..Default::default()
            });
            true
        } else {
            false
        };
        taken += converted as usize;
    }
    fold_silus_into_group_norms(graph);
    taken
}

/// Whether every floating-point tensor the graph declares is f32: no f16, bf16 or f64
/// initializer, input, output or `Cast` target. Our fixed-order ops take f32 only.
pub fn all_f32(graph: &GraphProto) -> bool {
    let other = [DataType::Float16 as i32, DataType::Bfloat16 as i32, DataType::Double as i32];
    let declared = graph.input.iter().chain(&graph.output).chain(&graph.value_info).filter_map(|v| {
        let tract_onnx::pb::type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
        Some(t.elem_type)
    });
    let casts = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Cast")
        .flat_map(|n| n.attribute.iter().filter(|a| a.name == "to").map(|a| a.i as i32));
    !graph.initializer.iter().map(|t| t.data_type).chain(declared).chain(casts).any(|t| other.contains(&t))
}

/// `Mul(x, Sigmoid(x))` (either order) where the Sigmoid has no other reader: one SiLU node.
fn fuse_silus(graph: &mut GraphProto) -> usize {
    let count = readers(graph);
    let producer: HashMap<&str, usize> =
        graph.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    let mut chains = Vec::new();
    for (mi, mul) in graph.node.iter().enumerate().filter(|(_, n)| n.op_type == "Mul" && n.input.len() == 2) {
        for (x, s) in [(0, 1), (1, 0)] {
            let Some(&si) = producer.get(mul.input[s].as_str()) else { continue };
            let sigmoid = &graph.node[si];
            let sole = only_reader(graph, &count, &sigmoid.output[0]) == Some(mi);
            if sigmoid.op_type == "Sigmoid" && sigmoid.input.first() == Some(&mul.input[x]) && sole {
                let node = NodeProto {
                    name: format!("{}.silu", mul.name),
                    op_type: UNARY_OP.into(),
                    input: vec![mul.input[x].clone()],
                    output: mul.output.clone(),
                    attribute: vec![function_attr(Function::Silu)],
                    ..Default::default()
                };
                chains.push((vec![si, mi], node));
                break;
            }
        }
    }
    let fused = chains.len();
    replace_chains(graph, chains);
    fused
}

/// Each SiLU `EdgediffUnary` that is the only reader of a fixed-order `EdgediffGroupNorm`'s
/// output: the GroupNorm takes it in ([`SILU_ATTR`]) and writes the SiLU's output (both still
/// count as nodes on our arithmetic).
fn fold_silus_into_group_norms(graph: &mut GraphProto) {
    let count = readers(graph);
    let producer: HashMap<&str, usize> =
        graph.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    let silu = function_attr(Function::Silu);
    let fixed = |n: &NodeProto| n.attribute.iter().any(|a| a.name == FIXED_ORDER_ATTR && a.i == 1);
    let folds: Vec<(usize, usize)> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type == UNARY_OP && n.attribute.first() == Some(&silu) && n.input.len() == 1)
        .filter_map(|(si, n)| {
            let &gi = producer.get(n.input[0].as_str())?;
            let norm = &graph.node[gi];
            let sole = only_reader(graph, &count, &n.input[0]) == Some(si);
            (norm.op_type == GROUP_NORM_OP && fixed(norm) && norm.output.len() == 1 && sole).then_some((gi, si))
        })
        .collect();
    for &(gi, si) in &folds {
        let output = std::mem::take(&mut graph.node[si].output[0]);
        let norm = &mut graph.node[gi];
        norm.output[0] = output;
        norm.attribute.push(AttributeProto {
            name: SILU_ATTR.into(),
            r#type: AttributeType::Int as i32,
            i: 1,
            ..Default::default()
        });
    }
    let folded: std::collections::HashSet<usize> = folds.iter().map(|&(_, si)| si).collect();
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !folded.contains(&(index - 1))
    });
}

fn function_attr(f: Function) -> AttributeProto {
    AttributeProto {
        name: FUNCTION_ATTR.into(),
        r#type: AttributeType::String as i32,
        s: f.name().as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A `Softmax` over the last axis: an explicit `axis = -1` (before opset 13 the default is 1,
/// with another meaning, so an absent axis is left to tract).
fn last_axis(node: &NodeProto) -> bool {
    node.attribute.iter().find(|a| a.name == "axis").is_some_and(|a| a.i == -1)
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::ValueInfoProto;

    use super::*;

    fn node(op: &str, input: &str, output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: output.into(),
            op_type: op.into(),
            input: vec![input.into()],
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    /// A GroupNorm takes in the SiLU that alone reads it; one whose output has another reader
    /// keeps its SiLU node.
    #[test]
    fn a_silu_that_alone_reads_a_group_norm_is_folded_into_it() {
        let silu = || vec![function_attr(Function::Silu)];
        let mut graph = GraphProto {
            node: vec![
                node(GROUP_NORM_OP, "x", "n1", vec![]),
                node("Sigmoid", "n1", "s1", vec![]),
                NodeProto {
                    op_type: "Mul".into(),
                    input: vec!["n1".into(), "s1".into()],
                    output: vec!["a1".into()],
                    ..Default::default()
                },
                node(GROUP_NORM_OP, "a1", "n2", vec![]),
                node(UNARY_OP, "n2", "a2", silu()),
                node("Relu", "n2", "r2", vec![]),
            ],
            output: vec![
                ValueInfoProto { name: "a2".into(), ..Default::default() },
                ValueInfoProto { name: "r2".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        fix_math_order(&mut graph);
        let ops: Vec<(&str, &str)> = graph.node.iter().map(|n| (n.op_type.as_str(), n.output[0].as_str())).collect();
        assert_eq!(ops, [(GROUP_NORM_OP, "a1"), (GROUP_NORM_OP, "n2"), (UNARY_OP, "a2"), ("Relu", "r2")]);
        let has_silu = |n: &NodeProto| n.attribute.iter().any(|a| a.name == SILU_ATTR && a.i == 1);
        assert!(has_silu(&graph.node[0]) && !has_silu(&graph.node[1]));
    }
}
