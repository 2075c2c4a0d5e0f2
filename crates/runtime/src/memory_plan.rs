//! Memory predicted before it is allocated: what a model's weights take, the most its
//! activations hold at once for a batch, and the limit a run must stay under (the user's
//! `--memory-budget`, else the machine's memory). A model or flags whose numbers ask for more
//! are refused from their shapes alone, before tract or the sampler allocates a byte of it;
//! the measured peak is still checked afterwards ([`crate::memory`]).
//!
//! The prediction is a floor, not an estimate of the peak: the weights, the live activations
//! and the caller's own buffers must all exist at once, so a run is refused only when it could
//! not fit whatever the executor does. Loading's transient copies come on top of it.

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};
use tract_onnx::prelude::*;

use crate::error::RuntimeError;
use crate::memory::format_size;

/// The most memory a run may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    /// Whether the user set it (`--memory-budget`), rather than the machine's memory.
    pub from_budget: bool,
}

impl MemoryLimit {
    /// The user's budget, else the memory this process can have: the machine's (`MemTotal`),
    /// or a cgroup's limit below it; unlimited where neither can be read.
    pub fn new(budget: Option<u64>) -> MemoryLimit {
        match budget {
            Some(bytes) => MemoryLimit { bytes, from_budget: true },
            None => MemoryLimit { bytes: machine_memory().unwrap_or(u64::MAX), from_budget: false },
        }
    }

    /// An error when `needed` bytes (made of `parts`, for the message) exceed the limit.
    pub fn check(&self, needed: u64, parts: &str) -> Result<(), RuntimeError> {
        if needed <= self.bytes {
            return Ok(());
        }
        let limit = if self.from_budget { "the memory budget" } else { "this machine's memory" };
        Err(RuntimeError::PredictedOverBudget {
            needed: format_size(needed),
            parts: parts.to_string(),
            limit: format!("{limit} of {}", format_size(self.bytes)),
        })
    }
}

/// `MemTotal` of /proc/meminfo, lowered to a cgroup v2 `memory.max` where one is set.
fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let total = kib.saturating_mul(1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// What a planned network holds at least, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryPrediction {
    /// The model's weights (its initializers, as stored).
    pub weights: u64,
    /// The most activation bytes alive at once during one evaluation of the batch.
    pub activations: u64,
    /// The caller's own buffers (the sampling loop's vectors, the output image).
    pub buffers: u64,
}

impl MemoryPrediction {
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.activations).saturating_add(self.buffers)
    }

    /// The parts, for messages.
    pub fn describe(&self, batch: usize) -> String {
        format!(
            "weights {}, activations {} at a network batch of {batch}, sampling buffers and image {}",
            format_size(self.weights),
            format_size(self.activations),
            format_size(self.buffers)
        )
    }
}

/// Bytes of one element of an ONNX data type; `None` for strings and unknown types.
pub(crate) fn element_bytes(data_type: i32) -> Option<u64> {
    match DataType::try_from(data_type) {
        Ok(DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64) => Some(8),
        Ok(DataType::Float | DataType::Int32 | DataType::Uint32) => Some(4),
        Ok(DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16) => Some(2),
        Ok(DataType::Int8 | DataType::Uint8 | DataType::Bool) => Some(1),
        Ok(DataType::Complex128) => Some(16),
        _ => None,
    }
}

/// Bytes of a tensor of `dims` and `data_type`, exactly: `None` for a type without a fixed size,
/// a negative dim, or a size past `u64`.
pub(crate) fn tensor_bytes(dims: &[i64], data_type: i32) -> Option<u64> {
    dims.iter().try_fold(element_bytes(data_type)?, |n, &d| n.checked_mul(u64::try_from(d).ok()?))
}

/// Elements of a tensor of `dims` (saturating: a negative dim counts as 0).
fn element_count(dims: &[i64]) -> u64 {
    dims.iter().fold(1u64, |n, &d| n.saturating_mul(u64::try_from(d).unwrap_or(0)))
}

/// The bytes the graph's initializers describe (their dims times their element size).
pub fn initializer_bytes(graph: &GraphProto) -> u64 {
    graph
        .initializer
        .iter()
        .map(|t| element_count(&t.dims).saturating_mul(element_bytes(t.data_type).unwrap_or(0)))
        .sum()
}

/// Refuses a node that would build a tensor above `limit` from constant inputs alone
/// (`ConstantOfShape`, `Expand`, `Tile`, `Range`): tract evaluates such nodes while it types
/// the graph, so their size must be checked before.
pub fn check_constant_builders(graph: &GraphProto, limit: &MemoryLimit) -> Result<(), RuntimeError> {
    let constants = Constants(graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect());
    for node in &graph.node {
        let input = |ix: usize| constants.integers(&node.input, ix);
        let elements = match node.op_type.as_str() {
            "ConstantOfShape" => input(0).map(|s| element_count(&s)),
            "Expand" | "Tile" => input(1).map(|s| element_count(&s)),
            "Range" => range_length(input(0), input(1), input(2)),
            _ => None,
        };
        // 8 bytes: the widest element these nodes build from integer inputs.
        if let Some(bytes) = elements.map(|n| n.saturating_mul(8)) {
            limit.check(bytes, &format!("node `{}` ({}) builds a tensor of that size", node.name, node.op_type))?;
        }
    }
    Ok(())
}

