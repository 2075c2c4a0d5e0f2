//! The rest of an fp32 network on arithmetic of our own, the same on every CPU: each
//! `Sigmoid`, `Sin`, `Cos`, `Exp` and `Tanh` becomes an `EdgediffUnary` node (and
//! `Mul(x, Sigmoid(x))` one SiLU node), each last-axis `Softmax` an `EdgediffSoftmax`, each
//! `MatMul` of two computed tensors an `EdgediffBatchMatMul`, and each fused GroupNorm asks for
//! its fixed-order arithmetic. Only for graphs whose floats are all f32 ([`all_f32`]); the ops
//! are in [`crate::ops::fixed_math`] and [`crate::ops::batch_matmul`].

use std::collections::HashMap;

use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto};

use super::{only_reader, readers, replace_chains};
use crate::ops::fixed_math::Function;
use crate::ops::{BATCH_MATMUL_OP, FIXED_ORDER_ATTR, FUNCTION_ATTR, GROUP_NORM_OP, SOFTMAX_OP, UNARY_OP};

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
