//! What a finished run reports: the `--report-json` object and the summary lines on stderr
//! (`--verbose` adds timings, memory and which of our own ops ran).

use std::path::Path;
use std::time::Duration;

use edgediff_runtime::memory::{self, format_size};
use edgediff_runtime::{Denoiser, SampleOutput};
use serde_json::{json, Value};

use crate::cli::GenerateArgs;
use crate::generate::Prepared;

/// The `--report-json` object: settings, timings and peak heap.
pub fn report_json(args: &GenerateArgs, run: &Prepared, output: &SampleOutput, total: Duration) -> Value {
    let (meta, cfg, choice) = (&run.meta, &run.settings, &run.choice);
    let shape = [args.batch as usize, meta.channels, meta.image_size, meta.image_size];
    json!({
        "model": run.label,
        "model_name": meta.model_name,
        "model_sha256": run.sha256,
        "precision": meta.precision.to_string(),
        "float_order": meta.float_order.to_string(),
        "value_range": [meta.value_range.0, meta.value_range.1],
        "shape": shape,
        "seed": args.seed,
        "steps": cfg.steps,
        "evaluations": output.evaluations,
        "scheduler": cfg.kind.to_string(),
        "spacing": cfg.spacing.to_string(),
        "eta": cfg.eta,
        "class": choice.name,
        "class_index": choice.index,
        "guidance": choice.effective_scale(),
        "network_batch": run.net.batch,
        "threads": args.threads,
        "threads_used": run.net.threads,
        "load_seconds": run.load.time.as_secs_f64(),
        "eval_seconds": output.eval_time.as_secs_f64(),
        "total_seconds": total.as_secs_f64(),
        "peak_heap_after_load_bytes": run.load.peak,
        "peak_heap_bytes": output.peak_heap.max(run.load.peak),
        "heap_held_after_load_bytes": run.load.held,
        "peak_heap_sampling_bytes": output.peak_heap,
        "peak_rss_bytes": memory::peak_rss_bytes(),
        "predicted_bytes": {
            "weights": run.net.predicted.weights,
            "activations": run.net.predicted.activations,
            "buffers": run.net.predicted.buffers,
            "total": run.net.predicted.total(),
        },
    })
}

/// One line on what was written; with `--verbose`, the model, load, sampling, ops and memory.
pub fn print(args: &GenerateArgs, out: &Path, run: &Prepared, output: &SampleOutput, total: Duration) {
    let (cfg, choice) = (&run.settings, &run.choice);
    eprintln!(
        "wrote {} ({} image(s), seed {}, {} {} steps, eta {}{}) in {:.2} s",
        out.display(),
        args.batch,
        args.seed,
        cfg.kind,
        output.evaluations,
        cfg.eta,
        choice.describe(),
        total.as_secs_f64()
    );
    if args.verbose {
        print_details(args, run, output);
    }
}

fn print_details(args: &GenerateArgs, run: &Prepared, output: &SampleOutput) {
    let per_step = output.eval_time.as_secs_f64() * 1000.0 / output.evaluations.max(1) as f64;
    let (net, load) = (&run.net, &run.load);
    eprintln!("model:        {} ({}, sha256 {})", run.label, run.meta.model_name, run.sha256);
    eprintln!(
        "load:         {:.3} s, peak heap while loading {}, held after load {}",
        load.time.as_secs_f64(),
        format_size(load.peak as u64),
        format_size(load.held as u64)
    );
    eprintln!(
        "sampling:     {:.1} ms per network evaluation (batch {}, {} thread(s) of {} asked), scheduler+noise {:.3} ms in all",
        per_step,
        net.batch,
        net.threads,
        args.threads,
        output.loop_time.as_secs_f64() * 1000.0
    );
    eprintln!(
        "own ops:      {} int8 convolutions and {} int8 matrix products ({} kernel), {} GroupNorms{}; the rest is tract",
        net.int8_convs,
        net.int8_matmuls,
        Denoiser::int8_kernel().unwrap_or("?"),
        net.group_norms,
        match net.channel_affines {
            0 => String::new(),
            n => format!(", {n} GroupNorm affines"),
        }
    );
    eprintln!("predicted:    at least {} ({})", format_size(net.predicted.total()), net.predicted.describe(net.batch));
    eprintln!(
        "peak memory:  heap {} while sampling, {} overall (measured by the counting allocator), RSS {}",
        format_size(output.peak_heap as u64),
        format_size(output.peak_heap.max(load.peak) as u64),
        memory::peak_rss_bytes().map(|b| format_size(b as u64)).unwrap_or_else(|| "n/a".into())
    );
}
