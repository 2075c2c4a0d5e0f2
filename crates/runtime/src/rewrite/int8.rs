//! Finds the int8 convolutions and matrix products `train quantize --form integer` writes and
//! turns each into one `EdgediffInt8Conv` / `EdgediffInt8MatMul` node, before tract sees the
//! graph:
//!
//! ```text
//! x ─ QuantizeLinear ─ ConvInteger ─ Cast(f32) ─ Mul(scale[M]) ─ [Add(bias[M])] ─ y
//!                       ⇒  x ─ EdgediffInt8Conv(x_scale, x_zero, w, scale[, bias]) ─ y
//! x ─ QuantizeLinear ─ MatMulInteger(w[K, M]) ─ Cast(f32) ─ Mul(scale[M]) ─ [Add(bias[M])] ─ y
//!                       ⇒  x ─ EdgediffInt8MatMul(x_scale, x_zero, w, scale[, bias]) ─ y
//! ```
//!
//! A smoothed input (`train quantize --smooth`: `x ─ Mul(1/a[C]) ─ QuantizeLinear`) is fused
//! too: the fused node reads `x` itself, takes the per-channel constant as its last input and
//! says so with the attribute `smoothed = 1`; the `Mul` goes once no other node reads it.
//!
//! The fused node computes the same arithmetic as tract on the unfused chain ([`edgediff_qconv::quantize`], exact
//! integer sums, [`edgediff_qconv::dequantize`]) in one pass over the activations instead of
//! five tract operators (see [`crate::ops::int8_conv`]). Only plain convolutions are fused (one
//! group, no dilation, explicit padding, constant symmetric int8 weights); anything else is
//! left for tract. The file on disk is untouched: ONNX Runtime runs the standard graph.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{attribute_proto, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto, TensorProto};

use super::{only_reader, other_input, readers, replace_chains};
use crate::ops::{INT8_CONV_OP, INT8_MATMUL_OP, SMOOTHED_ATTR};

/// Rewrites `model` in place and returns how many convolutions and matrix products were fused.
pub fn fuse_integer_convs(graph: &mut GraphProto) -> usize {
    let (chains, smoothing_muls) = find_chains(graph);
    let fused = chains.len();
    replace_chains(graph, chains);
    // QuantizeLinear nodes whose every reader was fused, then the smoothing Muls they read.
    drop_unread(graph, |n| n.op_type == "QuantizeLinear");
    let smoothing: HashSet<String> = smoothing_muls.into_iter().collect();
    drop_unread(graph, |n| smoothing.contains(&n.name));
    fused
}

/// Removes the nodes `candidate` picks whose outputs no node reads and no graph output names.
fn drop_unread(graph: &mut GraphProto, candidate: impl Fn(&NodeProto) -> bool) {
    let read: HashSet<String> = readers(graph).into_keys().map(str::to_string).collect();
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    graph.node.retain(|n| !candidate(n) || n.output.iter().any(|o| read.contains(o) || outputs.contains(o)));
}

/// Every fusable chain: the indices of the nodes it replaces and the fused node, and the names
/// of the smoothing `Mul`s the fused nodes read through. Chains are disjoint: each node after
/// the ConvInteger is the only reader of the one before.
fn find_chains(graph: &GraphProto) -> (Vec<(Vec<usize>, NodeProto)>, Vec<String>) {
    let index = GraphIndex::new(graph);
    let mut smoothing_muls = Vec::new();
    let mut chains = Vec::new();
    for (ci, conv) in graph.node.iter().enumerate() {
        if let Some((remove, node, smoothing)) = index.chain_at(ci, conv) {
            smoothing_muls.extend(smoothing);
            chains.push((remove, node));
        }
    }
    (chains, smoothing_muls)
}

/// Lookups over one graph: its initializers, who reads and who produces each tensor.
struct GraphIndex<'g> {
    graph: &'g GraphProto,
    inits: HashMap<&'g str, &'g TensorProto>,
    readers: HashMap<&'g str, usize>,
    producer: HashMap<&'g str, usize>,
}

