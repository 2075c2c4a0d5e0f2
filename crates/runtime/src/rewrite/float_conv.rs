//! Hands the fp32 convolutions with constant weights to our own op: each plain ONNX `Conv`
//! (one group, no dilation, explicit padding, f32 weights and bias that are initializers)
//! becomes an `EdgediffConv` node with the same inputs and attributes, run on
//! [`edgediff_fkernels::Conv2d`] ([`crate::ops::float_conv`]). Anything else stays with tract.

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};

use super::int8::plain_conv;
use crate::ops::FLOAT_CONV_OP;

/// Rewrites `graph` in place and returns how many convolutions were taken.
pub fn fuse_float_convs(graph: &mut GraphProto) -> usize {
    let GraphProto { node: nodes, initializer, .. } = graph;
    let inits: HashMap<&str, (i32, &[i64])> =
        initializer.iter().map(|t: &TensorProto| (t.name.as_str(), (t.data_type, t.dims.as_slice()))).collect();
    let float = DataType::Float as i32;
    let mut taken = 0;
    for node in nodes.iter_mut().filter(|n| n.op_type == "Conv" && plain_conv(n)) {
        let Some(&(dt, w)) = node.input.get(1).and_then(|w| inits.get(w.as_str())) else { continue };
        if dt != float || w.len() != 4 || w.iter().any(|&d| d <= 0) || inits.contains_key(node.input[0].as_str()) {
            continue;
        }
        let kernel_ok = node.attribute.iter().filter(|a| a.name == "kernel_shape").all(|a| a.ints == w[2..]);
        let bias_ok = match node.input.get(2) {
            None => true,
            Some(b) => inits.get(b.as_str()).is_some_and(|&(dt, dims)| dt == float && dims == [w[0]]),
        };
        if kernel_ok && bias_ok && node.input.len() <= 3 {
            node.op_type = FLOAT_CONV_OP.to_string();
            taken += 1;
        }
    }
    taken
}
