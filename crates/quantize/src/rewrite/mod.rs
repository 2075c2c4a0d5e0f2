//! The graph rewrite: fp32 Conv/MatMul nodes with constant weights become int8 nodes.
//!
//! Two ONNX forms, both understood by tract and ONNX Runtime:
//! - [`QuantForm::QOperator`]: `QuantizeLinear → QLinearConv/QLinearMatMul → DequantizeLinear`.
//!   The integer op carries int8 weights, an int32 bias and the output's uint8 parameters, so an
//!   engine never needs the float weights (tract keeps them int8: the smallest memory).
//! - [`QuantForm::Qdq`]: `QuantizeLinear → DequantizeLinear → Conv/MatMul` with the weight as
//!   `DequantizeLinear(int8)`; engines pattern-match it into integer kernels (ONNX Runtime does;
//!   tract folds constant weight DequantizeLinear back to f32).
//!
//! Only Conv and MatMul with an initializer weight are touched. Nothing else is quantised, in
//! particular never a Softmax (see `tests/quantize_guards.rs`: tract returns all 1.0 for
//! `DequantizeLinear → Softmax → QuantizeLinear`), nor the attention score matmuls (both inputs
//! are activations), nor GroupNorm, SiLU, Resize or the additions between them: in a U-Net every
//! conv input comes out of a float GroupNorm/SiLU, so activations cannot stay int8 across convs.

mod nodes;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use edgediff_core::meta;

use edgediff_onnx::{data_type, GraphBuilder, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

use super::weights::ActivationType;
use super::QuantizeError;
use nodes::Rewriter;

/// Which ONNX form the int8 graph takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantForm {
    QOperator,
    Qdq,
    /// `QuantizeLinear → ConvInteger/MatMulInteger → Cast → Mul(scale) [→ Add(bias)]`: the
    /// integer op's int32 result goes straight back to f32 with one per-channel multiply, with
    /// no output requantisation (no uint8 round trip, no clamp).
    Integer,
}

impl fmt::Display for QuantForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantForm::QOperator => "qoperator",
            QuantForm::Qdq => "qdq",
            QuantForm::Integer => "integer",
        })
    }
}

impl FromStr for QuantForm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qoperator" => Ok(QuantForm::QOperator),
            "qdq" => Ok(QuantForm::Qdq),
            "integer" => Ok(QuantForm::Integer),
            _ => Err(format!("unknown quantisation form `{s}`, expected qoperator, qdq or integer")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Conv,
    MatMul,
}

/// An activation's smoothing ([`super::smooth`]): its per-channel factors and the per-tensor
/// range once divided by them.
#[derive(Debug, Clone)]
pub struct Smoothing {
    pub factors: Vec<f32>,
    pub range: (f32, f32),
}

impl Smoothing {
    /// The multipliers of the smoothing `Mul` (`1 / a_c`): what the graph multiplies the
    /// activation by before its `QuantizeLinear`.
    pub fn inverse(&self) -> Vec<f32> {
        self.factors.iter().map(|a| 1.0 / a).collect()
    }
}

/// One node to quantise, known by the tensor it writes (`output`, unique in a graph); its
/// name may be empty or shared, so it only serves messages and `--keep-fp32`.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    pub kind: TargetKind,
    /// Activation input, output, weight initializer, optional bias initializer (Conv only).
    pub input: String,
    pub output: String,
    pub weight: String,
    pub bias: Option<String>,
}

/// Which nodes [`find_targets`] leaves in fp32 besides those named explicitly.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Nodes kept fp32, each by its name or by the name of a tensor it writes ([`is_named`]).
    pub skip: HashSet<String>,
    /// Also quantise the first conv (reads `sample`) and the layer writing the graph output.
    /// Off by default: they are 2 of ~35 convs, see the raw pixels/prediction directly, and
    /// quantising them costs ~5 dB PSNR on the default model for no measurable speed.
    pub quantize_io: bool,
    /// Also quantise layers that read a `Concat` directly: in a U-Net, the up path's 1x1 skip
    /// convs over `concat(decoder, encoder skip)`. Off by default: one activation scale over
    /// both halves spans the widest range in the net (14-21 vs 4-7 for the other conv inputs,
    /// so 3-4x coarser steps), and these convs feed the residual stream directly. Keeping the
    /// six of them fp32 measured +5.4 dB median PSNR (42.1 -> 47.5 dB, 16 seeds) and FD +0.6%
    /// instead of +4.1% vs fp32, for 100 KB more weights (the default sprites model).
    pub quantize_concat_inputs: bool,
}