impl<'g> GraphIndex<'g> {
    fn new(graph: &'g GraphProto) -> GraphIndex<'g> {
        GraphIndex {
            graph,
            inits: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
            readers: readers(graph),
            producer: graph
                .node
                .iter()
                .enumerate()
                .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
                .collect(),
        }
    }

    fn only_reader(&self, tensor: &str) -> Option<usize> {
        only_reader(self.graph, &self.readers, tensor)
    }

    /// `name` is a constant f32 of `m` values along one axis (a per-channel scale or bias).
    fn f32_channels(&self, name: &str, m: i64) -> bool {
        self.inits.get(name).is_some_and(|t| {
            t.data_type == DataType::Float as i32
                && t.dims.iter().product::<i64>() == m
                && t.dims.iter().filter(|&&d| d != 1).count() <= 1
        })
    }

    /// The chain whose ConvInteger or MatMulInteger is node `ci`, if it has the fusable form:
    /// the nodes it replaces, the fused node, and the smoothing `Mul` it reads through.
    fn chain_at(&self, ci: usize, conv: &NodeProto) -> Option<(Vec<usize>, NodeProto, Option<String>)> {
        let (fused_op, weight_rank, m_axis) = match conv.op_type.as_str() {
            "ConvInteger" if plain_conv(conv) => (INT8_CONV_OP, 4, 0),
            "MatMulInteger" if conv.attribute.is_empty() => (INT8_MATMUL_OP, 2, 1),
            _ => return None,
        };
        let q = self.quantized_input(conv, weight_rank)?;
        let m = self.inits.get(conv.input[1].as_str())?.dims[m_axis];
        let cast_i = self.only_reader(&conv.output[0])?;
        let cast = &self.graph.node[cast_i];
        let to_f32 = cast.attribute.iter().any(|a| a.name == "to" && a.i == DataType::Float as i64);
        if cast.op_type != "Cast" || !to_f32 {
            return None;
        }
        let mul_i = self.only_reader(&cast.output[0])?;
        let mul = &self.graph.node[mul_i];
        let scale = other_input(mul, &cast.output[0])?;
        if mul.op_type != "Mul" || !self.f32_channels(scale, m) {
            return None;
        }
        let smoothed = self.smoothing(&q.input[0], fused_op == INT8_CONV_OP);
        let x = smoothed.as_ref().map_or(&q.input[0], |(_, x, _)| x);
        let mut remove = vec![ci, cast_i, mul_i];
        let mut inputs =
            vec![x.clone(), q.input[1].clone(), q.input[2].clone(), conv.input[1].clone(), scale.to_string()];
        let mut output = mul.output[0].clone();
        if let Some((add_i, bias)) = self.bias_after(&mul.output[0], m) {
            inputs.push(bias.to_string());
            output = self.graph.node[add_i].output[0].clone();
            remove.push(add_i);
        }
        let mut attribute = conv.attribute.clone();
        let smoothing_mul = smoothed.map(|(mul, _, multipliers)| {
            inputs.push(multipliers);
            attribute.push(AttributeProto {
                name: SMOOTHED_ATTR.into(),
                r#type: attribute_proto::AttributeType::Int as i32,
                i: 1,
                ..Default::default()
            });
            mul.name.clone()
        });
        let node = NodeProto {
            name: format!("{}.fused", conv.name),
            op_type: fused_op.to_string(),
            input: inputs,
            output: vec![output],
            attribute,
            ..Default::default()
        };
        Some((remove, node, smoothing_mul))
    }

    /// The `QuantizeLinear` feeding `conv`, if it and `conv` have the parameters our kernels
    /// take: constant f32 scale, the same u8 zero point on both, zero weight zero point,
    /// constant int8 weights of rank `weight_rank`.
    fn quantized_input(&self, conv: &NodeProto, weight_rank: usize) -> Option<&'g NodeProto> {
        if !(conv.input.len() == 3 || conv.input.len() == 4) {
            return None;
        }
        let q = &self.graph.node[*self.producer.get(conv.input[0].as_str())?];
        if q.op_type != "QuantizeLinear" || q.input.len() != 3 {
            return None;
        }
        let inits = &self.inits;
        let (x_scale, x_zero, w) =
            (inits.get(q.input[1].as_str())?, inits.get(q.input[2].as_str())?, inits.get(conv.input[1].as_str())?);
        let zero_ok = scalar_u8(x_zero).is_some()
            && x_scale.data_type == DataType::Float as i32
            && inits.get(conv.input[2].as_str()).and_then(|t| scalar_u8(t)) == scalar_u8(x_zero)
            && conv.input.get(3).is_none_or(|zp| inits.get(zp.as_str()).is_some_and(|t| all_zero_i8(t)));
        (zero_ok && w.data_type == DataType::Int8 as i32 && w.dims.len() == weight_rank).then_some(q)
    }

