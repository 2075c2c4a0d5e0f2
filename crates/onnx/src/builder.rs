//! A small ONNX graph builder: unique value names, typed initializers, nodes with attributes.
//!
//! It knows nothing about U-Nets, so the same code serves the fp32 exporter and graph rewriters
//! (the int8 quantiser starts from [`GraphBuilder::from_graph`] and appends QuantizeLinear /
//! DequantizeLinear / QLinearConv / ConvInteger nodes with int8/uint8/int32 initializers).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::OnnxError;

/// One dimension of a graph input/output: a fixed size or a symbolic name (`"N"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Param(String),
}

/// Builds a `GraphProto` while guaranteeing that every value name (inputs, initializers, node
/// outputs) is unique, which ONNX requires (SSA form) and checkers enforce.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    graph: GraphProto,
    taken: HashSet<String>,
    counters: HashMap<String, usize>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder::from_graph(GraphProto { name: name.to_string(), ..Default::default() })
    }

    /// Continues an existing graph: all its names (values and nodes) count as taken.
    pub fn from_graph(graph: GraphProto) -> Self {
        let mut taken = HashSet::new();
        taken.extend(graph.input.iter().map(|v| v.name.clone()));
        taken.extend(graph.initializer.iter().map(|t| t.name.clone()));
        for node in &graph.node {
            taken.extend(node.output.iter().cloned());
            if !node.name.is_empty() {
                taken.insert(node.name.clone());
            }
        }
        GraphBuilder { graph, taken, counters: HashMap::new() }
    }

    /// A fresh name derived from `hint` (`hint`, then `hint_1`, `hint_2`, ...), now taken.
    pub fn unique_name(&mut self, hint: &str) -> String {
        let hint = if hint.is_empty() { "v" } else { hint };
        if self.taken.insert(hint.to_string()) {
            return hint.to_string();
        }
        let counter = self.counters.entry(hint.to_string()).or_insert(0);
        loop {
            *counter += 1;
            let candidate = format!("{hint}_{counter}");
            if self.taken.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    fn claim(&mut self, name: &str) -> Result<(), OnnxError> {
        if name.is_empty() || !self.taken.insert(name.to_string()) {
            return Err(OnnxError::DuplicateName(name.to_string()));
        }
        Ok(())
    }

    /// Declares a graph input with exactly this name.
    pub fn add_input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> Result<String, OnnxError> {
        self.claim(name)?;
        self.graph.input.push(value_info(name, elem_type, dims));
        Ok(name.to_string())
    }

    /// Declares an existing value (normally a node output) as a graph output.
    pub fn add_output(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> Result<(), OnnxError> {
        if !self.taken.contains(name) {
            return Err(OnnxError::UnknownValue(name.to_string()));
        }
        self.graph.output.push(value_info(name, elem_type, dims));
        Ok(())
    }

    /// Adds an initializer under a fresh name derived from its `name` field; returns the name.
    pub fn add_initializer(&mut self, mut tensor: TensorProto) -> String {
        tensor.name = self.unique_name(&tensor.name);
        let name = tensor.name.clone();
        self.graph.initializer.push(tensor);
        name
    }

    pub fn initializer_f32(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> Result<String, OnnxError> {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(hint, dims, data_type::FLOAT, values.len(), raw)
    }

    pub fn initializer_i64(&mut self, hint: &str, dims: &[usize], values: &[i64]) -> Result<String, OnnxError> {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(hint, dims, data_type::INT64, values.len(), raw)
    }

    pub fn initializer_i32(&mut self, hint: &str, dims: &[usize], values: &[i32]) -> Result<String, OnnxError> {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(hint, dims, data_type::INT32, values.len(), raw)
    }

    pub fn initializer_i8(&mut self, hint: &str, dims: &[usize], values: &[i8]) -> Result<String, OnnxError> {
        let raw = values.iter().map(|&v| v as u8).collect();
        self.raw_initializer(hint, dims, data_type::INT8, values.len(), raw)
    }

    pub fn initializer_u8(&mut self, hint: &str, dims: &[usize], values: &[u8]) -> Result<String, OnnxError> {
        self.raw_initializer(hint, dims, data_type::UINT8, values.len(), values.to_vec())
    }

    /// A rank-0 f32 constant (broadcasts against anything).
    pub fn scalar_f32(&mut self, hint: &str, value: f32) -> String {
        self.push_raw(hint, &[], data_type::FLOAT, value.to_le_bytes().to_vec())
    }

    /// A 1-D int64 constant, the form shape/axes/pads inputs take.
    pub fn const_i64s(&mut self, hint: &str, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_raw(hint, &[values.len()], data_type::INT64, raw)
    }

    fn raw_initializer(
        &mut self,
        hint: &str,
        dims: &[usize],
        elem_type: i32,
        len: usize,
        raw: Vec<u8>,
    ) -> Result<String, OnnxError> {
        let expected: usize = dims.iter().product();
        if expected != len {
            return Err(OnnxError::ShapeMismatch { name: hint.to_string(), dims: dims.to_vec(), len });
        }
        Ok(self.push_raw(hint, dims, elem_type, raw))
    }

    fn push_raw(&mut self, hint: &str, dims: &[usize], elem_type: i32, raw: Vec<u8>) -> String {
        self.add_initializer(TensorProto {
            name: hint.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem_type,
            raw_data: raw,
            ..Default::default()
        })
    }

    /// Adds a single-output node of the default domain; the output is named after `hint`.
    pub fn node(&mut self, op_type: &str, hint: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let output = self.unique_name(hint);
        let name = self.unique_name(&format!("{output}/{op_type}"));
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name,
            op_type: op_type.to_string(),
            attribute: attrs,
            ..Default::default()
        });
        output
    }

    /// Adds a fully specified node (any domain, several or exactly named outputs). Its output
    /// names must be new; an empty node name gets a generated one.
    pub fn add_node(&mut self, mut node: NodeProto) -> Result<(), OnnxError> {
        for out in &node.output {
            if !out.is_empty() {
                self.claim(out)?;
            }
        }
        if node.name.is_empty() {
            let first = node.output.first().cloned().unwrap_or_default();
            node.name = self.unique_name(&format!("{first}/{}", node.op_type));
        } else {
            self.claim(&node.name)?;
        }
        self.graph.node.push(node);
        Ok(())
    }

    /// Removes and returns the nodes, keeping their names taken: a rewriter then re-adds them
    /// (changed or as they were, with [`GraphBuilder::keep_node`]) in order.
    pub fn take_nodes(&mut self) -> Vec<NodeProto> {
        std::mem::take(&mut self.graph.node)
    }

    /// Re-adds a node whose names are already taken (one returned by [`GraphBuilder::take_nodes`],
    /// possibly with changed inputs).
    pub fn keep_node(&mut self, node: NodeProto) {
        self.graph.node.push(node);
    }

    /// Mutable access for rewriters (e.g. to drop initializers that no node uses any more).
    pub fn graph_mut(&mut self) -> &mut GraphProto {
        &mut self.graph
    }

    /// The graph so far (e.g. to look up an initializer while rewriting).
    pub fn graph(&self) -> &GraphProto {
        &self.graph
    }

    pub fn finish(self) -> GraphProto {
        self.graph
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Param(p) => tensor_shape_proto::dimension::Value::DimParam(p.clone()),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

/// The IR version that goes with an `ai.onnx` opset (ONNX's versioning table).
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

/// Wraps a graph into a model importing `ai.onnx` at `opset` (plus `extra_opsets`, e.g.
/// `("com.microsoft", 1)`), with `metadata` as `metadata_props` (sorted by key: deterministic bytes).
pub fn make_model(
    graph: GraphProto,
    opset: i64,
    extra_opsets: &[(&str, i64)],
    metadata: &BTreeMap<String, String>,
) -> ModelProto {
    let mut opset_import = vec![OperatorSetIdProto { domain: String::new(), version: opset }];
    opset_import.extend(extra_opsets.iter().map(|(d, v)| OperatorSetIdProto { domain: d.to_string(), version: *v }));
    ModelProto {
        ir_version: ir_version_for_opset(opset),
        opset_import,
        producer_name: "edgediff-train".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        graph: Some(graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() })
            .collect(),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INT, i: Some(value), ..Default::default() }
}

pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints: values.to_vec(), ..Default::default() }
}

pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOAT, f: Some(value), ..Default::default() }
}

pub fn attr_floats(name: &str, values: &[f32]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOATS, floats: values.to_vec(), ..Default::default() }
}

pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::TENSOR, t: Some(value), ..Default::default() }
}
