//! The graph contract the runtime runs, made from the inputs and outputs an export has.
//!
//! The runtime feeds `sample` f32 `[N, C, H, W]`, `timestep` f32 `[N]` (the integer training
//! timestep) and, for conditional models, `class_labels` i64 `[N]`, and reads one output. Exports
//! of diffusers models name and type these their own way: the timestep int64, int32, float32 or
//! float16, of shape `[N]`, `[1]` or a scalar; the sample `x`, `noisy_sample`, ...; the labels
//! int32. Each input is found by its role (its name, else its rank), renamed to the contract's
//! name, and, where its type or shape differs, fed through a conversion in front of the graph:
//! a `Cast`, and for a timestep of shape `[1]` or `[]` a `Slice` or `Gather` of the first
//! value (every image of a batch is at the same timestep). This runs once at load, never per
//! step; the file on disk is unchanged (`sampler import` writes the result).
//!
//! One file over 400 lines: finding the roles and writing the conversions are one decision (a
//! role found by rank decides which conversion it needs), and its tests sit beside it.

use std::collections::HashSet;

use edgediff_core::meta;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Names exports give the noisy sample.
const SAMPLE_NAMES: &[&str] = &["sample", "x", "x_t", "xt", "noisy_sample", "noisy_input", "input", "image"];
/// Names exports give the timestep.
const TIMESTEP_NAMES: &[&str] = &["timestep", "timesteps", "t", "time", "ts", "time_step", "noise_level"];
/// Names exports give the class labels.
const LABEL_NAMES: &[&str] = &["class_labels", "class_label", "labels", "label", "y", "classes", "class_ids"];

/// What normalising changed, for `sampler info --verbose`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceChanges {
    /// `(original, contract)` names of renamed inputs.
    pub renamed: Vec<(String, String)>,
    /// How the timestep reaches the graph, if not as it is (e.g. `f32 [N] -> int64 [N]`).
    pub timestep: Option<String>,
    /// How the class labels reach the graph, if not as they are.
    pub class_labels: Option<String>,
    /// Graph outputs dropped because another was chosen.
    pub dropped_outputs: Vec<String>,
}

/// One graph input as declared: element type and dims (`None` = unknown or symbolic).
#[derive(Debug, Clone)]
struct Declared {
    name: String,
    elem: i32,
    dims: Option<Vec<Option<i64>>>,
    /// `name: type[dims]`, symbolic dims by name, for messages.
    shown: String,
}

impl Declared {
    fn of(v: &ValueInfoProto) -> Declared {
        let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => Some(t),
            _ => None,
        };
        let dims = tensor.and_then(|t| t.shape.as_ref()).map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(n)) => Some(n),
                    _ => None,
                })
                .collect()
        });
        Declared {
            name: v.name.clone(),
            elem: tensor.map_or(0, |t| t.elem_type),
            dims,
            shown: crate::model_info::describe(v),
        }
    }

    fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }

    fn describe(&self) -> String {
        match self.shown.split_once(": ") {
            Some((name, ty)) => format!("`{name}` {ty}"),
            None => format!("`{}`", self.name),
        }
    }
}

/// Rewrites `graph` to the contract (see the module doc); `output` picks the graph output when
/// there are several. Each failure is one line naming the input or output.
pub fn normalize_interface(graph: &mut GraphProto, output: Option<&str>) -> Result<InterfaceChanges, String> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<Declared> =
        graph.input.iter().filter(|i| !inits.contains(i.name.as_str())).map(Declared::of).collect();
    let mut roles = Roles::find(&inputs)?;
    let mut changes = InterfaceChanges { dropped_outputs: choose_output(graph, output)?, ..Default::default() };
    free_names(graph, &mut roles);
    rename_input(graph, &roles.sample.name, meta::INPUT_SAMPLE, &mut changes);
    changes.timestep = convert_timestep(graph, &roles.timestep, &mut changes)?;
    if let Some(labels) = &roles.labels {
        changes.class_labels = convert_labels(graph, labels, &mut changes)?;
    }
    Ok(changes)
}

