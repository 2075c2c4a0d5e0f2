//! Checks of a graph the quantiser reads or writes, each failure naming the node or tensor.
//!
//! [`structure`] runs on the fp32 graph before any work and on the int8 graph before it is
//! written: the rewrite finds a node's replacement by the tensor it writes, so every tensor must
//! be made once, and a node reading a tensor nothing makes (or that is made later) would give a
//! file engines refuse. [`values`] runs on the int8 graph: a NaN weight, or a scale that is 0,
//! negative or not finite, makes every engine's output garbage or refuse the file, and nothing
//! downstream looks at these numbers again.

use std::collections::{HashMap, HashSet};

use edgediff_onnx::{data_type, tensor_f32, tensor_i8, tensor_len, tensor_u8, GraphProto, NodeProto, TensorProto};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the graph has no output")]
    NoOutput,
    #[error("tensor `{0}` is made more than once (by nodes, initializers or graph inputs)")]
    MadeTwice(String),
    #[error("{node} reads `{tensor}`, which no earlier node, initializer or graph input makes")]
    Unmade { node: String, tensor: String },
    #[error("graph output `{0}` is made by no node, initializer or graph input")]
    OutputUnmade(String),
    #[error("initializer `{name}` holds {value} at element {index}: every weight must be finite")]
    NonFinite { name: String, index: usize, value: f32 },
    #[error("{node}: scale `{name}` holds {value} at element {index}: a scale must be finite and > 0")]
    BadScale { node: String, name: String, index: usize, value: f32 },
    #[error("{node}: zero point `{name}` {problem}")]
    BadZeroPoint { node: String, name: String, problem: String },
    #[error("{node}: `{name}` must be an initializer")]
    NotConstant { node: String, name: String },
    #[error("initializer `{name}`: {problem}")]
    Unreadable { name: String, problem: String },
}

/// How a node is named in messages: its name, or its position, op and first output when it
/// has no name (ONNX allows that).
pub fn describe_node(index: usize, node: &NodeProto) -> String {
    if node.name.is_empty() {
        let out = node.output.first().map_or("", String::as_str);
        format!("node #{index} ({} writing `{out}`)", node.op_type)
    } else {
        format!("node `{}`", node.name)
    }
}

/// The graph's wiring: it has an output; each tensor is made once (a graph input may also be
/// an initializer, its default); each node reads only tensors made before it (ONNX's
/// topological order); each graph output is made. Empty names (omitted optional inputs and
/// outputs) are not tensors.
pub fn structure(graph: &GraphProto) -> Result<(), CheckError> {
    if graph.output.is_empty() {
        return Err(CheckError::NoOutput);
    }
    let mut made: HashSet<&str> = HashSet::new();
    for t in &graph.initializer {
        if !made.insert(&t.name) {
            return Err(CheckError::MadeTwice(t.name.clone()));
        }
    }
    let mut inputs = HashSet::new();
    for i in &graph.input {
        if !inputs.insert(i.name.as_str()) {
            return Err(CheckError::MadeTwice(i.name.clone()));
        }
        made.insert(&i.name);
    }
    for (index, node) in graph.node.iter().enumerate() {
        if let Some(tensor) = node.input.iter().find(|i| !i.is_empty() && !made.contains(i.as_str())) {
            return Err(CheckError::Unmade { node: describe_node(index, node), tensor: tensor.clone() });
        }
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if !made.insert(out) {
                return Err(CheckError::MadeTwice(out.clone()));
            }
        }
    }
    match graph.output.iter().find(|o| !made.contains(o.name.as_str())) {
        Some(o) => Err(CheckError::OutputUnmade(o.name.clone())),
        None => Ok(()),
    }
}

/// The int8 graph's numbers: every f32 initializer finite; every quantisation scale finite and
/// positive; every zero point an int8 or uint8 initializer, its values in its type's range, one
/// per scale (per channel or per tensor, as ONNX requires).
pub fn values(graph: &GraphProto) -> Result<(), CheckError> {
    for t in graph.initializer.iter().filter(|t| t.data_type == data_type::FLOAT) {
        if let Some((index, &value)) = floats(t)?.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CheckError::NonFinite { name: t.name.clone(), index, value });
        }
    }
    let index = Index::new(graph);
    for (position, node) in graph.node.iter().enumerate() {
        let describe = || describe_node(position, node);
        for (scale_at, zero_point_at) in quantisation_inputs(&index, node) {
            let scale = index.constant(node, scale_at, describe)?;
            if let Some(s) = scale {
                check_scale(s, describe)?;
            }
            if let Some(z) = index.constant(node, zero_point_at, describe)? {
                check_zero_point(z, scale, describe)?;
            }
        }
    }
    Ok(())
}

