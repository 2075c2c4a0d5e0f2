//! From the decoded protobuf to tract's model, one weight at a time. tract parses a graph from
//! a `&ModelProto` and copies every initializer into a tensor of its own, so the protobuf's
//! copy and tract's would both be alive until the protobuf is dropped: twice the weights. Here
//! each initializer leaves the protobuf first, a one-element stand-in takes its place while
//! tract parses the graph, and each weight then becomes its tensor and is freed, in turn.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::konst::Const;

/// tract's model of `proto`, parsed by `framework`; `proto` is left empty (freed as soon as
/// tract's graph is built).
pub(crate) fn into_tract_model(framework: &tract_onnx::Onnx, proto: &mut ModelProto) -> TractResult<InferenceModel> {
    if let Some(graph) = proto.graph.as_mut() {
        crate::rewrite::drop_unread_initializers(graph);
    }
    let weights = take_weights(proto);
    if let Some(graph) = proto.graph.as_mut() {
        shrink_graph(graph);
    }
    let packable = proto.graph.as_ref().map(packable_weights).unwrap_or_default();
    let parsed = framework.parse(proto, None)?;
    ensure!(parsed.unresolved_inputs.is_empty(), "could not resolve inputs: {:?}", parsed.unresolved_inputs);
    // tract's graph is built: of the protobuf, only the nodes whose weights are still to be
    // packed are needed. The rest (every node's names, attributes and the stand-ins, about a
    // fifth of the weights' size on the default model) is freed before the weights are loaded.
    let mut kept: HashMap<usize, NodeProto> = HashMap::new();
    if let Some(graph) = proto.graph.as_mut() {
        for &ix in packable.values() {
            kept.insert(ix, std::mem::take(&mut graph.node[ix]));
        }
    }
    *proto = ModelProto::default();
    let mut model = parsed.model;
    let mut deferred = Vec::new();
    for weight in weights {
        if let Some(&node) = packable.get(&weight.name) {
            deferred.push((node, weight));
            continue;
        }
        let outlet =
            parsed.outlets_by_name.get(&weight.name).with_context(|| format!("no node for `{}`", weight.name))?;
        let tensor = tract_onnx::tensor::load_tensor(&*framework.provider, &weight, None)
            .with_context(|| format!("initializer `{}`", weight.name))?
            .into_arc_tensor();
        drop(weight);
        let node = model.node_mut(outlet.node);
        ensure!(node.op_is::<Const>(), "`{}` is not a constant in tract's graph", node.name);
        node.outputs[0].fact = TypedFact::try_from(tensor.clone())?.into();
        node.op = Box::new(Const::new(tensor)?);
    }
    for (ix, weight) in deferred {
        let node = kept.remove(&ix).with_context(|| format!("no node for `{}`", weight.name))?;
        pack_node(framework, &mut model, &parsed.outlets_by_name, &node, weight)?;
    }
    Ok(model)
}

/// Gives back the spare capacity of the graph's lists while tract parses it, the peak of
/// loading. prost grows each list as it decodes, and an `AttributeProto` takes about 1.4 KB
/// whatever it holds, so a node of one to four attributes held room for four (5.7 KB) and the
/// node list room for twice its nodes: on the default model a fifth of what loading holds
/// beside the weights.
fn shrink_graph(graph: &mut GraphProto) {
    for node in &mut graph.node {
        node.attribute.shrink_to_fit();
        node.input.shrink_to_fit();
        node.output.shrink_to_fit();
    }
    graph.node.shrink_to_fit();
    graph.initializer.shrink_to_fit();
    graph.value_info.shrink_to_fit();
}

/// The weights of our fused nodes (input 3 of the int8 ones, 1 of the fp32 product) that no
/// other node reads, by name, with the index of the node that reads each.
fn packable_weights(graph: &GraphProto) -> HashMap<String, usize> {
    let readers = crate::rewrite::readers(graph);
    graph
        .node
        .iter()
        .enumerate()
        .filter_map(|(ix, n)| n.input.get(weight_input(n)?).map(|w| (w, ix)))
        .filter(|(w, _)| readers.get(w.as_str()) == Some(&1))
        .map(|(w, ix)| (w.clone(), ix))
        .collect()
}

/// Which input of `node` holds the weights our op packs, if it is one of ours.
fn weight_input(node: &NodeProto) -> Option<usize> {
    match node.op_type.as_str() {
        crate::ops::INT8_CONV_OP | crate::ops::INT8_MATMUL_OP => Some(3),
        crate::ops::FLOAT_MATMUL_OP | crate::ops::FLOAT_CONV_OP => Some(1),
        _ => None,
    }
}

/// Gives `node` (one of our fused nodes in `model`) its operator with `weight` packed, reading its
/// other constant inputs from `model`; `weight` is freed when this returns.
fn pack_node(
    framework: &tract_onnx::Onnx,
    model: &mut InferenceModel,
    outlets: &HashMap<String, OutletId>,
    node: &NodeProto,
    weight: TensorProto,
) -> TractResult<()> {
    let op = {
        let model = &*model;
        let weight_at = weight_input(node);
        let konst = |i: usize| -> TractResult<Arc<Tensor>> {
            if Some(i) == weight_at {
                let tensor = tract_onnx::tensor::load_tensor(&*framework.provider, &weight, None)?;
                return Ok(tensor.into_arc_tensor());
            }
            let name = node.input.get(i).with_context(|| format!("{}: no input {i}", node.name))?;
            let outlet = outlets.get(name).with_context(|| format!("{}: no tensor `{name}`", node.name))?;
            let konst = model.node(outlet.node).op_as::<Const>();
            konst.map(|k| k.val().clone()).with_context(|| format!("{}: input {i} must be a constant", node.name))
        };
        match node.op_type.as_str() {
            crate::ops::INT8_CONV_OP => crate::ops::int8_conv::packed(node, konst)?,
            crate::ops::FLOAT_MATMUL_OP => crate::ops::float_matmul::packed(node, konst)?,
            crate::ops::FLOAT_CONV_OP => crate::ops::float_conv::packed(node, konst)?,
            _ => crate::ops::int8_matmul::packed(node, konst)?,
        }
    };
    drop(weight);
    let id = model.node_by_name(&node.name)?.id;
    model.node_mut(id).op = op;
    Ok(())
}

/// The initializers that hold data in `raw_data` (the weights; other forms are small), each
/// replaced by a stand-in: a one-string tensor naming it, distinct from every other constant
/// (tract merges constants of equal value into one node).
fn take_weights(proto: &mut ModelProto) -> Vec<TensorProto> {
    let Some(graph) = proto.graph.as_mut() else { return Vec::new() };
    let mut weights = Vec::with_capacity(graph.initializer.iter().filter(|t| !t.raw_data.is_empty()).count());
    for tensor in graph.initializer.iter_mut().filter(|t| !t.raw_data.is_empty()) {
        let stand_in = TensorProto {
            name: tensor.name.clone(),
            data_type: DataType::String as i32,
            dims: vec![1],
            string_data: vec![format!("edgediff weight {}", weights.len()).into_bytes()],
            ..Default::default()
        };
        weights.push(std::mem::replace(tensor, stand_in));
    }
    weights
}