/// Which declared input plays which role.
struct Roles {
    sample: Declared,
    timestep: Declared,
    labels: Option<Declared>,
}

impl Roles {
    fn find(inputs: &[Declared]) -> Result<Roles, String> {
        if let Some(text) = inputs.iter().find(|i| i.name == "encoder_hidden_states") {
            return Err(format!(
                "input {}: a text-conditioned model (UNet2DConditionModel); edgediff runs pixel-space UNet2DModel exports",
                text.describe()
            ));
        }
        let named = |names: &[&str]| inputs.iter().find(|i| names.contains(&i.name.as_str()));
        let float =
            |i: &Declared| [DataType::Float, DataType::Float16, DataType::Double].iter().any(|&d| i.elem == d as i32);
        let sample = named(SAMPLE_NAMES).or_else(|| only(inputs.iter().filter(|i| i.rank() == Some(4) && float(i))));
        let sample = sample.ok_or_else(|| {
            format!(
                "no sample input (a 4-D float input) among [{}]",
                inputs.iter().map(Declared::describe).collect::<Vec<_>>().join(", ")
            )
        })?;
        let labels = named(LABEL_NAMES).filter(|l| l.name != sample.name);
        let rest = || {
            inputs.iter().filter(|i| i.name != sample.name && Some(i.name.as_str()) != labels.map(|l| l.name.as_str()))
        };
        let timestep = named(TIMESTEP_NAMES)
            .filter(|t| t.name != sample.name)
            .or_else(|| only(rest().filter(|i| i.rank().is_none_or(|r| r <= 1))))
            .ok_or_else(|| {
                format!("no timestep input (a scalar or 1-D input) beside the sample {}", sample.describe())
            })?;
        if let Some(extra) = rest().find(|i| i.name != timestep.name) {
            return Err(format!(
                "input {}: unknown; a model takes the sample {}, the timestep {} and optionally class labels",
                extra.describe(),
                sample.describe(),
                timestep.describe()
            ));
        }
        check_sample(sample)?;
        Ok(Roles { sample: sample.clone(), timestep: timestep.clone(), labels: labels.cloned() })
    }
}

/// The one item, if there is exactly one.
fn only<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

fn check_sample(sample: &Declared) -> Result<(), String> {
    if sample.elem != DataType::Float as i32 {
        return Err(format!("input {}: the sample must be float32", sample.describe()));
    }
    if sample.rank().is_some_and(|r| r != 4) {
        return Err(format!("input {}: the sample must be [N, C, H, W]", sample.describe()));
    }
    let dims = sample.dims.iter().flatten();
    if let Some(d) = dims.clone().flatten().find(|&&d| d < 1) {
        return Err(format!("input {}: a dimension of {d}, expected sizes of at least 1", sample.describe()));
    }
    if let Some(n) = dims.clone().next().copied().flatten().filter(|&n| n > MAX_DECLARED_BATCH) {
        return Err(format!(
            "input {}: a fixed batch of {n}, expected a symbolic batch or at most {MAX_DECLARED_BATCH}",
            sample.describe()
        ));
    }
    Ok(())
}

/// The largest fixed batch a sample input may declare: twice the sampler's largest batch (a
/// guided batch is doubled); a larger one is not a model for this runtime.
const MAX_DECLARED_BATCH: i64 = 8192;

/// Keeps the chosen output only; returns the names of the others.
fn choose_output(graph: &mut GraphProto, output: Option<&str>) -> Result<Vec<String>, String> {
    let names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let keep = match (output, names.len()) {
        (Some(name), _) if names.iter().any(|n| n == name) => name.to_string(),
        (Some(name), _) => return Err(format!("--output {name}: the graph's outputs are [{}]", names.join(", "))),
        (None, 1) => names[0].clone(),
        (None, 0) => return Err("the graph has no output".into()),
        (None, _) => {
            return Err(format!(
                "the graph has {} outputs [{}]: choose one with --output NAME",
                names.len(),
                names.join(", ")
            ))
        }
    };
    graph.output.retain(|o| o.name == keep);
    Ok(names.into_iter().filter(|n| *n != keep).collect())
}