/// Who writes each tensor, and the initializers by name.
struct Index<'g> {
    writers: HashMap<&'g str, &'g NodeProto>,
    initializers: HashMap<&'g str, &'g TensorProto>,
}

impl<'g> Index<'g> {
    fn new(graph: &'g GraphProto) -> Self {
        let writers = graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
        let initializers = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        Index { writers, initializers }
    }

    /// The initializer `node` reads at input `at`: `None` when there is no such input (an
    /// omitted optional one), an error when it is a computed tensor (a quantisation parameter
    /// must be a constant the file holds).
    fn constant(
        &self,
        node: &NodeProto,
        at: Option<usize>,
        describe: impl Fn() -> String,
    ) -> Result<Option<&'g TensorProto>, CheckError> {
        let Some(name) = at.and_then(|i| node.input.get(i)).filter(|n| !n.is_empty()) else { return Ok(None) };
        match self.initializers.get(name.as_str()) {
            Some(t) => Ok(Some(t)),
            None => Err(CheckError::NotConstant { node: describe(), name: name.clone() }),
        }
    }

    /// Whether `node` multiplies the f32 `Cast` of an integer op's int32 sum.
    fn rescales_integer_sum(&self, node: &NodeProto) -> bool {
        node.input.iter().filter_map(|i| self.writers.get(i.as_str())).any(|cast| {
            cast.op_type == "Cast"
                && cast
                    .input
                    .first()
                    .and_then(|i| self.writers.get(i.as_str()))
                    .is_some_and(|n| n.op_type.ends_with("Integer"))
        })
    }
}

/// `node`'s (scale, zero point) input positions. Besides the ONNX quantisation ops, the `Mul`
/// that turns a `ConvInteger`/`MatMulInteger` sum back to f32 (through a `Cast`) reads a scale.
fn quantisation_inputs(index: &Index, node: &NodeProto) -> Vec<(Option<usize>, Option<usize>)> {
    match node.op_type.as_str() {
        "QuantizeLinear" | "DequantizeLinear" => vec![(Some(1), Some(2))],
        "QLinearConv" | "QLinearMatMul" => vec![(Some(1), Some(2)), (Some(4), Some(5)), (Some(6), Some(7))],
        "ConvInteger" | "MatMulInteger" => vec![(None, Some(2)), (None, Some(3))],
        "Mul" if index.rescales_integer_sum(node) => {
            let constant = node.input.iter().position(|i| index.initializers.contains_key(i.as_str()));
            vec![(constant, None)]
        }
        _ => vec![],
    }
}

/// Every value of the f32 scale `t` finite and positive (another type is not something this
/// quantiser writes, and left to the engines).
fn check_scale(t: &TensorProto, describe: impl Fn() -> String) -> Result<(), CheckError> {
    if t.data_type != data_type::FLOAT {
        return Ok(());
    }
    match floats(t)?.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
        Some((index, &value)) => Err(CheckError::BadScale { node: describe(), name: t.name.clone(), index, value }),
        None => Ok(()),
    }
}

/// The zero point `z`: int8 or uint8, values in range (`int32_data` can hold any i32), as many
/// as its `scale` has.
fn check_zero_point(
    z: &TensorProto,
    scale: Option<&TensorProto>,
    describe: impl Fn() -> String,
) -> Result<(), CheckError> {
    let bad = |problem: String| CheckError::BadZeroPoint { node: describe(), name: z.name.clone(), problem };
    let (count, range) = match z.data_type {
        data_type::INT8 => (tensor_i8(z).map(|v| v.len()), -128..=127),
        data_type::UINT8 => (tensor_u8(z).map(|v| v.len()), 0..=255),
        other => return Err(bad(format!("has data type {other}, expected int8 or uint8"))),
    };
    let count = count.map_err(|e| bad(format!("cannot be read: {e}")))?;
    if z.raw_data.is_empty() {
        if let Some(v) = z.int32_data.iter().find(|v| !range.contains(*v)) {
            return Err(bad(format!("holds {v}, outside {range:?}")));
        }
    }
    match scale.map(tensor_len).transpose().map_err(|e| bad(e.to_string()))? {
        Some(scales) if scales != count => Err(bad(format!("has {count} values for {scales} scales"))),
        _ => Ok(()),
    }
}

fn floats(t: &TensorProto) -> Result<Vec<f32>, CheckError> {
    tensor_f32(t).map_err(|e| CheckError::Unreadable { name: t.name.clone(), problem: e.to_string() })
}