    /// The `Add` of a per-channel bias that alone reads `product`: its index and the bias.
    fn bias_after(&self, product: &str, m: i64) -> Option<(usize, &'g str)> {
        let add_i = self.only_reader(product)?;
        let add = &self.graph.node[add_i];
        let bias = other_input(add, product).filter(|b| add.op_type == "Add" && self.f32_channels(b, m))?;
        Some((add_i, bias))
    }

    /// `Mul(x, c)` producing `tensor`, with `c` a constant f32 of one value per channel along
    /// the channel axis (1 for a conv's NCHW input, the last for a matrix product's): the node,
    /// `x` and `c`'s name.
    fn smoothing(&self, tensor: &str, conv_input: bool) -> Option<(&'g NodeProto, String, String)> {
        let mul = &self.graph.node[*self.producer.get(tensor)?];
        if mul.op_type != "Mul" || mul.input.len() != 2 {
            return None;
        }
        let (x, c) = [(0, 1), (1, 0)].into_iter().find_map(|(a, b)| {
            let t = self.inits.get(mul.input[b].as_str())?;
            (t.data_type == DataType::Float as i32).then_some((&mul.input[a], t))
        })?;
        let along_channels = match c.dims.as_slice() {
            [1, _, 1, 1] | [_, 1, 1] => conv_input,
            [_] => !conv_input,
            _ => false,
        };
        along_channels.then(|| (mul, x.clone(), c.name.clone()))
    }
}

/// One group, no dilation, no `auto_pad`, 2-D: what our kernels run.
pub(crate) fn plain_conv(node: &NodeProto) -> bool {
    node.attribute.iter().all(|a| match a.name.as_str() {
        "group" => a.i == 1,
        "dilations" => a.ints.iter().all(|&d| d == 1),
        "auto_pad" => a.s.is_empty() || a.s == b"NOTSET",
        "pads" => a.ints.len() == 4 && a.ints.iter().all(|&p| p >= 0),
        "strides" => a.ints.len() == 2 && a.ints.iter().all(|&s| s >= 1),
        "kernel_shape" => a.ints.len() == 2,
        _ => false,
    })
}

fn raw_or_int32(t: &TensorProto) -> Vec<i32> {
    if !t.raw_data.is_empty() {
        t.raw_data
            .iter()
            .map(|&b| if t.data_type == DataType::Int8 as i32 { b as i8 as i32 } else { b as i32 })
            .collect()
    } else {
        t.int32_data.clone()
    }
}

fn scalar_u8(t: &TensorProto) -> Option<u8> {
    if t.data_type != DataType::Uint8 as i32 || t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    raw_or_int32(t).first().map(|&v| v as u8)
}

fn all_zero_i8(t: &TensorProto) -> bool {
    t.data_type == DataType::Int8 as i32 && raw_or_int32(t).iter().all(|&v| v == 0)
}
