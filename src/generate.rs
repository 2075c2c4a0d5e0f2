//! The default command: sample a batch and write PNG(s) (+ optional .npy vectors).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use edgediff_runtime::files::{read_npy, write_atomic, write_npy};
use edgediff_runtime::memory::{self, format_size};
use edgediff_runtime::pixels::to_pixels;
use edgediff_runtime::{sample, SampleRequest, StepProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::cli::GenerateArgs;
use crate::commands::scheduler_config;
use crate::conditioning::{self, ClassChoice};
use crate::model_source::ModelSource;
use crate::png_out::Picture;
use crate::UsageError;

pub fn run(args: &GenerateArgs) -> Result<()> {
    let out = args.out.clone().ok_or_else(|| UsageError("missing OUT.png".into()))?;
    check_writable(&out)?;
    for extra in [&args.save_raw, &args.save_init_noise, &args.report_json].into_iter().flatten() {
        check_writable(extra)?;
    }
    let started = Instant::now();
    let batch = args.batch as usize;
    let mut source = ModelSource::from_args(&args.model)?;
    let model = source.load()?;
    // Hash now and let the file bytes go: sampling should hold only what the network needs.
    let model_sha256 = source.sha256();
    source.release_bytes();
    let meta = model.meta.clone();
    let cfg = scheduler_config(&args.scheduler, &meta)?;
    let init_noise = match &args.init_noise {
        Some(path) => Some(load_init_noise(path, batch, &meta)?),
        None => None,
    };
    let choice = conditioning::resolve(args.class.as_deref(), args.guidance, &meta, model.info.conditional)?;
    let request = SampleRequest {
        seed: args.seed,
        scheduler: cfg.clone(),
        init_noise,
        class_labels: choice.index.map(|c| vec![c as i64; batch]),
        guidance: choice.scale,
        memory_budget: args.memory_budget,
    };
    // Under classifier-free guidance the network evaluates 2 x batch images per call.
    let net_batch = request.network_batch(batch)?;
    let mut net = model.into_network(net_batch, args.threads as usize).with_context(|| source.label.clone())?;
    let load_time = started.elapsed();
    let load_peak = memory::peak_bytes();
    if let Some(budget) = args.memory_budget {
        if load_peak as u64 > budget {
            anyhow::bail!(edgediff_runtime::RuntimeError::OverBudget {
                budget: format_size(budget),
                needed: format_size(load_peak as u64),
                phase: "loading the model",
            });
        }
    }
    // What the planned network keeps (weights, packed kernels, buffers) once loading's
    // transients (file bytes, decoded protobuf, graph rewrites) are freed; the sampling peak is
    // then measured on its own, so int8 and fp32 models compare by what sampling really needs.
    let held_after_load = memory::current_bytes();
    memory::reset_peak();

    let bar = progress_bar(args.quiet, args.scheduler.steps as u64);
    let result = sample(&mut net, &request, |p: StepProgress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("t={}", p.timestep));
    });
    bar.finish_and_clear();
    let output = result?;

    let shape = [batch, meta.channels, meta.image_size, meta.image_size];
    let per_image = meta.image_len();
    let tiles: Vec<Vec<u8>> = output.x0.chunks(per_image).map(|img| to_pixels(img, &meta)).collect();
    let text = png_text(&model_sha256, &meta.model_name, args, &cfg, &choice);
    if batch > 1 && args.separate {
        for (k, tile) in tiles.into_iter().enumerate() {
            let pic =
                Picture { width: meta.image_size, height: meta.image_size, channels: meta.channels, pixels: tile };
            let mut t = text.clone();
            t.push(("seed".into(), (args.seed.wrapping_add(k as u64)).to_string()));
            pic.save(&numbered(&out, k), &t)?;
        }
    } else {
        let mut t = text.clone();
        t.push(("seed".into(), args.seed.to_string()));
        Picture::grid(&tiles, meta.image_size, meta.channels).save(&out, &t)?;
    }
    if let Some(path) = &args.save_raw {
        write_npy(path, &output.x0, &shape)?;
    }
    if let Some(path) = &args.save_init_noise {
        write_npy(path, &output.x_t, &shape)?;
    }
    if let Some(path) = &args.report_json {
        let report = json!({
            "model": source.label,
            "model_name": meta.model_name,
            "model_sha256": model_sha256.clone(),
            "precision": meta.precision.to_string(),
            "value_range": [meta.value_range.0, meta.value_range.1],
            "shape": shape,
            "seed": args.seed,
            "steps": cfg.num_inference_steps,
            "evaluations": output.evaluations,
            "scheduler": cfg.kind.to_string(),
            "spacing": cfg.spacing.to_string(),
            "eta": cfg.eta,
            "class": choice.name,
            "class_index": choice.index,
            "guidance": choice.effective_scale(),
            "network_batch": net_batch,
            "threads": args.threads,
            "load_seconds": load_time.as_secs_f64(),
            "eval_seconds": output.eval_time.as_secs_f64(),
            "total_seconds": started.elapsed().as_secs_f64(),
            "peak_heap_after_load_bytes": load_peak,
            "peak_heap_bytes": output.peak_heap.max(load_peak),
            "heap_held_after_load_bytes": held_after_load,
            "peak_heap_sampling_bytes": output.peak_heap,
            "peak_rss_bytes": memory::peak_rss_bytes(),
        });
        write_atomic(path, format!("{report:#}\n").as_bytes())?;
    }

    if !args.quiet {
        let total = started.elapsed();
        eprintln!(
            "wrote {} ({} image(s), seed {}, {} {} steps, eta {}{}) in {:.2} s",
            out.display(),
            batch,
            args.seed,
            cfg.kind,
            output.evaluations,
            cfg.eta,
            choice.describe(),
            total.as_secs_f64()
        );
        if args.verbose {
            let per_step = output.eval_time.as_secs_f64() * 1000.0 / output.evaluations.max(1) as f64;
            eprintln!("model:        {} ({}, sha256 {})", source.label, meta.model_name, model_sha256);
            eprintln!(
                "load:         {:.3} s, peak heap while loading {}, held after load {}",
                load_time.as_secs_f64(),
                format_size(load_peak as u64),
                format_size(held_after_load as u64)
            );
            eprintln!(
                "sampling:     {:.1} ms per network evaluation (batch {net_batch}, {} thread(s)), scheduler+noise {:.3} ms in all",
                per_step,
                args.threads,
                output.loop_time.as_secs_f64() * 1000.0
            );
            eprintln!(
                "own ops:      {} int8 convolutions and {} int8 matrix products ({} kernel), {} GroupNorms{}; the rest is tract",
                net.int8_convs,
                net.int8_matmuls,
                edgediff_runtime::EpsModel::int8_kernel(),
                net.group_norms,
                match net.channel_affines {
                    0 => String::new(),
                    n => format!(", {n} GroupNorm affines"),
                }
            );
            eprintln!(
                "peak memory:  heap {} while sampling, {} overall (measured by the counting allocator), RSS {}",
                format_size(output.peak_heap as u64),
                format_size(output.peak_heap.max(load_peak) as u64),
                memory::peak_rss_bytes().map(|b| format_size(b as u64)).unwrap_or_else(|| "n/a".into())
            );
        }
    }
    Ok(())
}

