//! A model checked against itself before anything is planned: every weight finite, every graph
//! output produced, the class-embedding table as long as the metadata's classes. Each failure is
//! one line naming the tensor or key, what was found and what was expected, where tract would
//! otherwise panic deep inside (a `Gather` past its table, an output no node makes) or the
//! sampler would write an image of NaN.

mod windows;

use std::collections::HashSet;

use edgediff_core::meta::{self, ModelMeta};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};

use crate::error::RuntimeError;

/// Every check of the module doc.
pub(crate) fn validate(graph: &GraphProto, meta: &ModelMeta) -> Result<(), RuntimeError> {
    tensors_readable(graph)?;
    known_domains(graph)?;
    windows::check(graph)?;
    finite_weights(graph)?;
    outputs_produced(graph)?;
    class_table(graph, meta)
}

/// Every node writes a named tensor. No ONNX operator has zero outputs; a node without one is a
/// broken file, and the load-time rewrites, which walk chains from output to reader, rely on it.
pub(crate) fn nodes_write_outputs(graph: &GraphProto) -> Result<(), RuntimeError> {
    match graph.node.iter().find(|n| n.output.iter().all(String::is_empty)) {
        Some(n) => Err(RuntimeError::Interface(format!(
            "node `{}` ({}) writes no tensor: every node needs at least one named output",
            n.name, n.op_type
        ))),
        None => Ok(()),
    }
}

/// The operator sets a node may come from: ONNX's own and Microsoft's contrib operators (tract
/// implements some of those; an op it lacks is refused by tract by name).
const DOMAINS: &[&str] = &["", "ai.onnx", "com.microsoft"];

/// Every node comes from an operator set in [`DOMAINS`]. tract looks operators up by type
/// alone, so a custom `com.example.Gelu` would run as ONNX's `Gelu`: a wrong answer, not an
/// error.
fn known_domains(graph: &GraphProto) -> Result<(), RuntimeError> {
    match graph.node.iter().find(|n| !DOMAINS.contains(&n.domain.as_str())) {
        Some(n) => Err(RuntimeError::Interface(format!(
            "node `{}` is `{}` from operator set `{}`, which this runtime does not implement (it runs ONNX's \
             operators and Microsoft's contrib ones)",
            n.name, n.op_type, n.domain
        ))),
        None => Ok(()),
    }
}

/// Every initializer and tensor attribute has non-negative dims and, when stored as raw bytes,
/// a data type tract reads that way and as many bytes as its dims need (tract panics on the
/// other types).
fn tensors_readable(graph: &GraphProto) -> Result<(), RuntimeError> {
    let attributes = graph.node.iter().flat_map(|n| n.attribute.iter().filter_map(|a| a.t.as_ref()));
    for t in graph.initializer.iter().chain(attributes) {
        tensor_readable(t).map_err(|e| RuntimeError::Interface(format!("tensor `{}` {e}", t.name)))?;
    }
    Ok(())
}

fn tensor_readable(t: &TensorProto) -> Result<(), String> {
    if let Some(d) = t.dims.iter().find(|&&d| d < 0) {
        return Err(format!("has a negative dimension {d} in {:?}", t.dims));
    }
    if t.raw_data.is_empty() {
        return Ok(());
    }
    // tract reads raw bytes of every fixed-size type but these.
    let unread =
        matches!(DataType::try_from(t.data_type), Ok(DataType::Bfloat16 | DataType::Complex64 | DataType::Complex128));
    if unread || crate::memory_plan::element_bytes(t.data_type).is_none() {
        return Err(format!("stores data type {} as raw bytes, which this runtime cannot read", t.data_type));
    }
    match crate::memory_plan::tensor_bytes(&t.dims, t.data_type) {
        Some(n) if n == t.raw_data.len() as u64 => Ok(()),
        Some(n) => Err(format!("holds {} bytes of data, its dims {:?} need {n}", t.raw_data.len(), t.dims)),
        None => Err(format!("has dims {:?} too large to address", t.dims)),
    }
}

/// No f32 initializer holds NaN or Inf: a model with one predicts NaN everywhere.
fn finite_weights(graph: &GraphProto) -> Result<(), RuntimeError> {
    for t in graph.initializer.iter().filter(|t| t.data_type == DataType::Float as i32) {
        let bad = if t.raw_data.is_empty() {
            t.float_data.iter().position(|v| !v.is_finite())
        } else {
            t.raw_data.chunks_exact(4).position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
        };
        if let Some(i) = bad {
            return Err(RuntimeError::Interface(format!(
                "weight `{}` holds a non-finite value (NaN or Inf) at element {i}: the model is broken",
                t.name
            )));
        }
    }
    Ok(())
}

/// Every graph output is made by a node, or is an input or an initializer.
fn outputs_produced(graph: &GraphProto) -> Result<(), RuntimeError> {
    let made: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .chain(graph.input.iter().map(|i| &i.name))
        .chain(graph.initializer.iter().map(|t| &t.name))
        .map(String::as_str)
        .collect();
    match graph.output.iter().find(|o| !made.contains(o.name.as_str())) {
        Some(o) => Err(RuntimeError::Interface(format!("output `{}` is made by no node of the graph", o.name))),
        None => Ok(()),
    }
}

/// The table a conditional model looks its class labels up in (a `Gather` of an initializer by
/// the labels, through casts) has one row per label: the named classes, plus the null class
/// where the model has one.
fn class_table(graph: &GraphProto, meta: &ModelMeta) -> Result<(), RuntimeError> {
    let Some(table) = class_embedding(graph) else { return Ok(()) };
    let rows = table.dims.first().copied().unwrap_or(0);
    let want = meta.label_count() as i64;
    if rows == want {
        return Ok(());
    }
    let null = if meta.has_null_class { " and the null class" } else { "" };
    Err(RuntimeError::Interface(format!(
        "the class table `{}` has {rows} rows, but `{}` lists {} classes{null} ({want} rows expected)",
        table.name,
        meta::CLASS_NAMES,
        meta.class_names.len()
    )))
}

/// The initializer a `Gather` reads rows of by the class labels (followed through `Cast`,
/// `Identity`, `Reshape`, `Unsqueeze` and `Squeeze`).
fn class_embedding(graph: &GraphProto) -> Option<&TensorProto> {
    let mut labels: HashSet<&str> = HashSet::from([meta::INPUT_CLASS_LABELS]);
    // Follow the label tensor forward through value-preserving nodes (a bounded walk).
    for _ in 0..8 {
        let before = labels.len();
        for n in &graph.node {
            let passes = matches!(n.op_type.as_str(), "Cast" | "Identity" | "Reshape" | "Unsqueeze" | "Squeeze");
            if passes && n.input.first().is_some_and(|i| labels.contains(i.as_str())) {
                labels.extend(n.output.iter().map(String::as_str));
            }
        }
        if labels.len() == before {
            break;
        }
    }
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Gather" && n.input.len() == 2 && labels.contains(n.input[1].as_str()))
        .find_map(|n| graph.initializer.iter().find(|t| t.name == n.input[0]))
}
