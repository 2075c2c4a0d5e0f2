//! Finds every `Mul(x, gamma[C,1,1]) → Add(·, beta[C,1,1])` pair (the affine end of a GroupNorm in
//! a form other than our exporter's) and replaces it with one `EdgediffChannelAffine` node
//! ([`crate::ops::channel_affine`]) before tract parses the graph.

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

use super::{only_reader, other_input, readers, replace_chains};
use crate::ops::CHANNEL_AFFINE_OP;

/// Rewrites every `Mul(x, g[C,1,1]) → Add(·, b[C,1,1])` pair (constant `g`, `b`; the product
/// read only by the sum) into one [`CHANNEL_AFFINE_OP`] node; returns how many.
pub fn fuse_channel_affines(graph: &mut GraphProto) -> usize {
    let channel_param = |t: &TensorProto| {
        t.data_type == DataType::Float as i32 && t.dims.len() == 3 && t.dims[1] == 1 && t.dims[2] == 1
    };
    let params: HashMap<&str, i64> =
        graph.initializer.iter().filter(|t| channel_param(t)).map(|t| (t.name.as_str(), t.dims[0])).collect();
    let readers = readers(graph);
    let mut chains = Vec::new();
    for (mi, mul) in graph.node.iter().enumerate() {
        if mul.op_type != "Mul" || mul.input.len() != 2 {
            continue;
        }
        let Some(g) = mul.input.iter().rev().find(|i| params.contains_key(i.as_str())) else { continue };
        let Some(x) = other_input(mul, g) else { continue };
        let Some(ai) = only_reader(graph, &readers, &mul.output[0]) else { continue };
        let add = &graph.node[ai];
        let Some(b) = other_input(add, &mul.output[0]) else { continue };
        if add.op_type != "Add" || params.get(b) != params.get(g.as_str()) {
            continue;
        }
        let node = NodeProto {
            name: format!("{}.affine", add.name),
            op_type: CHANNEL_AFFINE_OP.into(),
            input: vec![x.to_string(), g.clone(), b.to_string()],
            output: add.output.clone(),
            ..Default::default()
        };
        chains.push((vec![mi, ai], node));
    }
    let fused = chains.len();
    replace_chains(graph, chains);
    fused
}
