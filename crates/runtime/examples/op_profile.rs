//! Where one network evaluation spends its time, per tract operator, after tract's optimiser.
//!
//! ```text
//! cargo run --release -p edgediff-runtime --example op_profile -- MODEL.onnx [EVALS] [BATCH] [--tract-only] [--nodes] [--threads N]
//! ```
//! Our own ops (int8 convolutions and matrix products, GroupNorm) run unless `--tract-only` asks for
//! tract's operators alone. `--nodes` also lists every evaluated node in plan order.
//! Plans the model like the sampler does (fixed batch, `into_optimized`), evaluates it once to
//! warm up, then `EVALS` times (default 50) with a timer around every node
//! (`CompactPlan::run_observed`), and prints the mean time per evaluation grouped by operator
//! name, then the 15 most expensive nodes: what each op costs, which is how the fusions under
//! `src/rewrite/` were chosen. Timings are wall-clock, so run it on a quiet machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgediff_runtime::compact_plan::CompactPlan;
use edgediff_runtime::memory::{self, format_size, CountingAllocator};
use edgediff_runtime::network::{fix_input_facts, input_values};
use edgediff_runtime::Ops;
use tract_onnx::prelude::*;

/// Counts heap bytes, so the plan's own size can be reported.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> TractResult<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tract_only = args.iter().any(|a| a == "--tract-only");
    let list_nodes = args.iter().any(|a| a == "--nodes");
    args.retain(|a| a != "--tract-only" && a != "--nodes");
    let threads: usize = match args.iter().position(|a| a == "--threads") {
        Some(ix) => {
            let n = args.get(ix + 1).map(|s| s.parse()).transpose()?.unwrap_or(1);
            args.drain(ix..(ix + 2).min(args.len()));
            n
        }
        None => 1,
    };
    let Some(path) = args.first() else {
        eprintln!("usage: op_profile MODEL.onnx [EVALS] [BATCH]");
        std::process::exit(2);
    };
    let evals: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let heap_before = memory::current_bytes();
    let ops = if tract_only { Ops::TractOnly } else { Ops::Edgediff };
    let dir = std::path::Path::new(path).parent().map(|d| d.to_path_buf());
    let options = edgediff_runtime::LoadOptions { ops, dir, ..Default::default() };
    let (meta, _, model) = edgediff_runtime::Denoiser::load(&std::fs::read(path)?, &options)?.into_parts();
    let (model, slots) = fix_input_facts(model, &meta, batch)?;
    let sample = vec![0.5f32; batch * meta.image_len()];
    let inputs = input_values(&slots, &meta, &sample, &vec![500f32; batch], &vec![0i64; batch])?;
    let optimized = model.into_optimized()?;
    let plan_nodes = optimized.nodes.len();
    let const_bytes: usize = optimized
        .nodes
        .iter()
        .filter_map(|n| n.outputs.first()?.fact.konst.as_ref())
        .map(|t| t.len() * t.datum_type().size_of())
        .sum();
    let mut plan = CompactPlan::new(optimized, threads)?;
    let plan_heap = memory::current_bytes() - heap_before - inputs_bytes(&inputs, &sample);
    plan.run(inputs.clone())?;
    memory::reset_peak();
    let held = memory::current_bytes();
    plan.run(inputs.clone())?;
    let eval_transient = memory::peak_bytes() - held;
    // Heap above the held plan right after each node's output exists (before the plan frees
    // the inputs it no longer needs): the live activations plus any buffers held at that point.
    let mut live_after = vec![0usize; plan.steps().len()];
    plan.run_observed(inputs.clone(), |_| (), |step| live_after[step] = memory::current_bytes().saturating_sub(held))?;

    let mut spent = vec![Duration::ZERO; plan.steps().len()];
    let started = Instant::now();
    for _ in 0..evals {
        let mut t = Instant::now();
        let t = std::sync::Mutex::new(&mut t);
        plan.run_observed(
            inputs.clone(),
            |_| **t.lock().unwrap() = Instant::now(),
            |step| spent[step] += t.lock().unwrap().elapsed(),
        )?;
    }
    let total = started.elapsed() / evals as u32;
    let per_node: Vec<(usize, String, String, Duration)> = plan
        .steps()
        .iter()
        .zip(&spent)
        .map(|(s, d)| (s.node_id(), s.op().name().to_string(), s.name().to_string(), *d))
        .collect();
    let mut per_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for (_, op, _, d) in &per_node {
        let e = per_op.entry(op.clone()).or_default();
        e.0 += 1;
        e.1 += *d / evals as u32;
    }
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by_key(|(_, (_, time))| std::cmp::Reverse(*time));
    println!(
        "{path}: batch {batch}, {threads} thread(s), {evals} evals, {:.3} ms per eval (with per-node timers)",
        total.as_secs_f64() * 1e3
    );
    println!(
        "heap: plan {} ({plan_nodes} nodes optimised, {} evaluated: {} of step, link and value \
         tables, {} in constant tensors); one evaluation allocates up to {} more",
        format_size(plan_heap as u64),
        plan.steps().len(),
        format_size(plan.table_bytes() as u64),
        format_size(const_bytes as u64),
        format_size(eval_transient as u64)
    );
    println!("{:<28} {:>6} {:>10} {:>7}", "operator", "nodes", "us/eval", "share");
    for (op, (n, d)) in &ops {
        println!(
            "{op:<28} {n:>6} {:>10.1} {:>6.1}%",
            d.as_secs_f64() * 1e6,
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        );
    }
    if list_nodes {
        println!("\nevery evaluated node, in plan order:");
        println!("node        us/eval  heap after  operator                 name");
        for ((id, op, name, d), live) in per_node.iter().zip(&live_after) {
            println!(
                "#{id:<4} {:>9.1} us {:>10}  {op:<24} {name}",
                (*d / evals as u32).as_secs_f64() * 1e6,
                format_size(*live as u64)
            );
        }
    }
    let mut nodes = per_node;
    nodes.sort_by_key(|node| std::cmp::Reverse(node.3));
    println!("\nmost expensive nodes:");
    for (_, op, name, d) in nodes.iter().take(15) {
        println!("{:>10.1} us  {op:<24} {name}", (*d / evals as u32).as_secs_f64() * 1e6);
    }
    Ok(())
}

/// Heap held by the input tensors and the sample buffer, which are not part of the plan.
fn inputs_bytes(inputs: &TVec<TValue>, sample: &[f32]) -> usize {
    inputs.iter().map(|t| t.len() * t.datum_type().size_of()).sum::<usize>() + std::mem::size_of_val(sample)
}
