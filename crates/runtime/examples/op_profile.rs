//! Where one network evaluation spends its time, per tract operator, after tract's optimiser.
//!
//! ```text
//! cargo run --release -p edgediff-runtime --example op_profile -- MODEL.onnx [EVALS] [BATCH] [--tract-only]
//! ```
//! Our own ops (int8 convolutions, GroupNorm's channel affine) run unless `--tract-only` asks for
//! tract's operators alone.
//! Plans the model like the sampler does (fixed batch, `into_optimized`), evaluates it once to
//! warm up, then `EVALS` times (default 50) with a timer around every node (tract's
//! `run_plan_with_eval` hook), and prints the mean time per evaluation grouped by operator
//! name, then the 15 most expensive nodes. This is how the int8 investigation (issue 4) found
//! which ops cost what; timings are wall-clock, so run it on a quiet machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgediff_runtime::network::{fix_input_facts, input_values};
use edgediff_runtime::Ops;
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tract_only = args.iter().any(|a| a == "--tract-only");
    args.retain(|a| a != "--tract-only");
    let Some(path) = args.first() else {
        eprintln!("usage: op_profile MODEL.onnx [EVALS] [BATCH]");
        std::process::exit(2);
    };
    let evals: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let mut proto = tract_onnx::onnx().proto_model_for_path(path)?;
    let props: BTreeMap<String, String> =
        proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
    let ops = if tract_only { Ops::TractOnly } else { Ops::Edgediff };
    let model = edgediff_runtime::model::prepare(&mut proto, ops).model_for_proto_model(&proto)?;
    let meta = edgediff_core::meta::ModelMeta::from_props(&props)?;
    let (model, slots) = fix_input_facts(model, &meta, batch)?;
    let sample = vec![0.5f32; batch * meta.image_len()];
    let inputs = input_values(&slots, &meta, &sample, &vec![500f32; batch], &vec![0i64; batch])?;
    let plan = model.into_optimized()?.into_runnable()?;
    let mut state = plan.spawn()?;
    state.run(inputs.clone())?;

    let mut per_node: BTreeMap<usize, (String, String, Duration)> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..evals {
        state.run_plan_with_eval(inputs.clone(), |session, op_state, node, input| {
            let t = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(session, op_state, node, input);
            let entry = per_node
                .entry(node.id)
                .or_insert_with(|| (node.op().name().to_string(), node.name.clone(), Duration::ZERO));
            entry.2 += t.elapsed();
            out
        })?;
    }
    let total = started.elapsed() / evals as u32;
    let mut per_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for (op, _, d) in per_node.values() {
        let e = per_op.entry(op.clone()).or_default();
        e.0 += 1;
        e.1 += *d / evals as u32;
    }
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .1.cmp(&a.1 .1));
    println!(
        "{path}: batch {batch}, {evals} evals, {:.3} ms per eval (with per-node timers)",
        total.as_secs_f64() * 1e3
    );
    println!("{:<28} {:>6} {:>10} {:>7}", "operator", "nodes", "us/eval", "share");
    for (op, (n, d)) in &ops {
        println!(
            "{op:<28} {n:>6} {:>10.1} {:>6.1}%",
            d.as_secs_f64() * 1e6,
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        );
    }
    let mut nodes: Vec<_> = per_node.into_values().collect();
    nodes.sort_by(|a, b| b.2.cmp(&a.2));
    println!("\nmost expensive nodes:");
    for (op, name, d) in nodes.iter().take(15) {
        println!("{:>10.1} us  {op:<24} {name}", (*d / evals as u32).as_secs_f64() * 1e6);
    }
    Ok(())
}
