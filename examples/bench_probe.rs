//! Measurement helper for `cargo xtask bench-report`: runs one engine configuration in its own
//! process, so peak memory (heap and RSS) and instruction counts belong to that configuration
//! alone. It shares the engine code with the criterion benches (`benches/support`).
//!
//! ```text
//! bench_probe info                                    # JSON: ORT version, the bench models (exports the 35.7M net if missing)
//! bench_probe eval --engine tract|ort --model FILE --threads N
//! ```
//! `eval` loads and plans the model, evaluates it once (checked: right length, finite), then once
//! more inside [`measured_eval`], and prints JSON: the counting allocator's peak heap (all of
//! tract's memory; for ONNX Runtime only the Rust side, since its C++ allocations bypass Rust's
//! allocator) and the peak RSS (VmHWM). Under `valgrind --tool=callgrind
//! --toggle-collect='*measured_eval*'` the collected instructions are that one evaluation; under
//! `valgrind --tool=massif` the peak is the whole process's malloc heap, C++ included.

#[path = "../benches/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use edgediff_runtime::{memory, CountingAllocator};
use serde_json::json;
use support::engines::{self, bench_input, Engine, EngineKind};
use support::models;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("info") => info(),
        Some("eval") => eval(&args[1..]),
        _ => {
            eprintln!("usage: bench_probe info | bench_probe eval --engine tract|ort --model FILE --threads N");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn info() -> Result<()> {
    let mut list = Vec::new();
    for m in models::bench_models()? {
        let bytes = m.bytes()?;
        list.push(json!({
            "key": m.key,
            "precision": m.precision.to_string(),
            "path": m.path,
            "params": m.params,
            "image_size": m.image_size,
            "channels": m.channels,
            "file_bytes": bytes.len(),
            "sha256": edgediff_io::sha256_hex(&bytes),
        }));
    }
    let ort = engines::ort_version().map_err(|e| e.to_string());
    emit(&json!({ "ort_version": ort.as_ref().ok(), "ort_error": ort.err(), "models": list }))
}

fn eval(args: &[String]) -> Result<()> {
    let (mut engine_name, mut model, mut threads) = (None, None, 1usize);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--engine" => engine_name = Some(value()?.clone()),
            "--model" => model = Some(PathBuf::from(value()?)),
            "--threads" => threads = value()?.parse().with_context(|| format!("{flag}: not a number"))?,
            other => bail!("unknown flag {other}"),
        }
    }
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let kind = EngineKind::parse(engine_name.as_deref().context("--engine is required")?)?;
    let path = model.context("--model is required")?;
    // Only the engine touches the model file, so the peaks below are the engine's own.
    let mut engine = engines::load_checked(kind, &path, threads)?;
    let (sample, timestep) = bench_input(engine.chw());
    let out = measured_eval(engine.as_mut(), &sample, &timestep)?;
    emit(&json!({
        "engine": kind.name(),
        "threads": threads,
        "model": path,
        "outputs": out.len(),
        "peak_heap_bytes": memory::peak_bytes(),
        "peak_rss_bytes": memory::peak_rss_bytes(),
    }))
}

/// Prints one JSON document on stdout; a closed pipe is an error, not a panic.
fn emit(value: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value:#}").and_then(|_| out.flush()).context("cannot write to stdout")
}

/// The evaluation callgrind counts (`--toggle-collect='*measured_eval*'`): never inlined, so
/// its name survives in the symbol table.
#[inline(never)]
fn measured_eval(engine: &mut dyn Engine, sample: &[f32], timestep: &[f32]) -> Result<Vec<f32>> {
    engine.eval(black_box(sample), black_box(timestep))
}