/// Conv nodes with a rank-4 f32 weight initializer and MatMul nodes with a rank-2 f32 weight
/// initializer as second input, in graph order, restricted to the image path: a node whose
/// activation does not depend on the graph input `sample` (the timestep MLP and each block's
/// time projection, one row per image) stays fp32 — it costs nothing and its error shifts
/// every activation of a block at once. Nodes reading a `Concat` output stay fp32 unless
/// [`TargetPolicy::quantize_concat_inputs`].
pub fn find_targets(graph: &GraphProto, policy: &TargetPolicy) -> Vec<Target> {
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let float_init = |name: &str, rank: usize| {
        inits.get(name).is_some_and(|t| t.data_type == data_type::FLOAT && t.dims.len() == rank)
    };
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let concat_outputs: HashSet<&str> =
        graph.node.iter().filter(|n| n.op_type == "Concat").flat_map(|n| n.output.iter().map(String::as_str)).collect();
    let mut image_path: HashSet<&str> = HashSet::from([meta::INPUT_SAMPLE]);
    let mut targets = Vec::new();
    for node in &graph.node {
        if node.input.iter().any(|i| image_path.contains(i.as_str())) {
            image_path.extend(node.output.iter().map(String::as_str));
        }
        let kept = policy.skip.iter().any(|name| is_named(node, name));
        if kept || node.input.len() < 2 || node.output.len() != 1 || node.output[0].is_empty() {
            continue;
        }
        let input = &node.input[0];
        if !image_path.contains(input.as_str()) {
            continue;
        }
        let io = input == meta::INPUT_SAMPLE || graph_outputs.contains(node.output[0].as_str());
        if io && !policy.quantize_io {
            continue;
        }
        if concat_outputs.contains(input.as_str()) && !policy.quantize_concat_inputs {
            continue;
        }
        let kind = match node.op_type.as_str() {
            "Conv" if float_init(&node.input[1], 4) => TargetKind::Conv,
            "MatMul" if float_init(&node.input[1], 2) => TargetKind::MatMul,
            _ => continue,
        };
        let bias = (kind == TargetKind::Conv).then(|| node.input.get(2).filter(|b| !b.is_empty()).cloned()).flatten();
        targets.push(Target {
            node: node.name.clone(),
            kind,
            input: input.clone(),
            output: node.output[0].clone(),
            weight: node.input[1].clone(),
            bias,
        });
    }
    targets
}

/// Whether `name` names `node`: its own name or one of its outputs. An empty name names
/// nothing, since ONNX lets any number of nodes have no name and optional outputs be unnamed.
pub fn is_named(node: &NodeProto, name: &str) -> bool {
    !name.is_empty() && (node.name == name || node.output.iter().any(|o| o == name))
}

/// The activation tensors whose range calibration must measure for `form`.
pub fn observed_tensors(targets: &[Target], form: QuantForm) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for t in targets {
        let outputs = (form == QuantForm::QOperator).then_some(&t.output);
        for name in std::iter::once(&t.input).chain(outputs) {
            if seen.insert(name.clone()) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// Rewrites `model` in place: every target becomes its int8 form; `ranges` holds the calibrated
/// [min, max] of every tensor [`observed_tensors`] named. Unused f32 weights are dropped.
/// `smoothing` maps an activation to its per-channel factors ([`super::smooth`]): it is
/// divided by them before quantisation, and the weights reading it are multiplied by them.
/// A target's node is found by the tensor it writes, never by its name (which may be empty or
/// repeated): the graph must make each tensor once ([`super::check::structure`]).
pub fn rewrite(
    model: &mut ModelProto,
    targets: &[Target],
    form: QuantForm,
    activations: ActivationType,
    ranges: &HashMap<String, (f32, f32)>,
    smoothing: &HashMap<String, Smoothing>,
) -> Result<(), QuantizeError> {
    let graph = model.graph.take().ok_or_else(|| QuantizeError::Model("the file holds no graph".into()))?;
    let by_output: HashMap<&str, &Target> = targets.iter().map(|t| (t.output.as_str(), t)).collect();
    let mut rewriter = Rewriter::new(graph, form, activations, ranges, smoothing);
    for node in rewriter.g.take_nodes() {
        let target = match node.output.as_slice() {
            [output] => by_output.get(output.as_str()).filter(|t| node.input.get(1) == Some(&t.weight)),
            _ => None,
        };
        match target {
            Some(target) => rewriter.rewrite_target(node, target)?,
            None => rewriter.g.keep_node(node),
        }
    }
    let mut g = rewriter.g;
    name_unnamed_nodes(&mut g);
    drop_unused_initializers(g.graph_mut());
    model.graph = Some(g.finish());
    Ok(())
}

/// Gives each node without a name one made from its first output and op (`h/Conv`), unique in
/// the graph, as the nodes the rewrite adds are named: tools that key nodes by name (tract's
/// planner among them, after the runtime's fusions name their nodes after the ones they
/// replace) would otherwise meet the same empty name many times.
fn name_unnamed_nodes(g: &mut GraphBuilder) {
    let hints: Vec<(usize, String)> = (g.graph().node.iter().enumerate())
        .filter(|(_, n)| n.name.is_empty())
        .map(|(i, n)| (i, format!("{}/{}", n.output.first().map_or("", String::as_str), n.op_type)))
        .collect();
    for (i, hint) in hints {
        let name = g.unique_name(&hint);
        g.graph_mut().node[i].name = name;
    }
}

/// Removes initializers (and their graph-input declarations) that no node reads any more.
fn drop_unused_initializers(graph: &mut GraphProto) {
    let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let keep = |name: &str| used.contains(name) || outputs.contains(name);
    let dropped: HashSet<String> =
        graph.initializer.iter().filter(|t| !keep(&t.name)).map(|t| t.name.clone()).collect();
    graph.initializer.retain(|t| !dropped.contains(&t.name));
    graph.input.retain(|i: &ValueInfoProto| !dropped.contains(&i.name));
}
