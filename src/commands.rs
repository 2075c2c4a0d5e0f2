//! `sampler schedule`, `sampler info` and `sampler import`: inspect or convert a model without
//! sampling.

use anyhow::Result;
use edgediff_core::meta::ModelMeta;
use edgediff_core::schedule_table;
use edgediff_runtime::memory::format_size;
use edgediff_runtime::{MemoryLimit, MemoryPrediction, ModelInfo};
use serde_json::json;

use edgediff_cli::UsageError;

use crate::cli::{ImportArgs, InfoArgs, ScheduleArgs};
use crate::model_source::ModelSource;

pub fn schedule(args: &ScheduleArgs) -> Result<()> {
    let source = ModelSource::from_args(&args.model, None)?;
    let (meta, _) = source.inspect()?;
    let cfg = args.scheduler.for_model(&meta.schedule, &meta.default_settings())?;
    let table = schedule_table(&meta.schedule, &cfg)?;
    if args.json {
        let out = json!({
            "scheduler": cfg.kind.to_string(),
            "spacing": cfg.spacing.to_string(),
            "eta": cfg.eta,
            "num_train_timesteps": meta.schedule.num_train_timesteps,
            "beta_schedule": meta.schedule.beta_schedule.to_string(),
            "timesteps": table.timesteps,
            "alpha_bar": table.alpha_bar,
            "alpha_bar_prev": table.alpha_bar_prev,
            "sigma": table.sigma,
        });
        println!("{out}");
    } else {
        println!("{:>5} {:>9} {:>12} {:>14} {:>12}", "step", "timestep", "alpha_bar", "alpha_bar_prev", "sigma");
        for i in 0..table.timesteps.len() {
            println!(
                "{:>5} {:>9} {:>12.8} {:>14.8} {:>12.8}",
                i, table.timesteps[i], table.alpha_bar[i], table.alpha_bar_prev[i], table.sigma[i]
            );
        }
    }
    Ok(())
}

pub fn info(args: &InfoArgs) -> Result<()> {
    let source = ModelSource::from_args(&args.model, None)?;
    let (meta, info) = source.inspect()?;
    let sha = source.sha256()?;
    let plan = if args.verbose { Some(planned(&source)?) } else { None };
    let memory = if args.memory { Some(predicted(&source, args.batch as usize)?) } else { None };
    if args.json {
        let mut out = json!({
            "model": source.label,
            "sha256": sha,
            "bytes": source.file_bytes,
            "parameters": info.param_count,
            "weight_bytes": info.weight_bytes,
            "opset": info.opset,
            "inputs": info.inputs,
            "outputs": info.outputs,
            "conditional": info.conditional,
            "classes": meta.class_names,
            "null_class": meta.null_label(),
            "guidance_scale": meta.guidance_scale,
            "metadata": info.props,
            "effective_metadata": meta.to_props(),
        });
        if let Some(plan) = &plan {
            out["fast_paths"] = plan.to_json(&info);
        }
        if let Some((prediction, limit)) = &memory {
            out["memory"] = json!({
                "network_batch": args.batch,
                "weights_bytes": prediction.weights,
                "activations_bytes": prediction.activations,
                "predicted_bytes": prediction.total(),
                "limit_bytes": limit.bytes,
                "limit": if limit.from_budget { "memory budget" } else { "machine memory" },
            });
        }
        println!("{out}");
        return Ok(());
    }
    print_summary(&source, &sha, &meta, &info);
    if let Some(plan) = &plan {
        plan.print(&info);
    }
    if let Some((prediction, limit)) = &memory {
        println!(
            "memory:      at least {} at a network batch of {} (weights {}, activations {}); limit {} (this machine's memory)",
            format_size(prediction.total()),
            args.batch,
            format_size(prediction.weights),
            format_size(prediction.activations),
            format_size(limit.bytes)
        );
    }
    Ok(())
}

