//! tract's optimised ops, run in tract's order without tract's plan.
//!
//! tract's `SimplePlan` keeps the whole optimised graph for the plan's life. In tract 0.23.9
//! a `TypedNode` takes 1,624 bytes whatever it does: it holds its outputs in a
//! `SmallVec<[Outlet<TypedFact>; 4]>`, each with inline successor lists, and a `TypedFact`
//! (symbolic shape, constant and uniform values, ROI expressions…) is 304 bytes. Even with
//! the smallest fact tract's `Graph` accepts, a node stays at 536 bytes, and the turn table
//! holds a `SmallVec` of four values per node. On the 1.5 MiB default int8 model the node
//! table alone was 150 KiB, more than the whole allowance the sampler's memory goal leaves over
//! weights and activations once the rest of tract's bookkeeping is counted.
//!
//! Running needs much less: each evaluated op, where its inputs come from and which values
//! die after it. [`CompactPlan`] takes tract's evaluation order and flush lists (tract's own
//! `eval_order_opt_ram_for_nodes` and `build_flush_list`, as `SimplePlan::build` computes
//! them), moves the ops out of the graph and drops the graph: a step takes
//! `size_of::<Step>()` bytes plus its name, and each value a single slot. The loop is
//! `SimpleState`'s: clone the inputs, free what is no longer needed, evaluate the op (or its
//! state) with a turn context. The ops are tract's own objects, so the bytes do not change
//! (tested against tract's plan).
//!
//! Each `IntoShape` is swapped for [`Reshape`], which runs the same two lines without the
//! optimiser's axes mapping (about 5 KB per reshape).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::order::{build_flush_list, eval_order_opt_ram_for_nodes};
use tract_onnx::tract_core::ops::change_axes::IntoShape;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

pub use crate::ops::reshape::Reshape;
pub use crate::ops::split_binary::SplitBinary;
pub use crate::ops::split_concat::SplitConcat;
pub use crate::ops::transpose::Transpose;
use crate::session::fresh_session;

/// One evaluated node. Inputs and the values freed before it runs are ranges of
/// [`CompactPlan::links`], so a step owns no small allocations but its name.
pub struct Step {
    op: Box<dyn TypedOp>,
    state: Option<Box<dyn OpState>>,
    name: Box<str>,
    /// The node's id in tract's optimised graph (what ops see as `EvalContext::node_id`).
    node: u32,
    /// Where the node's outputs go in [`CompactPlan::values`].
    first_output: u32,
    outputs: u32,
    inputs: (u32, u32),
    flush: (u32, u32),
}

impl Step {
    /// The step that evaluates `node`, its op moved out of the graph (an `IntoShape` becomes a
    /// [`Reshape`]) with its state for `session`.
    fn new(
        node: TypedNode,
        first_output: u32,
        inputs: (u32, u32),
        flush: (u32, u32),
        session: SessionId,
        turn: &TurnState,
    ) -> TractResult<Step> {
        ensure!(node.id <= u32::MAX as usize, "node id {} too large", node.id);
        let op = match node.op.downcast_ref::<IntoShape>() {
            Some(reshape) => Box::new(Reshape::from(reshape)) as Box<dyn TypedOp>,
            None => split(node.op),
        };
        let state = op.state(&turn.context(session, node.id))?;
        Ok(Step {
            op,
            state,
            name: node.name.into_boxed_str(),
            node: node.id as u32,
            first_output,
            outputs: node.outputs.len() as u32,
            inputs,
            flush,
        })
    }

    /// The node's name in the optimised graph.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's id in the optimised graph.
    pub fn node_id(&self) -> usize {
        self.node as usize
    }

    /// The op this step evaluates.
    pub fn op(&self) -> &dyn TypedOp {
        self.op.as_ref()
    }

    fn describe(&self) -> String {
        format!("Evaluating #{} \"{}\" {}", self.node, self.name, self.op.name())
    }
}

/// `op`, or the op that splits it over the plan's threads ([`SplitBinary`], [`SplitConcat`]) or
/// transposes in register blocks ([`Transpose`]).
fn split(op: Box<dyn TypedOp>) -> Box<dyn TypedOp> {
    let op = match SplitBinary::for_op(op) {
        Ok(split) => return Box::new(split),
        Err(op) => op,
    };
    let op = match SplitConcat::for_op(op) {
        Ok(split) => return Box::new(split),
        Err(op) => op,
    };
    match Transpose::for_op(op) {
        Ok(transpose) => Box::new(transpose),
        Err(op) => op,
    }
}

/// A model input: where it goes and what it must be.
struct Source {
    value: u32,
    datum_type: DatumType,
    shape: Box<[usize]>,
}

