//! Command-line interface of `sampler` (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use edgediff_core::{SchedulerKind, Spacing};

#[derive(Debug, Parser)]
#[command(
    name = "sampler",
    version,
    about = "Generate images with an edgediff diffusion model on the CPU, deterministically",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub generate: GenerateArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the sampling schedule (timesteps, alpha_bar, alpha_bar_prev, sigma)
    Schedule(ScheduleArgs),
    /// Print a model's metadata, parameter count and input/output shapes
    Info(InfoArgs),
}

/// Where the model comes from and how its metadata may be overridden.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// ONNX model file (default: the model embedded in this binary)
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Override or supply a metadata value, e.g. --meta prediction_type=epsilon (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
}

/// The scheduler settings shared by generation and `schedule`.
#[derive(Debug, Args, Clone)]
pub struct SchedulerArgs {
    /// Number of denoising steps
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// DDIM eta: 0 = deterministic DDIM, 1 = DDPM-like noise
    #[arg(long, default_value_t = 0.0, value_parser = parse_eta)]
    pub eta: f32,
    /// Sampler: ddim, ddpm or dpmpp2m (DPM-Solver++ 2M, no noise)
    #[arg(long, default_value = "ddim", value_parser = parse_from_str::<SchedulerKind>)]
    pub scheduler: SchedulerKind,
    /// Timestep spacing: leading, trailing or linspace (as diffusers)
    #[arg(long, default_value = "leading", value_parser = parse_from_str::<Spacing>)]
    pub spacing: Spacing,
    /// Offset added to leading timesteps (diffusers' steps_offset)
    #[arg(long, default_value_t = 0)]
    pub steps_offset: usize,
    /// Final alpha_bar_prev = 1 (diffusers' set_alpha_to_one); false uses alpha_bar[0]
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub set_alpha_to_one: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output PNG (with --batch N: a grid, or OUT-0.png... with --separate)
    #[arg(value_name = "OUT.png", required = true)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    /// Random seed; image k of a batch uses seed+k
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images to generate in one batch
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Class to generate, for a class-conditional model: a name (see `sampler info`) or an
    /// index. Without it a conditional model samples unconditionally (the null class)
    #[arg(long, value_name = "NAME|INDEX")]
    pub class: Option<String>,
    /// Classifier-free guidance scale W (needs --class): uncond + W (cond - uncond); 1 = the
    /// class alone, 0 = unconditional; other values cost two evaluations per image
    /// [default: the model's recommended scale (`sampler info`), else 1]
    #[arg(long, value_name = "W", allow_negative_numbers = true, value_parser = parse_guidance)]
    pub guidance: Option<f32>,
    /// With --batch: write one PNG per image (OUT-0.png, OUT-1.png, ...) instead of a grid
    #[arg(long)]
    pub separate: bool,
    /// Network threads (output is identical for every value)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Fail (before sampling) if the measured peak heap exceeds this, e.g. 64MiB
    #[arg(long, value_name = "SIZE", value_parser = parse_budget)]
    pub memory_budget: Option<u64>,
    /// Start from this x_T (.npy, float32 [N,C,H,W] or [C,H,W]) instead of seeded noise
    #[arg(long, value_name = "FILE")]
    pub init_noise: Option<PathBuf>,
    /// Also write the x_T used (.npy, float32 [N,C,H,W])
    #[arg(long, value_name = "FILE")]
    pub save_init_noise: Option<PathBuf>,
    /// Also write the final sample before quantisation to bytes (.npy, float32 [N,C,H,W])
    #[arg(long, value_name = "FILE")]
    pub save_raw: Option<PathBuf>,
    /// Also write a machine-readable run report (JSON: settings, timings, peak heap)
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// No progress bar and no summary
    #[arg(long, short)]
    pub quiet: bool,
    /// Print timings and peak memory (heap and RSS)
    #[arg(long, short, conflicts_with = "quiet")]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    if k.trim().is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn parse_eta(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is outside [0, 1]"));
    }
    Ok(v)
}

fn parse_guidance(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s} must be a finite number >= 0"));
    }
    Ok(v)
}

fn parse_budget(s: &str) -> Result<u64, String> {
    edgediff_runtime::memory::parse_size(s)
}

fn parse_from_str<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}
