//! From the decoded protobuf to tract's model, one weight at a time. tract parses a graph from
//! a `&ModelProto` and copies every initializer into a tensor of its own, so the protobuf's
//! copy and tract's would both be alive until the protobuf is dropped: twice the weights. Here
//! each initializer leaves the protobuf first, a one-element stand-in takes its place while
//! tract parses the graph, and each weight then becomes its tensor and is freed, in turn.
//!
//! A weight whose bytes are the model file's own ([`WeightSource`]) is not even held while
//! tract parses: it is freed once compared with the file, and read again from it when its
//! turn comes, checked against the CRC-32 of what was freed (the file must not change
//! meanwhile). The graph's structure and the weights are then never in memory together.

use std::io::{Read, Seek};

use crate::source::regions::{raw_data_regions, ReadSeek, Region, WeightSource};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::konst::Const;

/// tract's model of `proto`, parsed by `framework`; `proto` is left empty (freed as soon as
/// tract's graph is built).
pub(crate) fn into_tract_model(
    framework: &tract_onnx::Onnx,
    proto: &mut ModelProto,
    source: Option<&WeightSource>,
) -> TractResult<InferenceModel> {
    if let Some(graph) = proto.graph.as_mut() {
        crate::rewrite::drop_unread_initializers(graph);
    }
    let mut weights: Vec<Taken> = take_weights(proto).into_iter().map(|tensor| Taken { tensor, lazy: None }).collect();
    let mut file = match source {
        Some(source) => release_file_weights(&mut weights, source)?,
        None => None,
    };
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
    for taken in weights {
        if let Some(&node) = packable.get(&taken.tensor.name) {
            deferred.push((node, taken));
            continue;
        }
        let weight = taken.restore(&mut file)?;
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
    for (ix, taken) in deferred {
        let weight = taken.restore(&mut file)?;
        let node = kept.remove(&ix).with_context(|| format!("no node for `{}`", weight.name))?;
        pack_node(framework, &mut model, &parsed.outlets_by_name, &node, weight)?;
    }
    Ok(model)
}

/// An initializer taken out of the protobuf. One whose bytes are the file's own is freed until
/// it is loaded: `raw_data` empty, its region and the CRC-32 of its bytes kept.
struct Taken {
    tensor: TensorProto,
    lazy: Option<(Region, u32)>,
}

impl Taken {
    /// The initializer with its bytes, read again from `file` if they were freed.
    fn restore(mut self, file: &mut Option<Box<dyn ReadSeek>>) -> TractResult<TensorProto> {
        let Some((region, crc)) = self.lazy else { return Ok(self.tensor) };
        let file = file.as_mut().context("the model file is no longer open")?;
        let mut bytes = vec![0u8; usize::try_from(region.len)?];
        file.seek(std::io::SeekFrom::Start(region.offset))?;
        file.read_exact(&mut bytes).with_context(|| format!("reading initializer `{}` again", self.tensor.name))?;
        ensure!(
            crc32fast::hash(&bytes) == crc,
            "the model file changed while it was loaded (initializer `{}`)",
            self.tensor.name
        );
        self.tensor.raw_data = bytes;
        Ok(self.tensor)
    }
}

/// Frees every taken weight whose bytes equal its region of the model file, and returns the
/// file to read them from again. A file that cannot be opened or walked leaves every weight held.
fn release_file_weights(weights: &mut [Taken], source: &WeightSource) -> TractResult<Option<Box<dyn ReadSeek>>> {
    let Ok(mut file) = source.open() else { return Ok(None) };
    let Ok(regions) = raw_data_regions(&mut *file) else { return Ok(None) };
    for taken in weights.iter_mut() {
        let raw = &taken.tensor.raw_data;
        let Some(&region) = regions.get(&taken.tensor.name).filter(|r| r.len == raw.len() as u64) else { continue };
        if same_bytes(&mut *file, region, raw) {
            taken.lazy = Some((region, crc32fast::hash(raw)));
            taken.tensor.raw_data = Vec::new();
        }
    }
    Ok(Some(file))
}

/// Whether `region` of `file` holds `bytes` (read in small pieces: no second copy of a weight).
/// A file that cannot be read there does not: the weight stays held.
fn same_bytes(file: &mut dyn ReadSeek, region: Region, bytes: &[u8]) -> bool {
    if file.seek(std::io::SeekFrom::Start(region.offset)).is_err() {
        return false;
    }
    let mut piece = [0u8; 1 << 14];
    bytes.chunks(piece.len()).all(|expected| {
        let got = &mut piece[..expected.len()];
        file.read_exact(got).is_ok() && got == expected
    })
}

/// Gives back the spare capacity of the graph's lists before tract parses it. prost grows each
/// list as it decodes, and an `AttributeProto` takes about 1.4 KB whatever it holds, so a node
/// of one to four attributes held room for four (5.7 KB) and the node list room for twice its
/// nodes: on the default model 0.29 MB of the 1.8 MB that loading held beside the weights.
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
    detach_constants(model, id);
    Ok(())
}