/// Renames every tensor that holds one of the contract's input names but is not an input that
/// can keep it as it is, so that the names are free for the inputs; a renamed input keeps its
/// role under its new name.
fn free_names(graph: &mut GraphProto, roles: &mut Roles) {
    let f32_batch = |d: &Declared| d.elem == DataType::Float as i32 && matches!(d.dims.as_deref(), None | Some([None]));
    let keeps = [
        (meta::INPUT_SAMPLE, roles.sample.name == meta::INPUT_SAMPLE),
        (meta::INPUT_TIMESTEP, roles.timestep.name == meta::INPUT_TIMESTEP && f32_batch(&roles.timestep)),
        (
            meta::INPUT_CLASS_LABELS,
            roles
                .labels
                .as_ref()
                .is_some_and(|l| l.name == meta::INPUT_CLASS_LABELS && l.elem == DataType::Int64 as i32),
        ),
    ];
    for (name, kept) in keeps {
        let taken = tensor_names(graph);
        if kept || !taken.contains(name) {
            continue;
        }
        let fresh = fresh_name(&taken, name);
        rename_tensor(graph, name, &fresh);
        let declared = [Some(&mut roles.sample), Some(&mut roles.timestep), roles.labels.as_mut()];
        for d in declared.into_iter().flatten().filter(|d| d.name == name) {
            d.name = fresh.clone();
        }
    }
}

/// Every tensor name the graph uses.
fn tensor_names(graph: &GraphProto) -> HashSet<String> {
    let mut names = HashSet::new();
    for n in &graph.node {
        names.extend(n.input.iter().chain(&n.output).cloned());
    }
    names.extend(graph.input.iter().chain(&graph.output).chain(&graph.value_info).map(|v| v.name.clone()));
    names.extend(graph.initializer.iter().map(|t| t.name.clone()));
    names
}

fn fresh_name(taken: &HashSet<String>, base: &str) -> String {
    (0..)
        .map(|k| format!("{base}.original{}", if k == 0 { String::new() } else { k.to_string() }))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| format!("{base}.original"))
}

/// Renames tensor `from` to `to` wherever the top-level graph names it.
fn rename_tensor(graph: &mut GraphProto, from: &str, to: &str) {
    let swap = |s: &mut String| {
        if s == from {
            *s = to.to_string();
        }
    };
    for n in &mut graph.node {
        n.input.iter_mut().chain(n.output.iter_mut()).for_each(swap);
    }
    for v in graph.input.iter_mut().chain(graph.output.iter_mut()).chain(graph.value_info.iter_mut()) {
        swap(&mut v.name);
    }
    for t in &mut graph.initializer {
        swap(&mut t.name);
    }
}

fn rename_input(graph: &mut GraphProto, from: &str, to: &str, changes: &mut InterfaceChanges) {
    if from != to {
        rename_tensor(graph, from, to);
        changes.renamed.push((from.to_string(), to.to_string()));
    }
}

