//! GroupNorm as PyTorch exports it, and as opset 21 writes it, replaced with one
//! `EdgediffGroupNorm` node ([`crate::ops::group_norm`]):
//!
//! ```text
//! x ─ Reshape[0,G,-1] ─ InstanceNormalization(ones[G], zeros[G]; eps) ─ Reshape(Shape(x))
//!   ─ Mul(gamma[C,1,1]) ─ Add(beta[C,1,1]) ─ y                        (torch.onnx, opset < 18)
//!   (attention's GroupNorm acts on [N, C, T]: gamma[C,1], beta[C,1])
//! x ─ GroupNormalization(gamma[C], beta[C]; num_groups, eps) ─ y       (opset 21)
//!                       ⇒  x ─ EdgediffGroupNorm(gamma, beta; num_groups, epsilon) ─ y
//! ```
//!
//! The fused op computes GroupNorm the way our exporter's form does (the group's sum times 1/n,
//! the mean subtracted, `x / sqrt(mean(x²) + eps)`, then `x · gamma + beta`), not tract's
//! InstanceNormalization: the same maths within float rounding, measured against diffusers by
//! the fixtures of `tests/diffusers_models.rs`. Opset 18's GroupNormalization takes one scale
//! per group, which cannot be written per channel without the channel count; tract runs it.

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, GraphProto, NodeProto, TensorProto};

use super::{int64_values, only_reader, other_input, readers, replace_chains};
use crate::ops::GROUP_NORM_OP;

/// Rewrites every GroupNorm of the two forms above; returns how many. `opset` is the model's.
pub fn fuse_torch_group_norms(graph: &mut GraphProto, opset: i64) -> usize {
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let readers = readers(graph);
    let m = Matcher { graph, inits: &inits, readers: &readers };
    let chains: Vec<_> = (0..graph.node.len())
        .filter_map(|i| match graph.node[i].op_type.as_str() {
            "InstanceNormalization" => m.instance_norm_chain(i),
            "GroupNormalization" if opset >= 21 => m.group_normalization(i),
            _ => None,
        })
        .collect();
    let fused = chains.len();
    replace_chains(graph, chains);
    fused
}

struct Matcher<'g> {
    graph: &'g GraphProto,
    inits: &'g HashMap<&'g str, &'g TensorProto>,
    readers: &'g HashMap<&'g str, usize>,
}