/// The memory a network of `batch` images holds at least, and the limit.
fn predicted(source: &ModelSource, batch: usize) -> Result<(MemoryPrediction, MemoryLimit)> {
    source.load()?.predict_memory(batch).map_err(|e| source.error(e))
}

fn print_summary(source: &ModelSource, sha: &str, meta: &ModelMeta, info: &ModelInfo) {
    println!("model:       {}", source.label);
    println!("name:        {}", meta.model_name);
    println!("sha256:      {sha}");
    println!("file size:   {} bytes", source.file_bytes);
    println!("parameters:  {} ({} bytes of weights, {})", info.param_count, info.weight_bytes, meta.precision);
    println!("opset:       {}", info.opset);
    println!("inputs:      {}", info.inputs.join("; "));
    println!("outputs:     {}", info.outputs.join("; "));
    println!(
        "image:       {}x{}, {} channel(s), values {}..{}",
        meta.image_size, meta.image_size, meta.channels, meta.value_range.0, meta.value_range.1
    );
    let s = &meta.schedule;
    let betas = match &s.trained_betas {
        Some(b) => format!("{} trained betas", b.len()),
        None => format!("beta {}..{}", s.beta_start, s.beta_end),
    };
    let zsnr = if s.rescale_betas_zero_snr { ", rescaled to zero terminal SNR" } else { "" };
    println!(
        "schedule:    {} over T={} ({betas}{zsnr}), predicts {}",
        s.beta_schedule, s.num_train_timesteps, s.prediction_type
    );
    let d = meta.default_settings();
    println!("sampling:    {} spacing, steps offset {} by default", d.spacing, d.steps_offset);
    if meta.class_names.is_empty() {
        println!("classes:     none (unconditional)");
    } else {
        println!("classes:     {}", meta.class_names.join(", "));
        match (meta.has_null_class, meta.guidance_scale) {
            (false, _) => println!("guidance:    none: no null class, so --class is required and sampling is unguided"),
            (true, Some(w)) => println!("guidance:    {w} by default with --class (--guidance overrides)"),
            (true, None) => println!("guidance:    1 by default with --class (the model names no scale)"),
        }
    }
    println!("metadata:");
    for (k, v) in &info.props {
        println!("  {k} = {v}");
    }
    let effective = meta.to_props();
    let supplied: Vec<_> = effective.iter().filter(|(k, v)| info.props.get(*k) != Some(v)).collect();
    if !supplied.is_empty() {
        println!("metadata from configuration files, --meta and the graph:");
        for (k, v) in supplied {
            println!("  {k} = {v}");
        }
    }
}

/// What loading and planning the network (batch 1) did: the fusions that fired and the ops in
/// the plan.
struct Planned {
    fast_paths: edgediff_runtime::FastPaths,
    int8_convs: usize,
    int8_matmuls: usize,
    float_matmuls: usize,
    float_convs: usize,
    group_norms: usize,
    channel_affines: usize,
}

fn planned(source: &ModelSource) -> Result<Planned> {
    let model = source.load()?;
    let fast_paths = model.fast_paths;
    let net = model.into_network(1, 1).map_err(|e| source.error(e))?;
    Ok(Planned {
        fast_paths,
        int8_convs: net.int8_convs,
        int8_matmuls: net.int8_matmuls,
        float_matmuls: net.float_matmuls,
        float_convs: net.float_convs,
        group_norms: net.group_norms,
        channel_affines: net.channel_affines,
    })
}

/// The fp32 kernel the plan's products run (forced by `EDGEDIFF_KERNELS` or detected).
fn fp32_kernel_name() -> String {
    edgediff_runtime::Denoiser::fp32_kernel().map_or_else(|e| e.to_string(), |k| k.to_string())
}

fn int8_kernel_name() -> String {
    edgediff_runtime::Denoiser::int8_kernel().map_or_else(|e| e.to_string(), |k| k.to_string())
}