/// The contract's timestep, f32 `[N]`, and the conversion to what the graph declares.
fn convert_timestep(
    graph: &mut GraphProto,
    t: &Declared,
    changes: &mut InterfaceChanges,
) -> Result<Option<String>, String> {
    let supported = [DataType::Float, DataType::Float16, DataType::Double, DataType::Int64, DataType::Int32];
    if !supported.iter().any(|&d| t.elem == d as i32) {
        return Err(format!("input {}: the timestep must be float32, float16, float64, int64 or int32", t.describe()));
    }
    let shape = match t.dims.as_deref() {
        None | Some([None]) => Shape::Batch,
        Some([Some(1)]) => Shape::One,
        Some([]) => Shape::Scalar,
        Some([Some(_)]) => Shape::Batch,
        Some(_) => return Err(format!("input {}: the timestep must be a scalar, [1] or [N]", t.describe())),
    };
    if t.elem == DataType::Float as i32 && shape == Shape::Batch {
        rename_input(graph, &t.name, meta::INPUT_TIMESTEP, changes);
        return Ok(None);
    }
    let described = t.describe();
    let first = match shape {
        Shape::Batch => None,
        Shape::One => Some(first_of("Slice", vec![1], true)),
        Shape::Scalar => Some(first_of("Gather", vec![], false)),
    };
    feed_converted(graph, &t.name, meta::INPUT_TIMESTEP, DataType::Float, t.elem, first);
    Ok(Some(format!("f32 [N] -> {described}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Batch,
    One,
    Scalar,
}

/// How to take the first value of the contract's `[N]` input: a `Slice` keeping `[1]`, or a
/// `Gather` of index 0 giving a scalar.
struct FirstOf {
    op: &'static str,
    index_dims: Vec<i64>,
    slice: bool,
}

fn first_of(op: &'static str, index_dims: Vec<i64>, slice: bool) -> FirstOf {
    FirstOf { op, index_dims, slice }
}

/// The contract's labels, i64 `[N]`, and a `Cast` to int32 where the graph declares that.
fn convert_labels(
    graph: &mut GraphProto,
    l: &Declared,
    changes: &mut InterfaceChanges,
) -> Result<Option<String>, String> {
    let rank_ok = l.dims.as_deref().is_none_or(|d| d.len() == 1);
    if !rank_ok {
        return Err(format!("input {}: class labels must be [N]", l.describe()));
    }
    if l.elem == DataType::Int64 as i32 {
        rename_input(graph, &l.name, meta::INPUT_CLASS_LABELS, changes);
        return Ok(None);
    }
    if l.elem != DataType::Int32 as i32 {
        return Err(format!("input {}: class labels must be int64 or int32", l.describe()));
    }
    let described = l.describe();
    feed_converted(graph, &l.name, meta::INPUT_CLASS_LABELS, DataType::Int64, l.elem, None);
    Ok(Some(format!("i64 [N] -> {described}")))
}

/// Replaces graph input `original` with a new input `contract` of type `from` `[N]`, and puts in
/// front of the graph the nodes that turn it into what the graph reads as `original`: the first
/// value (if `first`), then a `Cast` to `to` (or an `Identity`).
fn feed_converted(
    graph: &mut GraphProto,
    original: &str,
    contract: &str,
    from: DataType,
    to: i32,
    first: Option<FirstOf>,
) {
    graph.input.retain(|i| i.name != original);
    graph.input.push(batch_input(contract, from));
    let mut nodes = Vec::new();
    let mut current = contract.to_string();
    if let Some(first) = first {
        let taken = tensor_names(graph);
        let (index, out) = (fresh_name(&taken, &format!("{contract}.first_index")), format!("{contract}.first"));
        graph.initializer.push(TensorProto {
            name: index.clone(),
            dims: first.index_dims.clone(),
            data_type: DataType::Int64 as i32,
            int64_data: vec![0],
            ..Default::default()
        });
        let mut inputs = vec![current.clone(), index.clone()];
        if first.slice {
            // Slice(x, starts = [0], ends = [1]).
            let ends = fresh_name(&taken, &format!("{contract}.first_end"));
            graph.initializer.push(TensorProto {
                name: ends.clone(),
                dims: vec![1],
                data_type: DataType::Int64 as i32,
                int64_data: vec![1],
                ..Default::default()
            });
            inputs.push(ends);
        }
        nodes.push(node(first.op, &format!("{contract}.first"), inputs, &out, vec![]));
        current = out;
    }
    if to == from as i32 {
        nodes.push(node("Identity", &format!("{contract}.identity"), vec![current], original, vec![]));
    } else {
        let attr = AttributeProto {
            name: "to".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
            i: to as i64,
            ..Default::default()
        };
        nodes.push(node("Cast", &format!("{contract}.cast"), vec![current], original, vec![attr]));
    }
    graph.node.splice(0..0, nodes);
}

fn node(op: &str, name: &str, input: Vec<String>, output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input,
        output: vec![output.to_string()],
        attribute,
        ..Default::default()
    }
}

/// A graph input of element type `elem` and shape `[N]`.
fn batch_input(name: &str, elem: DataType) -> ValueInfoProto {
    let dim = Dimension { value: Some(dimension::Value::DimParam("N".into())), ..Default::default() };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim: vec![dim] }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
