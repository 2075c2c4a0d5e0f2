//! `train fit`: flags -> `FitOverrides`, device selection, Ctrl-C handling, summary lines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use edgediff_train::device::{self, BackendJob, DeviceChoice};
use edgediff_train::fit::{self, FitError, FitOptions, FitOverrides, FitSummary};

#[derive(Args, Debug)]
pub struct FitArgs {
    /// `sprites` (procedural shapes) or a folder of PNG/JPEG images (sub-folders = classes).
    #[arg(long, value_name = "sprites|DIR")]
    data: Option<String>,
    /// Run directory: checkpoints, loss.csv, loss.png.
    #[arg(long, value_name = "RUN_DIR")]
    out: PathBuf,
    /// Total optimiser steps [default: 20000]. With --resume, may raise the target.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Images per step [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch: Option<u64>,
    /// Peak learning rate [default: 2e-4].
    #[arg(long, allow_negative_numbers = true, value_parser = positive)]
    lr: Option<f64>,
    /// Linear warm-up steps [default: 500].
    #[arg(long)]
    warmup: Option<u64>,
    /// Global gradient-norm clip, 0 = off [default: 1.0].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative)]
    grad_clip: Option<f64>,
    /// EMA decay of the exported weights, in [0, 1) [default: 0.999].
    #[arg(long, allow_negative_numbers = true, value_parser = unit_interval)]
    ema: Option<f64>,
    /// Steps between checkpoints [default: 200].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: Option<u64>,
    /// Seed of everything random (init, data, timesteps, noise, dropout) [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// What the network predicts [default: epsilon].
    #[arg(long, value_parser = ["epsilon", "v_prediction", "sample"])]
    prediction: Option<String>,
    /// Beta schedule [default: linear].
    #[arg(long, value_parser = ["linear", "scaled_linear", "squaredcos_cap_v2"])]
    schedule: Option<String>,
    /// Training timesteps T [default: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    timesteps: Option<u64>,
    /// Image side in pixels [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u64).range(4..=1024))]
    image_size: Option<u64>,
    /// Channels at the first level [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    base_channels: Option<u64>,
    /// Channel multiplier per level, comma separated [default: 1,2,2].
    #[arg(long, value_name = "LIST", value_parser = usize_list)]
    channel_mults: Option<UsizeList>,
    /// Residual blocks per level [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
    blocks_per_level: Option<u64>,
    /// Resolutions with self-attention, comma separated, or `none` [default: 8].
    #[arg(long, value_name = "LIST", value_parser = usize_list)]
    attention: Option<UsizeList>,
    /// Dropout probability in the residual blocks [default: 0.1].
    #[arg(long, allow_negative_numbers = true, value_parser = unit_interval)]
    dropout: Option<f64>,
    /// Class-conditional training on the dataset's classes (sprites: the 7 shapes; a folder:
    /// its sub-folders), for `sampler --class` and classifier-free guidance.
    #[arg(long)]
    conditional: bool,
    /// With --conditional: probability that a label is replaced by the null class, so the
    /// model also learns to sample unconditionally (needed for guidance) [default: 0.1].
    #[arg(long, allow_negative_numbers = true, value_parser = probability, requires = "conditional")]
    label_dropout: Option<f64>,
    /// Learning rate after the warm-up: constant, or cosine (decays to 0 at --steps; for a
    /// fine-tune) [default: constant].
    #[arg(long, value_parser = ["constant", "cosine"])]
    lr_decay: Option<String>,
    /// Start a new run from the weights of this fp32 ONNX export (the flags must describe its
    /// architecture); Adam starts afresh, the EMA starts at the loaded weights.
    #[arg(long, value_name = "MODEL.onnx", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Backend: auto (CUDA if built and present, else CPU), cpu, cuda.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Continue the run in --out from its latest checkpoint, with its own settings.
    #[arg(long)]
    resume: bool,
}

/// A parsed comma list (newtype so clap does not treat it as a repeated flag).
#[derive(Debug, Clone)]
pub struct UsizeList(Vec<usize>);

fn usize_list(s: &str) -> Result<UsizeList, String> {
    if s.trim().eq_ignore_ascii_case("none") || s.trim().is_empty() {
        return Ok(UsizeList(Vec::new()));
    }
    s.split(',')
        .map(|p| p.trim().parse::<usize>().map_err(|_| format!("{p:?} is not a non-negative integer")))
        .collect::<Result<Vec<_>, _>>()
        .map(UsizeList)
}

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not finite"))
    }
}

fn positive(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v > 0.0 { Ok(v) } else { Err(format!("{s} must be > 0")) })
}

fn non_negative(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v >= 0.0 { Ok(v) } else { Err(format!("{s} must be >= 0")) })
}

fn probability(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{s} must be in [0, 1]")) })
}

fn unit_interval(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("{s} must be in [0, 1)")) })
}

impl FitArgs {
    fn overrides(&self) -> FitOverrides {
        FitOverrides {
            data: self.data.clone(),
            steps: self.steps,
            batch: self.batch.map(|v| v as usize),
            lr: self.lr,
            warmup: self.warmup,
            grad_clip: self.grad_clip,
            ema: self.ema,
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
            prediction: self.prediction.clone(),
            schedule: self.schedule.clone(),
            timesteps: self.timesteps.map(|v| v as usize),
            image_size: self.image_size.map(|v| v as usize),
            base_channels: self.base_channels.map(|v| v as usize),
            channel_mults: self.channel_mults.as_ref().map(|l| l.0.clone()),
            blocks_per_level: self.blocks_per_level.map(|v| v as usize),
            attention: self.attention.as_ref().map(|l| l.0.clone()),
            dropout: self.dropout,
            conditional: self.conditional.then_some(true),
            label_dropout: self.label_dropout,
            lr_decay: self.lr_decay.clone(),
            init_from: self.init_from.clone(),
        }
    }
}

struct FitJob {
    out: PathBuf,
    overrides: FitOverrides,
    resume: bool,
    opts: FitOptions,
}

impl BackendJob for FitJob {
    type Output = Result<FitSummary, FitError>;
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output {
        fit::fit::<B>(&self.out, &self.overrides, self.resume, &device, &self.opts)
    }
}

pub fn run(args: FitArgs) -> anyhow::Result<()> {
    let (selected, notice) = device::select(args.device)?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond Ctrl-C: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: finishing the current step, then saving a checkpoint (Ctrl-C again to abort)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let job = FitJob {
        out: args.out.clone(),
        overrides: args.overrides(),
        resume: args.resume,
        opts: FitOptions { stop, progress: true, verbose: true },
    };
    let s = device::run_job(selected, job)?;
    let speed = match (s.seconds_per_step, s.images_per_second) {
        (Some(sps), Some(ips)) => {
            format!("{sps:.3} s/step, {ips:.1} images/s (first step and checkpoint writes excluded)")
        }
        _ => "too few steps to time".into(),
    };
    let loss = s.last_loss.map(|l| format!("{l:.5}")).unwrap_or_else(|| "-".into());
    if s.interrupted {
        eprintln!(
            "interrupted at step {}: checkpoint saved in {}; continue with `train fit --out {} --resume`",
            s.final_step,
            s.run_dir.display(),
            s.run_dir.display()
        );
    }
    say!(
        "{} parameters | steps {}..{} | last loss {loss} | {speed} | run {}",
        s.params,
        s.start_step,
        s.final_step,
        s.run_dir.display()
    );
    Ok(())
}