/// Cuts node `id`'s inputs after the first (the constants its packed operator holds now), so
/// that tract drops the constants no other node reads before it types the graph: a typed node
/// takes 1.5 KB whatever it holds, and the stand-ins and scales of the default int8 model's
/// fused nodes were a third of its graph.
fn detach_constants(model: &mut InferenceModel, id: usize) {
    let cut: Vec<OutletId> = model.node_mut(id).inputs.drain(1..).collect();
    for (i, outlet) in cut.into_iter().enumerate() {
        let inlet = InletId::new(id, i + 1);
        model.node_mut(outlet.node).outputs[outlet.slot].successors.retain(|s| *s != inlet);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Denoiser, LoadOptions};
    use std::path::Path;

    /// One evaluation of the model at `path` loaded with `weights`, as bits.
    fn evaluate(path: &Path, weights: Option<WeightSource>) -> Vec<u32> {
        let proto = crate::source::stream::read_model_proto(path, None).unwrap().proto;
        let model = Denoiser::load_proto(proto, &LoadOptions { weights, ..Default::default() }).unwrap();
        let mut network = model.into_network(1, 1).unwrap();
        let sample: Vec<f32> = (0..3 * 16 * 16).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let out = network.eval(&sample, &[500.0], None).unwrap();
        out.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn weights_read_again_from_the_file_give_the_same_bits() {
        for name in ["sprites-cond.onnx", "sprites-cond-int8.onnx"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name);
            let held = evaluate(&path, None);
            assert_eq!(evaluate(&path, Some(WeightSource::File(path.clone()))), held, "{name}");
        }
    }

    /// The file of `proto` at `path`, the initializers taken and released against it.
    fn released(path: &Path, proto: &mut ModelProto) -> (Vec<Taken>, Option<Box<dyn ReadSeek>>) {
        let mut weights: Vec<Taken> =
            take_weights(proto).into_iter().map(|tensor| Taken { tensor, lazy: None }).collect();
        let file = release_file_weights(&mut weights, &WeightSource::File(path.to_path_buf())).unwrap();
        (weights, file)
    }

    #[test]
    fn a_weight_the_file_does_not_hold_stays_and_a_changed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/sprites-cond.onnx"), &path).unwrap();
        let mut proto = crate::source::stream::read_model_proto(&path, None).unwrap().proto;
        // A weight changed in memory after decoding (as a rewrite might) is not the file's.
        let graph = proto.graph.as_mut().unwrap();
        let changed = graph.initializer.iter_mut().find(|t| t.raw_data.len() > 64).unwrap();
        changed.raw_data[0] ^= 1;
        let changed = changed.name.clone();
        let (weights, mut file) = released(&path, &mut proto);
        assert!(weights.iter().all(|w| w.lazy.is_some() != (w.tensor.name == changed)));
        // The file changes before the weights are read again: the first one read says so.
        let mut bytes = std::fs::read(&path).unwrap();
        for w in &weights {
            if let Some((region, _)) = w.lazy {
                bytes[region.offset as usize] ^= 1;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let lazy = weights.into_iter().find(|w| w.lazy.is_some()).unwrap();
        let e = lazy.restore(&mut file).err().unwrap().to_string();
        assert!(e.contains("changed while it was loaded"), "{e}");
    }
}