/// Where each node's outputs live in [`CompactPlan::values`]: one slot per output of every
/// source and evaluated node, and of every constant an evaluated node reads.
struct Slots {
    /// The first slot of each node's outputs, by node id.
    first: Vec<Option<u32>>,
    count: u32,
}

impl Slots {
    fn for_order(model: &TypedModel, order: &[usize]) -> Slots {
        let mut slots = Slots { first: vec![None; model.nodes.len()], count: 0 };
        // Every input gets a slot, also one no node reads (a model may ignore its timestep).
        for input in model.inputs.iter() {
            slots.place(model.node(input.node));
        }
        for &n in order {
            let node = model.node(n);
            slots.place(node);
            for input in &node.inputs {
                slots.place(model.node(input.node));
            }
        }
        slots
    }

    fn place(&mut self, node: &TypedNode) {
        if self.first[node.id].is_none() {
            self.first[node.id] = Some(self.count);
            self.count += node.outputs.len() as u32;
        }
    }

    fn value_of(&self, outlet: OutletId) -> TractResult<u32> {
        let first = self.first[outlet.node].with_context(|| format!("node {} is not planned", outlet.node))?;
        Ok(first + outlet.slot as u32)
    }

    /// The model input at `outlet`: its slot and the type and shape it must have.
    fn source(&self, model: &TypedModel, outlet: OutletId) -> TractResult<Source> {
        let fact = model.outlet_fact(outlet)?;
        let shape =
            fact.shape.as_concrete().with_context(|| format!("input shape {:?} is not concrete", fact.shape))?;
        Ok(Source { value: self.value_of(outlet)?, datum_type: fact.datum_type, shape: shape.into() })
    }

    /// Every slot empty but the constants', which hold their values for the plan's life.
    fn constants(&self, nodes: &[Option<TypedNode>]) -> Vec<Option<TValue>> {
        let mut values: Vec<Option<TValue>> = vec![None; self.count as usize];
        for (first, node) in self.first.iter().zip(nodes) {
            if let (Some(first), Some(node)) = (first, node) {
                if let Some(k) = node.op_as::<Const>() {
                    values[*first as usize] = Some(k.val().clone().into_tvalue());
                }
            }
        }
        values
    }
}

/// An optimised model reduced to what evaluating it needs (see the module doc).
pub struct CompactPlan {
    steps: Vec<Step>,
    /// Value indexes: every step's inputs, then every step's flush list.
    links: Vec<u32>,
    /// One slot per output of every evaluated, source or constant node. Constants stay for
    /// the plan's life; everything else lives only during a run.
    values: Vec<Option<TValue>>,
    sources: Vec<Source>,
    outputs: Vec<u32>,
    session: SessionId,
    turn: TurnState,
    /// The workers a run splits its ops over; none for one thread.
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
}

impl CompactPlan {
    /// Plans an optimised `model` whose every shape is concrete (the runtime fixes the batch
    /// before optimising), to run on `threads` threads (our ops' splits, and tract's
    /// multi-threaded kernels with the `tract-threads` feature).
    pub fn new(mut model: TypedModel, threads: usize) -> TractResult<CompactPlan> {
        let pool = crate::threads::new_pool(threads)?;
        let input_outlets = model.input_outlets()?.to_vec();
        let output_outlets = model.output_outlets()?.to_vec();
        let input_nodes: Vec<usize> = input_outlets.iter().map(|o| o.node).collect();
        let output_nodes: Vec<usize> = output_outlets.iter().map(|o| o.node).collect();
        // What `SimplePlan::build` does for a model without runtime symbols.
        let mut order = eval_order_opt_ram_for_nodes(model.nodes(), &input_nodes, &output_nodes, &[])?;
        order.retain(|&n| !model.node(n).op_is::<Const>());
        let flush_lists = build_flush_list(&model, &order, &output_outlets, |n| !n.op_is::<Const>());

        let slots = Slots::for_order(&model, &order);
        let mut links = Vec::new();
        let mut step_inputs = Vec::with_capacity(order.len());
        for &n in &order {
            let start = links.len() as u32;
            for &input in &model.node(n).inputs {
                links.push(slots.value_of(input)?);
            }
            step_inputs.push((start, links.len() as u32));
        }
        let mut step_flushes = Vec::with_capacity(order.len());
        for flush in &flush_lists[..order.len()] {
            let start = links.len() as u32;
            for &n in flush {
                let first = slots.value_of(OutletId::new(n, 0))?;
                links.extend(first..first + model.node(n).outputs.len() as u32);
            }
            step_flushes.push((start, links.len() as u32));
        }
        let sources = input_outlets.iter().map(|o| slots.source(&model, *o)).collect::<TractResult<_>>()?;
        let outputs = output_outlets.iter().map(|o| slots.value_of(*o)).collect::<TractResult<_>>()?;

        let session = fresh_session()?;
        let turn = TurnState::default();
        let mut nodes: Vec<Option<TypedNode>> = std::mem::take(&mut model.nodes).into_iter().map(Some).collect();
        let values = slots.constants(&nodes);
        let mut steps = Vec::with_capacity(order.len());
        for (ix, &n) in order.iter().enumerate() {
            let node = nodes[n].take().context("a node is planned twice")?;
            if node.op_is::<TypedSource>() {
                ensure!(step_flushes[ix].0 == step_flushes[ix].1, "source {} frees values", node.name);
                continue;
            }
            let first_output = slots.first[n].context("an evaluated node has no value slot")?;
            steps.push(Step::new(node, first_output, step_inputs[ix], step_flushes[ix], session, &turn)?);
        }
        Ok(CompactPlan { steps, links, values, sources, outputs, session, turn, pool })
    }

