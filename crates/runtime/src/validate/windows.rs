//! The sliding-window operators (convolutions and pools) checked against the ONNX schema before
//! tract reads them: input counts, and attributes with one entry per spatial axis (two for
//! `pads`) and values in range. tract indexes these lists by axis without checking their
//! lengths, so a file that breaks the schema would panic inside it.

use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto};

use crate::error::RuntimeError;

/// The number of inputs each operator takes and which input holds its kernel (`[O, I, k...]`).
fn schema(op_type: &str) -> Option<(std::ops::RangeInclusive<usize>, Option<usize>)> {
    Some(match op_type {
        "Conv" | "ConvTranspose" => (2..=3, Some(1)),
        "ConvInteger" => (2..=4, Some(1)),
        "QLinearConv" => (8..=9, Some(3)),
        "MaxPool" | "AveragePool" | "LpPool" => (1..=1, None),
        _ => return None,
    })
}

/// Every convolution and pool of `graph` as the module doc says.
pub(crate) fn check(graph: &GraphProto) -> Result<(), RuntimeError> {
    for node in graph.node.iter().filter(|n| n.domain.is_empty() || n.domain == "ai.onnx") {
        let Some((arity, kernel_input)) = schema(&node.op_type) else { continue };
        check_node(graph, node, arity, kernel_input)
            .map_err(|e| RuntimeError::Interface(format!("node `{}` ({}) {e}", node.name, node.op_type)))?;
    }
    Ok(())
}

fn check_node(
    graph: &GraphProto,
    node: &NodeProto,
    arity: std::ops::RangeInclusive<usize>,
    kernel_input: Option<usize>,
) -> Result<(), String> {
    if !arity.contains(&node.input.len()) {
        return Err(format!("has {} inputs, expected {} to {}", node.input.len(), arity.start(), arity.end()));
    }
    // Only ConvInteger's x zero point may be left out in the middle (trailing ones are dropped).
    let optional_gap = |i: usize| node.op_type == "ConvInteger" && i == 2;
    if let Some(i) = (0..node.input.len()).find(|&i| node.input[i].is_empty() && !optional_gap(i)) {
        return Err(format!("has no tensor for input {i}, which this operator needs"));
    }
    let ints = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a: &AttributeProto| &a.ints);
    let kernel = kernel_input.and_then(|i| graph.initializer.iter().find(|t| t.name == node.input[i]));
    let kernel_rank = kernel.map(|t| t.dims.len());
    if let Some(rank) = kernel_rank.filter(|&r| r < 3) {
        return Err(format!("has a kernel of rank {rank}, expected [O, I, k...] (rank 3 or more)"));
    }
    let kernel_shape = ints("kernel_shape");
    if kernel_input.is_none() && kernel_shape.is_none() {
        return Err("has no kernel_shape".into());
    }
    let Some(spatial) = kernel_rank.map(|r| r - 2).or(kernel_shape.map(Vec::len)) else { return Ok(()) };
    let lists = [("kernel_shape", 1, 1), ("strides", 1, 1), ("dilations", 1, 1), ("pads", 2, 0)];
    let transpose = [("output_padding", 1, 0), ("output_shape", 1, 1)];
    for (name, per_axis, least) in lists.into_iter().chain(transpose) {
        let Some(values) = ints(name) else { continue };
        if values.len() != per_axis * spatial {
            return Err(format!(
                "has {} {name}, expected {} for {spatial} spatial axes",
                values.len(),
                per_axis * spatial
            ));
        }
        if let Some(v) = values.iter().find(|&&v| v < least) {
            return Err(format!("has {name} value {v}, expected {least} or more"));
        }
    }
    match node.attribute.iter().find(|a| a.name == "group").map(|a| a.i) {
        Some(g) if g < 1 => Err(format!("has group {g}, expected 1 or more")),
        _ => Ok(()),
    }
}
