//! One network evaluation (batch 1): tract vs ONNX Runtime, same model, same thread count, on
//! the default model and on the 35.7M-param DDPM-CIFAR-10-size U-Net.
//!
//! Criterion ids: group `eval-<model>` (`eval-sprites`, `eval-ddpm35m`), function
//! `<engine>-<precision>` (`tract-fp32`, `ort-fp32`, `tract-int8`, `ort-int8`: the precisions
//! `support::models::bench_models` lists; `ortqdq-int8`: ONNX Runtime on its own static QDQ
//! quantisation of the fp32 file, `support::models::ort_qdq_path`), parameter `t<threads>`. `cargo xtask bench-report` reads
//! `target/criterion/<group>/<function>/<parameter>/new/estimates.json`.
//!
//! Run: `cargo bench --bench network_eval` (criterion flags after `--`, e.g.
//! `-- --warm-up-time 1 --measurement-time 2`). Under `cargo test` it does nothing, to keep the
//! benches out of CI's test time (CI only compiles them).

mod support;

use std::hint::black_box;

use anyhow::Result;
use std::path::Path;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use support::engines::{self, bench_input, Engine, EngineKind};
use support::models::{bench_models, BenchModel};

/// Evaluations slower than this get criterion's flat sampling and fewer samples, so the 35.7M
/// net (~150 ms an eval on one core) stays within a few seconds per configuration.
const SLOW_EVAL_PARAMS: u64 = 10_000_000;

fn main() {
    support::criterion_main("network_eval", run);
}

fn run(c: &mut Criterion) -> Result<()> {
    let ort = engines::ort_library();
    if let Err(e) = &ort {
        eprintln!("note: ONNX Runtime rows skipped: {e}");
    }
    let mut engines = vec![EngineKind::Tract, EngineKind::TractOnly];
    if ort.is_ok() {
        engines.push(EngineKind::Ort);
    }
    for model in bench_models()? {
        bench_model(c, &model, &engines)?;
        if let (true, Some(qdq)) = (ort.is_ok(), support::models::ort_qdq_path(&model)) {
            bench_ort_qdq(c, &model, &qdq)?;
        }
    }
    Ok(())
}

fn bench_model(c: &mut Criterion, model: &BenchModel, kinds: &[EngineKind]) -> Result<()> {
    let mut group = model_group(c, model);
    for threads in support::THREADS {
        for &kind in kinds {
            // Loaded, planned and checked outside the timed loop; dropped before the next one
            // so two engines never hold the 35.7M net (or spin thread pools) at once.
            let engine = engines::load_checked(kind, &model.path, threads)?;
            let id = BenchmarkId::new(format!("{}-{}", kind.name(), model.precision), format!("t{threads}"));
            time_evaluations(&mut group, id, engine, model);
        }
    }
    group.finish();
    Ok(())
}

/// ONNX Runtime on its own int8 form of `model` (fp32), in `model`'s group as `ortqdq-int8`.
fn bench_ort_qdq(c: &mut Criterion, model: &BenchModel, qdq: &Path) -> Result<()> {
    let mut group = model_group(c, model);
    for threads in support::THREADS {
        let engine = engines::load_checked(EngineKind::Ort, qdq, threads)?;
        time_evaluations(&mut group, BenchmarkId::new("ortqdq-int8", format!("t{threads}")), engine, model);
    }
    group.finish();
    Ok(())
}

/// `model`'s criterion group, sampled for its size.
fn model_group<'c>(c: &'c mut Criterion, model: &BenchModel) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(model.group());
    if model.params >= SLOW_EVAL_PARAMS {
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
    } else {
        group.sample_size(50);
    }
    group
}

/// Times `engine`'s evaluation of `model`'s bench input as `id`.
fn time_evaluations(
    group: &mut BenchmarkGroup<WallTime>,
    id: BenchmarkId,
    mut engine: Box<dyn Engine>,
    model: &BenchModel,
) {
    let (sample, timestep) = bench_input(model.chw());
    group.bench_function(id, |b| {
        b.iter(|| match engine.eval(black_box(&sample), black_box(&timestep)) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        })
    });
}