impl Matcher<'_> {
    fn node(&self, i: usize) -> &NodeProto {
        &self.graph.node[i]
    }

    /// The node that alone reads `tensor`, if it is an `op` with one output.
    fn only(&self, tensor: &str, op: &str) -> Option<usize> {
        only_reader(self.graph, self.readers, tensor)
            .filter(|&i| self.node(i).op_type == op && self.node(i).output.len() == 1)
    }

    fn producer(&self, tensor: &str) -> Option<usize> {
        self.graph.node.iter().position(|n| n.output.iter().any(|o| o == tensor))
    }

    /// f32 values of an initializer.
    fn floats(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.inits.get(name)?;
        if t.data_type != DataType::Float as i32 {
            return None;
        }
        if t.raw_data.is_empty() {
            return Some(t.float_data.clone());
        }
        let chunks = t.raw_data.chunks_exact(4);
        chunks.remainder().is_empty().then(|| chunks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// A constant f32 of `[channels, 1, 1]` (an image's) or `[channels, 1]` (attention's
    /// `[N, C, T]`).
    fn channel_param(&self, name: &str, channels: i64) -> bool {
        self.inits.get(name).is_some_and(|t| {
            t.data_type == DataType::Float as i32 && (t.dims == [channels, 1, 1] || t.dims == [channels, 1])
        })
    }

    /// The chain around the `InstanceNormalization` node `i` (see the module doc).
    fn instance_norm_chain(&self, i: usize) -> Option<(Vec<usize>, NodeProto)> {
        let norm = self.node(i);
        let (grouped, scale, bias) = match norm.input.as_slice() {
            [x, s, b] => (x, s, b),
            _ => return None,
        };
        let group = self.producer(grouped)?;
        let reshape = self.node(group);
        let groups = match int64_values(self.inits.get(reshape.input.get(1)?.as_str())?)?.as_slice() {
            [0, g, -1] if *g > 0 => *g,
            _ => return None,
        };
        let unit = |name: &str, want: f32| {
            self.floats(name).is_some_and(|v| v.len() == groups as usize && v.iter().all(|&x| x == want))
        };
        let plain_reshape =
            |n: &NodeProto| n.op_type == "Reshape" && n.attribute.iter().all(|a| a.name != "allowzero" || a.i == 0);
        if !plain_reshape(reshape)
            || !unit(scale, 1.0)
            || !unit(bias, 0.0)
            || self.only(grouped, "InstanceNormalization") != Some(i)
        {
            return None;
        }
        let x = reshape.input.first()?;
        let eps = norm.attribute.iter().find(|a| a.name == "epsilon").map_or(1e-5, |a| a.f);
        let ungroup = self.only(&norm.output[0], "Reshape").filter(|&u| plain_reshape(self.node(u)))?;
        // Back to x's own shape, read from x by a `Shape` node.
        let shape_of = self.producer(self.node(ungroup).input.get(1)?)?;
        if self.node(shape_of).op_type != "Shape"
            || self.node(shape_of).input.first() != Some(x)
            || !self.node(shape_of).attribute.is_empty()
        {
            return None;
        }
        let scale_i = self.only(&self.node(ungroup).output[0], "Mul")?;
        let gamma = other_input(self.node(scale_i), &self.node(ungroup).output[0])?;
        let channels = self.inits.get(gamma)?.dims.first().copied().filter(|c| c % groups == 0)?;
        let shift_i = self.only(&self.node(scale_i).output[0], "Add")?;
        let beta = other_input(self.node(shift_i), &self.node(scale_i).output[0])?;
        if !self.channel_param(gamma, channels) || !self.channel_param(beta, channels) {
            return None;
        }
        let name = format!("{}.group_norm", self.node(shift_i).name);
        let fused = group_norm_node(name, x, gamma, beta, groups, eps, self.node(shift_i).output.clone());
        Some((vec![group, i, ungroup, scale_i, shift_i], fused))
    }

    /// Opset 21's `GroupNormalization` node `i`, with per-channel constant scale and bias.
    fn group_normalization(&self, i: usize) -> Option<(Vec<usize>, NodeProto)> {
        let n = self.node(i);
        let [x, gamma, beta] = n.input.as_slice() else { return None };
        let attr = |name: &str| n.attribute.iter().find(|a| a.name == name);
        let groups = attr("num_groups")?.i;
        let eps = attr("epsilon").map_or(1e-5, |a| a.f);
        let (g, b) = (self.floats(gamma)?, self.floats(beta)?);
        if groups <= 0
            || g.len() != b.len()
            || g.is_empty()
            || g.len() as i64 % groups != 0
            || attr("stash_type").is_some_and(|a| a.i != 1)
        {
            return None;
        }
        // Our op reads gamma and beta as [C] or [C, 1, 1]: both are C values in order.
        let fused = group_norm_node(format!("{}.group_norm", n.name), x, gamma, beta, groups, eps, n.output.clone());
        Some((vec![i], fused))
    }
}

fn group_norm_node(
    name: String,
    x: &str,
    gamma: &str,
    beta: &str,
    groups: i64,
    eps: f32,
    output: Vec<String>,
) -> NodeProto {
    NodeProto {
        name,
        op_type: GROUP_NORM_OP.into(),
        input: vec![x.to_string(), gamma.to_string(), beta.to_string()],
        output,
        attribute: vec![
            AttributeProto { name: "num_groups".into(), i: groups, ..Default::default() },
            AttributeProto { name: "epsilon".into(), f: eps, ..Default::default() },
        ],
        ..Default::default()
    }
}
