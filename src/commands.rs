//! `sampler schedule` and `sampler info`: inspect a model without sampling.

use anyhow::Result;
use edgediff_core::{schedule_table, SamplerSettings};
use serde_json::json;

use crate::cli::{InfoArgs, ScheduleArgs};
use crate::model_source::ModelSource;

pub fn schedule(args: &ScheduleArgs) -> Result<()> {
    let source = ModelSource::from_args(&args.model)?;
    let (meta, _) = source.inspect()?;
    let cfg = args.scheduler.for_model(&meta.schedule, &SamplerSettings::default())?;
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
    let source = ModelSource::from_args(&args.model)?;
    let (meta, info) = source.inspect()?;
    let sha = source.sha256();
    if args.json {
        let out = json!({
            "model": source.label,
            "sha256": sha,
            "bytes": source.bytes.len(),
            "parameters": info.param_count,
            "weight_bytes": info.weight_bytes,
            "opset": info.opset,
            "inputs": info.inputs,
            "outputs": info.outputs,
            "conditional": info.conditional,
            "classes": meta.class_names,
            "guidance_scale": meta.guidance_scale,
            "metadata": info.props,
        });
        println!("{out}");
        return Ok(());
    }
    println!("model:       {}", source.label);
    println!("name:        {}", meta.model_name);
    println!("sha256:      {sha}");
    println!("file size:   {} bytes", source.bytes.len());
    println!("parameters:  {} ({} bytes of weights, {})", info.param_count, info.weight_bytes, meta.precision);
    println!("opset:       {}", info.opset);
    println!("inputs:      {}", info.inputs.join("; "));
    println!("outputs:     {}", info.outputs.join("; "));
    println!(
        "image:       {}x{}, {} channel(s), values {}..{}",
        meta.image_size, meta.image_size, meta.channels, meta.value_range.0, meta.value_range.1
    );
    let s = &meta.schedule;
    println!(
        "schedule:    {} over T={} (beta {}..{}), predicts {}",
        s.beta_schedule, s.num_train_timesteps, s.beta_start, s.beta_end, s.prediction_type
    );
    if meta.class_names.is_empty() {
        println!("classes:     none (unconditional)");
    } else {
        println!("classes:     {}", meta.class_names.join(", "));
        match meta.guidance_scale {
            Some(w) => println!("guidance:    {w} by default with --class (--guidance overrides)"),
            None => println!("guidance:    1 by default with --class (the model names no scale)"),
        }
    }
    println!("metadata:");
    for (k, v) in &info.props {
        println!("  {k} = {v}");
    }
    Ok(())
}
