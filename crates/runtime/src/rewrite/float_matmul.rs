//! Finds the fp32 matrix products with constant weights (linear layers: the time embedding,
//! the per-block time projections, the attention projections) and turns each, with the bias
//! `Add` that follows it, into one `EdgediffMatMul` node run on [`edgediff_fkernels`]:
//!
//! ```text
//! x ─ MatMul(w[K, M]) ─ [Add(bias[M])] ─ y          ⇒  x ─ EdgediffMatMul(w, [bias]) ─ y
//! x ─ Gemm(w, [bias], transB = 0|1) ─ y              ⇒  x ─ EdgediffMatMul(w, [bias], trans_b) ─ y
//! ```
//!
//! Why: tract picks its matrix kernel by shape, and its kernels for one row and for many sum in
//! different orders, so an image's time projections (one row per image) changed in the last
//! bits with the batch size. Our kernel sums every element the same way for any row count and
//! on every CPU. Only plain products are taken: `Gemm` with alpha = beta = 1 and no transposed
//! input, weights of rank 2, a bias of exactly `[M]` (`[1, M]` for `Gemm`).

use std::collections::HashMap;

use tract_onnx::pb::{attribute_proto, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto, TensorProto};

use super::{only_reader, other_input, readers, replace_chains};
use crate::ops::{FLOAT_MATMUL_OP, TRANS_B_ATTR};

/// Rewrites `graph` in place and returns how many products were taken.
pub fn fuse_float_matmuls(graph: &mut GraphProto) -> usize {
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let count = readers(graph);
    let mut chains = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        let product = match node.op_type.as_str() {
            "MatMul" => matmul(node, &inits),
            "Gemm" => gemm(node, &inits),
            _ => None,
        };
        let Some((m, trans_b)) = product else { continue };
        let mut inputs = node.input.clone();
        let (mut remove, mut output) = (vec![i], node.output[0].clone());
        if inputs.len() == 2 {
            if let Some((add_i, bias)) = bias_after(graph, &count, &inits, &node.output[0], m) {
                inputs.push(bias.to_string());
                output = graph.node[add_i].output[0].clone();
                remove.push(add_i);
            }
        }
        let attribute = vec![AttributeProto {
            name: TRANS_B_ATTR.into(),
            r#type: attribute_proto::AttributeType::Int as i32,
            i: trans_b as i64,
            ..Default::default()
        }];
        let fused = NodeProto {
            name: format!("{}.fp32", node.name),
            op_type: FLOAT_MATMUL_OP.to_string(),
            input: inputs,
            output: vec![output],
            attribute,
            ..Default::default()
        };
        chains.push((remove, fused));
    }
    let fused = chains.len();
    replace_chains(graph, chains);
    fused
}

/// `MatMul(x, w)` with `w` a constant f32 `[K, M]` and `x` computed: `M`, not transposed.
fn matmul(node: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Option<(i64, bool)> {
    let [x, w] = node.input.as_slice() else { return None };
    let w = inits.get(w.as_str()).filter(|w| f32_matrix(w))?;
    (!inits.contains_key(x.as_str()) && node.attribute.is_empty()).then_some((w.dims[1], false))
}

/// `Gemm(x, w[, c])` computing `x · w (+ c)` with a constant f32 `w` and `c`: `M` and transB.
fn gemm(node: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Option<(i64, bool)> {
    let (x, w) = (node.input.first()?, inits.get(node.input.get(1)?.as_str()).filter(|w| f32_matrix(w))?);
    let mut trans_b = false;
    for a in &node.attribute {
        match a.name.as_str() {
            "alpha" | "beta" if a.f == 1.0 => {}
            "transA" if a.i == 0 => {}
            "transB" if a.i == 0 || a.i == 1 => trans_b = a.i == 1,
            _ => return None,
        }
    }
    let m = if trans_b { w.dims[0] } else { w.dims[1] };
    let bias_ok = match node.input.get(2) {
        None => true,
        Some(c) => inits.get(c.as_str()).is_some_and(|c| f32_bias(c, m, true)),
    };
    (bias_ok && node.input.len() <= 3 && !inits.contains_key(x.as_str())).then_some((m, trans_b))
}

/// The `Add` of a constant bias `[M]` that alone reads `product`: its index and the bias.
fn bias_after<'g>(
    graph: &'g GraphProto,
    count: &HashMap<&str, usize>,
    inits: &HashMap<&str, &TensorProto>,
    product: &str,
    m: i64,
) -> Option<(usize, &'g str)> {
    let add_i = only_reader(graph, count, product)?;
    let add = &graph.node[add_i];
    let bias = other_input(add, product)?;
    (add.op_type == "Add" && inits.get(bias).is_some_and(|b| f32_bias(b, m, false))).then_some((add_i, bias))
}

fn f32_matrix(t: &TensorProto) -> bool {
    t.data_type == DataType::Float as i32 && t.dims.len() == 2 && t.dims.iter().all(|&d| d > 0)
}

/// A constant f32 of shape `[M]` (or `[1, M]` where `row_ok`: Gemm's broadcast of a row).
fn f32_bias(t: &TensorProto, m: i64, row_ok: bool) -> bool {
    t.data_type == DataType::Float as i32 && (t.dims == [m] || (row_ok && t.dims == [1, m]))
}