/// Fails early, before any work, when an output cannot be written.
fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        anyhow::bail!("{}: is a directory, expected a file name", path.display());
    }
    let probe = dir.join(format!(".edgediff-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("{}: cannot write to directory {}", path.display(), dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn load_init_noise(path: &Path, batch: usize, meta: &edgediff_core::meta::ModelMeta) -> Result<Vec<f32>> {
    let (data, shape) = read_npy(path).map_err(|e| anyhow::anyhow!("--init-noise {e}"))?;
    let chw = [meta.channels, meta.image_size, meta.image_size];
    let fits = shape == [batch, chw[0], chw[1], chw[2]] || (batch == 1 && shape == chw);
    if !fits {
        return Err(UsageError(format!(
            "--init-noise {}: shape {:?} does not match [{batch}, {}, {}, {}]",
            path.display(),
            shape,
            chw[0],
            chw[1],
            chw[2]
        ))
        .into());
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(UsageError(format!("--init-noise {}: contains NaN or Inf", path.display())).into());
    }
    Ok(data)
}

fn progress_bar(quiet: bool, steps: u64) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} steps {msg} [{elapsed_precise}, eta {eta}]") {
        bar.set_style(style);
    }
    bar
}

fn png_text(
    model_sha256: &str,
    name: &str,
    args: &GenerateArgs,
    cfg: &edgediff_core::SchedulerConfig,
    choice: &ClassChoice,
) -> Vec<(String, String)> {
    let mut text = vec![
        ("Software".into(), format!("edgediff sampler {}", env!("CARGO_PKG_VERSION"))),
        ("model".into(), name.to_string()),
        ("model_sha256".into(), model_sha256.to_string()),
        ("steps".into(), cfg.num_inference_steps.to_string()),
        ("eta".into(), cfg.eta.to_string()),
        ("scheduler".into(), cfg.kind.to_string()),
        ("spacing".into(), cfg.spacing.to_string()),
        ("batch".into(), args.batch.to_string()),
    ];
    // A conditional model's class (or that it sampled unconditionally) and guidance scale.
    if choice.conditional {
        text.push(("class".into(), choice.name.clone().unwrap_or_else(|| "null (unconditional)".into())));
        if let Some(w) = choice.effective_scale() {
            text.push(("guidance".into(), w.to_string()));
        }
    }
    text
}

/// `out.png` -> `out-3.png`.
fn numbered(out: &Path, k: usize) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let ext = out.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    out.with_file_name(format!("{stem}-{k}{ext}"))
}