/// The graph's initializers by name.
struct Constants<'a>(HashMap<&'a str, &'a TensorProto>);

impl Constants<'_> {
    /// The integer values of a node's input `ix`, if it is a small integer initializer.
    fn integers(&self, inputs: &[String], ix: usize) -> Option<Vec<i64>> {
        inputs.get(ix).and_then(|n| self.0.get(n.as_str())).and_then(|t| integers(t))
    }
}

/// Elements of `Range(start, limit, delta)` with constant integer inputs.
fn range_length(start: Option<Vec<i64>>, end: Option<Vec<i64>>, delta: Option<Vec<i64>>) -> Option<u64> {
    let [start, end, delta] = [start, end, delta].map(|v| v.and_then(|v| v.first().copied()));
    let (start, end, delta) = (start?, end?, delta?);
    if delta == 0 {
        return None;
    }
    let span = (i128::from(end) - i128::from(start)) / i128::from(delta);
    Some(u64::try_from(span.max(0)).unwrap_or(u64::MAX))
}

/// The values of an int64 or int32 initializer of at most 16 elements (shapes, repeats, bounds).
fn integers(t: &TensorProto) -> Option<Vec<i64>> {
    if element_count(&t.dims) > 16 {
        return None;
    }
    match DataType::try_from(t.data_type).ok()? {
        DataType::Int64 if t.raw_data.is_empty() => Some(t.int64_data.clone()),
        DataType::Int64 => {
            Some(t.raw_data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect())
        }
        DataType::Int32 if t.raw_data.is_empty() => Some(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
        DataType::Int32 => Some(
            t.raw_data.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes(b.try_into().unwrap_or([0; 4])))).collect(),
        ),
        _ => None,
    }
}

/// The most bytes of node outputs alive at once when `model` runs its nodes in order, each
/// output freed after its last reader (as tract's plans do); constants are weights, not
/// activations. Outputs whose shape is not concrete count as empty.
pub fn activation_peak(model: &TypedModel) -> TractResult<u64> {
    let order = model.eval_order()?;
    let mut last_use: HashMap<OutletId, usize> = HashMap::new();
    for (step, &node) in order.iter().enumerate() {
        for input in &model.node(node).inputs {
            last_use.insert(*input, step);
        }
    }
    for output in model.output_outlets()? {
        last_use.insert(*output, usize::MAX);
    }
    let (mut live, mut peak) = (0u64, 0u64);
    let mut alive: Vec<(OutletId, u64)> = Vec::new();
    for (step, &id) in order.iter().enumerate() {
        let node = model.node(id);
        if node.op_is::<tract_onnx::tract_core::ops::konst::Const>() {
            continue;
        }
        for (slot, output) in node.outputs.iter().enumerate() {
            let bytes = fact_bytes(&output.fact);
            live = live.saturating_add(bytes);
            alive.push((OutletId::new(id, slot), bytes));
        }
        peak = peak.max(live);
        alive.retain(|&(outlet, bytes)| {
            let keep = last_use.get(&outlet).is_some_and(|&last| last > step);
            if !keep {
                live -= bytes;
            }
            keep
        });
    }
    Ok(peak)
}

/// Bytes of a tensor of `fact`, if its shape is concrete.
fn fact_bytes(fact: &TypedFact) -> u64 {
    let Some(shape) = fact.shape.as_concrete() else { return 0 };
    let elements = shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
    elements.saturating_mul(fact.datum_type.size_of() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_names_itself_and_the_parts() {
        let limit = MemoryLimit::new(Some(1 << 20));
        assert!(limit.check(1 << 20, "x").is_ok());
        let e = limit.check(3 << 20, "weights 3 MiB").unwrap_err().to_string();
        assert!(e.contains("3.0 MiB") && e.contains("memory budget of 1.0 MiB") && e.contains("weights 3 MiB"), "{e}");
    }

    #[test]
    fn the_machine_limit_is_read() {
        let limit = MemoryLimit::new(None);
        assert!(!limit.from_budget);
        if cfg!(target_os = "linux") {
            assert!(limit.bytes > (64 << 20) && limit.bytes < u64::MAX, "{}", limit.bytes);
        }
    }

    #[test]
    fn range_lengths_follow_the_step() {
        assert_eq!(range_length(Some(vec![0]), Some(vec![1 << 40]), Some(vec![1])), Some(1 << 40));
        assert_eq!(range_length(Some(vec![10]), Some(vec![0]), Some(vec![-2])), Some(5));
        assert_eq!(range_length(Some(vec![0]), Some(vec![10]), Some(vec![0])), None);
        assert_eq!(range_length(Some(vec![0]), None, Some(vec![1])), None);
    }
}
