//! Finds every GroupNorm in the form our exporter writes, eleven ONNX nodes, and replaces it with
//! one `EdgediffGroupNorm` node ([`crate::ops::group_norm`]) before tract parses the graph:
//!
//! ```text
//! x ─ Reshape[0,G,-1] ─ ReduceMean ─ Sub ─ Mul(·,·) ─ ReduceMean ─ Add(eps) ─ Sqrt ─ Div
//!   ─ Reshape[0,C,H,W] ─ Mul(gamma[C,1,1]) ─ Add(beta[C,1,1]) ─ y
//!                       ⇒  x ─ EdgediffGroupNorm(gamma, beta; num_groups, epsilon) ─ y
//! ```
//!
//! The file on disk is untouched: ONNX Runtime runs the standard graph.

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, GraphProto, NodeProto, TensorProto};

use super::{int64_values, only_reader, other_input, readers, replace_chains, scalar_f32};
use crate::ops::GROUP_NORM_OP;

/// Rewrites every GroupNorm of the exporter's form (above, constant `gamma`, `beta`, `eps`; every
/// intermediate read only inside the chain) into one [`GROUP_NORM_OP`] node; returns how many.
pub fn fuse_group_norms(graph: &mut GraphProto) -> usize {
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let readers = readers(graph);
    let chains: Vec<_> = (0..graph.node.len())
        .filter(|&i| graph.node[i].op_type == "Reshape")
        .filter_map(|i| match_chain(graph, &inits, &readers, i))
        .collect();
    let fused = chains.len();
    replace_chains(graph, chains);
    fused
}

/// The chain starting at the grouping `Reshape` node `start`: the indices it replaces and the
/// fused node.
fn match_chain(
    graph: &GraphProto,
    inits: &HashMap<&str, &TensorProto>,
    readers: &HashMap<&str, usize>,
    start: usize,
) -> Option<(Vec<usize>, NodeProto)> {
    let node = |i: usize| &graph.node[i];
    let only = |tensor: &str, op: &str| {
        only_reader(graph, readers, tensor).filter(|&i| node(i).op_type == op && node(i).output.len() == 1)
    };
    let int64s = |name: &str| inits.get(name).and_then(|t| int64_values(t));
    let reads = |i: usize, tensor: &str| node(i).input.iter().any(|x| x == tensor);

    let group = node(start);
    let x = group.input.first()?;
    let groups = match int64s(group.input.get(1)?)?.as_slice() {
        [0, g, -1] if *g > 0 => *g,
        _ => return None,
    };
    let grouped = group.output.first()?.as_str();
    // `grouped` is read by the mean and by the centring, nothing else.
    let users: Vec<usize> = (0..graph.node.len()).filter(|&i| reads(i, grouped)).collect();
    if group.op_type != "Reshape" || readers.get(grouped) != Some(&2) || users.len() != 2 {
        return None;
    }
    let mean = *users.iter().find(|&&i| node(i).op_type == "ReduceMean")?;
    let sub = *users.iter().find(|&&i| node(i).op_type == "Sub")?;
    if !reduces_last_axis(node(mean)) || node(sub).input != [grouped, node(mean).output[0].as_str()] {
        return None;
    }
    let centred = node(sub).output[0].as_str();
    // `centred` is read twice by the square and once by the division.
    let square = (0..graph.node.len()).find(|&i| node(i).op_type == "Mul" && reads(i, centred))?;
    let div = (0..graph.node.len()).find(|&i| node(i).op_type == "Div" && reads(i, centred))?;
    if readers.get(centred) != Some(&3) || node(square).input != [centred, centred] {
        return None;
    }
    let var = only(&node(square).output[0], "ReduceMean").filter(|&i| reduces_last_axis(node(i)))?;
    let add_eps = only(&node(var).output[0], "Add")?;
    let eps_name = other_input(node(add_eps), &node(var).output[0])?;
    let eps = inits.get(eps_name).and_then(|t| scalar_f32(t))?;
    let sqrt = only(&node(add_eps).output[0], "Sqrt")?;
    if only(&node(sqrt).output[0], "Div") != Some(div) || node(div).input != [centred, node(sqrt).output[0].as_str()] {
        return None;
    }
    let ungroup = only(&node(div).output[0], "Reshape")?;
    let channels = match int64s(node(ungroup).input.get(1)?)?.as_slice() {
        [0, c, h, w] if *c > 0 && *h > 0 && *w > 0 && c % groups == 0 => *c,
        _ => return None,
    };
    let channel_param = |name: &str| {
        inits.get(name).is_some_and(|t| t.data_type == DataType::Float as i32 && t.dims == [channels, 1, 1])
    };
    let scale = only(&node(ungroup).output[0], "Mul")?;
    let gamma = other_input(node(scale), &node(ungroup).output[0]).filter(|g| channel_param(g))?;
    let shift = only(&node(scale).output[0], "Add")?;
    let beta = other_input(node(shift), &node(scale).output[0]).filter(|b| channel_param(b))?;
    let fused = NodeProto {
        name: format!("{}.group_norm", node(shift).name),
        op_type: GROUP_NORM_OP.into(),
        input: vec![x.clone(), gamma.to_string(), beta.to_string()],
        output: node(shift).output.clone(),
        attribute: vec![
            AttributeProto { name: "num_groups".into(), i: groups, ..Default::default() },
            AttributeProto { name: "epsilon".into(), f: eps, ..Default::default() },
        ],
        ..Default::default()
    };
    Some((vec![start, mean, sub, square, var, add_eps, sqrt, div, ungroup, scale, shift], fused))
}

/// `ReduceMean` over axis 2 of `[N, G, len]`, keeping it (the exporter's attribute form).
fn reduces_last_axis(node: &NodeProto) -> bool {
    node.input.len() == 1
        && node.attribute.iter().any(|a| a.name == "axes" && (a.ints == [2] || a.ints == [-1]))
        && node.attribute.iter().all(|a| a.name != "keepdims" || a.i == 1)
}
