//! From the decoded protobuf to tract's model, one weight at a time. tract parses a graph from
//! a `&ModelProto` and copies every initializer into a tensor of its own, so the protobuf's
//! copy and tract's would both be alive until the protobuf is dropped: twice the weights. Here
//! each initializer leaves the protobuf first, a one-element stand-in takes its place while
//! tract parses the graph, and each weight then becomes its tensor and is freed, in turn.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::konst::Const;

/// tract's model of `proto`, parsed by `framework`; `proto` is left with stand-ins for its
/// initializers.
pub(crate) fn into_tract_model(framework: &tract_onnx::Onnx, proto: &mut ModelProto) -> TractResult<InferenceModel> {
    let weights = take_weights(proto);
    let parsed = framework.parse(proto, None)?;
    ensure!(parsed.unresolved_inputs.is_empty(), "could not resolve inputs: {:?}", parsed.unresolved_inputs);
    let mut model = parsed.model;
    for weight in weights {
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
    Ok(model)
}

/// The initializers that hold data in `raw_data` (the weights; other forms are small), each
/// replaced by a stand-in: a one-string tensor naming it, distinct from every other constant
/// (tract merges constants of equal value into one node).
fn take_weights(proto: &mut ModelProto) -> Vec<TensorProto> {
    let Some(graph) = proto.graph.as_mut() else { return Vec::new() };
    let mut weights = Vec::new();
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