    /// The evaluated nodes, in evaluation order (what [`CompactPlan::run_observed`]'s
    /// callbacks index).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Bytes the plan's own tables take (steps, links, value slots), not counting the ops,
    /// names and constants.
    pub fn table_bytes(&self) -> usize {
        self.steps.capacity() * std::mem::size_of::<Step>()
            + self.links.capacity() * 4
            + self.values.capacity() * std::mem::size_of::<Option<TValue>>()
    }

    /// Evaluates the model on `inputs` (in the model's input order).
    pub fn run(&mut self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.run_observed(inputs, |_| (), |_| ())
    }

    /// [`CompactPlan::run`], calling `before(i)` and `after(i)` around the evaluation of
    /// step `i` (after its inputs are gathered and dead values freed; `after` once its
    /// outputs exist and before they are stored). For profiling.
    pub fn run_observed(
        &mut self,
        inputs: TVec<TValue>,
        before: impl FnMut(usize) + Send,
        after: impl FnMut(usize) + Send,
    ) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == self.sources.len(), "expected {} inputs, got {}", self.sources.len(), inputs.len());
        for (ix, (source, value)) in self.sources.iter().zip(inputs).enumerate() {
            ensure!(
                value.datum_type() == source.datum_type && value.shape() == &*source.shape,
                "input {ix} is {:?} {:?}, expected {:?} {:?}",
                value.datum_type(),
                value.shape(),
                source.datum_type,
                source.shape
            );
            self.values[source.value as usize] = Some(value);
        }
        let executed = match self.pool.clone() {
            Some(pool) => crate::threads::with_pool(&pool, || self.exec(before, after)),
            None => self.exec(before, after),
        };
        let outputs = match executed {
            Ok(()) => self
                .outputs
                .iter()
                .map(|&v| self.values[v as usize].clone().context("an output was not computed"))
                .collect(),
            Err(e) => Err(e),
        };
        self.clear();
        outputs
    }

    fn exec(&mut self, mut before: impl FnMut(usize), mut after: impl FnMut(usize)) -> TractResult<()> {
        let CompactPlan { steps, links, values, session, turn, .. } = self;
        for (ix, step) in steps.iter_mut().enumerate() {
            let mut inputs: TVec<TValue> = TVec::new();
            for &v in &links[step.inputs.0 as usize..step.inputs.1 as usize] {
                let value =
                    values[v as usize].clone().with_context(|| format!("{}: an input is missing", step.describe()))?;
                inputs.push(value);
            }
            for &v in &links[step.flush.0 as usize..step.flush.1 as usize] {
                values[v as usize] = None;
            }
            let ctx = turn.context(*session, step.node as usize);
            before(ix);
            let outputs = match step.state.as_deref_mut() {
                Some(state) => state.eval(&ctx, step.op.as_op(), inputs),
                None => step.op.eval(&ctx, inputs),
            }
            .with_context(|| step.describe())?;
            after(ix);
            ensure!(
                outputs.len() == step.outputs as usize,
                "{}: {} outputs, expected {}",
                step.describe(),
                outputs.len(),
                step.outputs
            );
            for (k, output) in outputs.into_iter().enumerate() {
                values[step.first_output as usize + k] = Some(output);
            }
        }
        Ok(())
    }

    /// Drops every value a run made (constants stay).
    fn clear(&mut self) {
        for source in &self.sources {
            self.values[source.value as usize] = None;
        }
        for step in &self.steps {
            let first = step.first_output as usize;
            self.values[first..first + step.outputs as usize].fill(None);
        }
    }
}

impl Drop for CompactPlan {
    /// What `SimpleState`'s drop does: ops keeping scratch per session release it.
    fn drop(&mut self) {
        for step in &self.steps {
            step.op.drop_session(self.session, step.node as usize);
        }
    }
}

#[cfg(test)]
mod tests;