impl Planned {
    fn print(&self, info: &ModelInfo) {
        let i = &info.interface;
        println!("contract:");
        for (from, to) in &i.renamed {
            println!("  input `{from}` is `{to}`");
        }
        if let Some(t) = &i.timestep {
            println!("  timestep converted at load: {t}");
        }
        if let Some(l) = &i.class_labels {
            println!("  class labels converted at load: {l}");
        }
        if !i.dropped_outputs.is_empty() {
            println!("  outputs not used: {}", i.dropped_outputs.join(", "));
        }
        println!("  {} Constant nodes read as initializers", info.constants_moved);
        let f = &self.fast_paths;
        println!("fast paths (nodes fused at load, then ops in the plan):");
        println!(
            "  int8 conv/matmul chains: {} fused; {} Int8Conv, {} Int8MatMul in the plan",
            f.int8_chains, self.int8_convs, self.int8_matmuls
        );
        println!(
            "  GroupNorm: {} of our exporter's form, {} of torch's form; {} GroupNorm in the plan",
            f.group_norms, f.torch_group_norms, self.group_norms
        );
        println!("  channel affines: {} fused; {} ChannelAffine in the plan", f.channel_affines, self.channel_affines);
        println!("  fp32 products: {} fused; {} FloatMatMul in the plan", f.float_matmuls, self.float_matmuls);
        println!("  fp32 convolutions: {} taken; {} FloatConv in the plan", f.float_convs, self.float_convs);
        println!("  int8 kernel: {}", int8_kernel_name());
        println!("  fp32 kernel: {}", fp32_kernel_name());
    }

    fn to_json(&self, info: &ModelInfo) -> serde_json::Value {
        let (f, i) = (&self.fast_paths, &info.interface);
        json!({
            "renamed_inputs": i.renamed,
            "timestep_conversion": i.timestep,
            "class_labels_conversion": i.class_labels,
            "dropped_outputs": i.dropped_outputs,
            "constants_moved": info.constants_moved,
            "int8_chains_fused": f.int8_chains,
            "group_norms_fused": f.group_norms,
            "torch_group_norms_fused": f.torch_group_norms,
            "channel_affines_fused": f.channel_affines,
            "int8_convs": self.int8_convs,
            "int8_matmuls": self.int8_matmuls,
            "group_norms": self.group_norms,
            "channel_affines": self.channel_affines,
            "float_matmuls_fused": f.float_matmuls,
            "float_matmuls": self.float_matmuls,
            "float_convs_taken": f.float_convs,
            "float_convs": self.float_convs,
            "int8_kernel": int8_kernel_name(),
            "fp32_kernel": fp32_kernel_name(),
        })
    }
}

/// `sampler import SRC OUT.onnx`: one self-describing edgediff file from an export.
pub fn import(args: &ImportArgs) -> Result<()> {
    let source = ModelSource::from_path(&args.source, &args.describe)
        .map_err(|e| edgediff_cli::bad_input(&format!("import {}", args.source.display()), format!("{e:#}")))?;
    if source.reads(&args.out) {
        return Err(UsageError(format!(
            "{}: the output would replace a file the model is read from",
            args.out.display()
        ))
        .into());
    }
    let bytes = source.import()?;
    let (meta, _) = edgediff_runtime::Denoiser::inspect(&bytes, &Default::default())?;
    edgediff_io::write_atomic(&args.out, &bytes)?;
    let s = &meta.schedule;
    eprintln!(
        "wrote {} ({} bytes): `{}`, {}x{}x{}, {} over T={}, predicts {}{}",
        args.out.display(),
        bytes.len(),
        meta.model_name,
        meta.channels,
        meta.image_size,
        meta.image_size,
        s.beta_schedule,
        s.num_train_timesteps,
        s.prediction_type,
        if meta.class_names.is_empty() { String::new() } else { format!(", {} classes", meta.class_names.len()) }
    );
    Ok(())
}
