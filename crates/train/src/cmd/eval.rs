//! `train eval`: Frechet distance of generated samples to held-out real data, beside its floor
//! and ceilings (definition in `edgediff_eval`). For a class-conditional model,
//! `--class NAME|all` scores class by class (`edgediff_eval::conditional`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{ArgGroup, Args};
use serde_json::json;

use edgediff_cli::{parse, SchedulerArgs};
use edgediff_core::meta::ModelMeta;
use edgediff_core::SamplerSettings;
use edgediff_data::{Dataset, SPRITES};
use edgediff_eval::conditional::evaluate_classes;
use edgediff_eval::generate::{generate, model_meta, GenerateOptions};
use edgediff_eval::images::{load_samples, ImageSet};
use edgediff_eval::{evaluate, EvalOptions, DEFAULT_EVAL_SEED, MIN_COUNT};
use edgediff_io::npy;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["samples", "model"])))]
pub struct EvalArgs {
    /// Generated samples: float32 .npy [N,C,H,W] (e.g. `sampler --save-raw`) or a directory of PNGs.
    #[arg(long, value_name = "FILE.npy|DIR", conflicts_with = "SchedulerArgs")]
    samples: Option<PathBuf>,
    /// Generate the samples first, with the edge runtime (tract), from this ONNX model.
    #[arg(long, value_name = "FILE.onnx")]
    model: Option<PathBuf>,
    /// Real data: `sprites` or a folder of PNG/JPEG images.
    #[arg(long, value_name = "sprites|DIR", default_value = SPRITES)]
    data: String,
    /// Images per set (generated, and each held-out real set).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(MIN_COUNT as u64..=1_000_000))]
    count: u64,
    /// Seed of the held-out real images and of the noise ceiling.
    #[arg(long, default_value_t = DEFAULT_EVAL_SEED)]
    seed: u64,
    // Generation flags have no clap defaults (defaults are applied in `generate_samples`), so
    // that clap can refuse them beside --samples (where they would mean nothing) instead of ignoring them.
    /// With --model: how to sample (as `sampler`).
    #[command(flatten)]
    sampling: SchedulerArgs,
    /// With --model: images per network evaluation [default: 50].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096), conflicts_with = "samples")]
    batch: Option<u32>,
    /// With --model: seed of the first sample; sample i is `sampler --seed SAMPLE_SEED+i` [default: 0].
    #[arg(long, conflicts_with = "samples")]
    sample_seed: Option<u64>,
    /// With --model: also write the generated samples (float32 .npy [N,C,H,W]).
    #[arg(long, value_name = "FILE.npy", conflicts_with = "samples")]
    save_samples: Option<PathBuf>,
    /// With --model, a class-conditional model: the class to generate (name or index), or
    /// `all`: a table of conditional accuracy (shape checker, sprites) and FD per class against
    /// real images of that class, plus all classes pooled. --count is then per class.
    #[arg(long, value_name = "NAME|INDEX|all", requires = "model")]
    class: Option<String>,
    /// With --class: classifier-free guidance scale, as `sampler --guidance` [default: the
    /// model's `edgediff.guidance_scale`, else 1].
    #[arg(long, value_name = "W", allow_negative_numbers = true, value_parser = parse::guidance, requires = "class")]
    guidance: Option<f32>,
    /// Threads for the network and the features [default: available cores]. Results do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The guidance scale for `class`: --guidance, else the model's `edgediff.guidance_scale`
/// (`None` = 1, also for unconditional sampling).
fn guidance_for(args: &EvalArgs, meta: &ModelMeta, class: Option<usize>) -> Option<f32> {
    class.and(args.guidance.or(meta.guidance_scale))
}

/// Samples from the runtime (of `class`, for a conditional model); returns them with a JSON
/// description of how they were made.
fn generate_samples(
    args: &EvalArgs,
    onnx: &Path,
    threads: usize,
    class: Option<usize>,
) -> anyhow::Result<(ImageSet, serde_json::Value)> {
    let (bytes, meta) = model_meta(onnx)?;
    let settings = args.sampling.for_model(&meta.schedule, &SamplerSettings::default())?;
    let batch = args.batch.unwrap_or(50) as usize;
    let first_seed = args.sample_seed.unwrap_or(0);
    let guidance = guidance_for(args, &meta, class);
    let opts = GenerateOptions { count: args.count as usize, batch, threads, first_seed, class, guidance };
    let what = class.and_then(|c| meta.class_names.get(c)).map(|n| format!(" {n}")).unwrap_or_default();
    let started = Instant::now();
    let set = generate(onnx, &bytes, &settings, &opts, |done, total, secs| {
        if !args.json {
            eprintln!("generated{what} {done}/{total} ({secs:.0} s)");
        }
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let info = json!({
        "model": onnx.display().to_string(),
        "model_name": meta.model_name,
        "scheduler": settings.kind.to_string(),
        "steps": settings.steps,
        "eta": settings.eta,
        "spacing": settings.spacing.to_string(),
        "first_seed": first_seed,
        "class": class.and_then(|c| meta.class_names.get(c)),
        "guidance": class.map(|_| guidance.unwrap_or(1.0)),
        "batch": batch,
        "threads": threads,
        "seconds": seconds,
    });
    Ok((set, info))
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let (samples, source) = match (&args.samples, &args.model) {
        (Some(path), _) => {
            let set = load_samples(path, args.count as usize)?;
            (set, json!({ "samples": path.display().to_string() }))
        }
        (None, Some(onnx)) => match &args.class {
            Some(class) => return run_conditional(&args, onnx, class, threads),
            None => generate_samples(&args, onnx, threads, None)?,
        },
        (None, None) => anyhow::bail!("give --samples or --model"),
    };
    if let Some(path) = &args.save_samples {
        npy::write_f32(path, &samples.data, &[samples.len(), samples.channels, samples.size, samples.size])?;
    }
    let opts = EvalOptions { data: args.data.clone(), count: args.count as usize, seed: args.seed, threads };
    let report = evaluate(&samples, &opts).context("evaluation failed")?;
    if args.json {
        let mut value = report.to_json();
        value["source"] = source;
        println!("{value}");
    } else {
        if let Some(secs) = source.get("seconds").and_then(|s| s.as_f64()) {
            println!("generated {} samples with the runtime in {secs:.1} s", report.count);
        }
        print!("{}", report.table());
    }
    Ok(())
}

/// `--class NAME|INDEX|all`: generate `--count` samples per class and score each class.
fn run_conditional(args: &EvalArgs, onnx: &Path, class: &str, threads: usize) -> anyhow::Result<()> {
    let (_, meta) = model_meta(onnx)?;
    let names = &meta.class_names;
    let classes: Vec<usize> = if class == "all" {
        if names.is_empty() {
            anyhow::bail!("--class all: {} is not class-conditional", onnx.display());
        }
        (0..names.len()).collect()
    } else {
        vec![meta.class_index(class).with_context(|| format!("--class {class}"))?]
    };
    // The model's class k must be the data's class k, or the scores compare different things.
    let data_classes = Dataset::open(&args.data, meta.image_size)?.class_names();
    if &data_classes != names {
        anyhow::bail!(
            "--class: the model's classes [{}] are not the classes of --data {} [{}]",
            names.join(", "),
            args.data,
            data_classes.join(", ")
        );
    }
    let mut per_class = Vec::with_capacity(classes.len());
    let mut sources = Vec::with_capacity(classes.len());
    let mut pooled = Vec::new();
    for &c in &classes {
        let (set, info) = generate_samples(args, onnx, threads, Some(c))?;
        pooled.extend_from_slice(&set.data);
        per_class.push((c, names[c].clone(), set));
        sources.push(info);
    }
    if let (Some(path), Some((_, _, first))) = (&args.save_samples, per_class.first()) {
        // Class by class: sample i of class k is image k * count + i.
        npy::write_f32(path, &pooled, &[pooled.len() / first.per_image(), first.channels, first.size, first.size])?;
    }
    let opts = EvalOptions { data: args.data.clone(), count: args.count as usize, seed: args.seed, threads };
    let guidance = guidance_for(args, &meta, classes.first().copied()).unwrap_or(1.0);
    let report = evaluate_classes(&per_class, guidance, &opts).context("evaluation failed")?;
    if args.json {
        let mut value = report.to_json();
        value["source"] = json!(sources);
        println!("{value}");
    } else {
        let seconds: f64 = sources.iter().filter_map(|s| s["seconds"].as_f64()).sum();
        println!(
            "generated {} samples per class for {} class(es) with the runtime in {seconds:.1} s",
            args.count,
            classes.len()
        );
        print!("{}", report.table());
    }
    Ok(())
}
