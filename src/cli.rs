//! Command-line interface of `sampler` (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use edgediff_cli::{parse, ClassArgs, SchedulerArgs};

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
    /// Write a diffusers / PyTorch export as one self-describing edgediff file
    Import(ImportArgs),
}

/// Where the model comes from and how its metadata may be overridden.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// ONNX model file, or a folder: diffusers/optimum layout (unet/model.onnx,
    /// unet/config.json, scheduler/scheduler_config.json) or flat (model.onnx,
    /// scheduler_config.json, config.json) [default: the model embedded in this binary]
    #[arg(long, value_name = "FILE|DIR")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub describe: DescribeArgs,
}

/// What describes a model besides its own metadata, lowest precedence first: configuration
/// files (a folder's, or these flags'), then `--meta`.
#[derive(Debug, Args, Clone, Default)]
pub struct DescribeArgs {
    /// diffusers scheduler_config.json: schedule, prediction type, clipping, default spacing
    /// (in place of the model folder's)
    #[arg(long, value_name = "FILE")]
    pub scheduler_config: Option<PathBuf>,
    /// The U-Net's config.json: image size, channels, classes (in place of the model folder's)
    #[arg(long, value_name = "FILE")]
    pub unet_config: Option<PathBuf>,
    /// The graph output that is the prediction, for an export with several
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
    /// Override or supply a metadata value, e.g. --meta prediction_type=epsilon (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub meta: Vec<(String, String)>,
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
    #[command(flatten)]
    pub class: ClassArgs,
    /// With --batch: write one PNG per image (OUT-0.png, OUT-1.png, ...) instead of a grid
    #[arg(long)]
    pub separate: bool,
    /// Network threads (output is identical for every value). While an evaluation runs the
    /// other threads spin, waiting for work, rather than sleep; a network with under 2^25 fp32
    /// convolution multiply-adds per evaluation (such as the default int8 model) runs on one
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
    /// Enlarge the PNG N times, nearest neighbour (the .npy outputs stay at model size)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub upscale: u32,
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
    /// Also load and plan the network: how the export was brought to the contract and which
    /// of the runtime's own ops took which nodes
    #[arg(long, short)]
    pub verbose: bool,
    /// Also predict the memory a network evaluation holds at least (weights and the most
    /// activations alive at once, from the graph's shapes) and show the limit it must fit
    #[arg(long)]
    pub memory: bool,
    /// The network batch the memory prediction is for (twice the images under guidance)
    #[arg(long, default_value_t = 1, requires = "memory", value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub batch: u32,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export: an ONNX file, or a folder in the layouts `--model` takes
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// The edgediff file to write
    #[arg(value_name = "OUT.onnx")]
    pub out: PathBuf,
    #[command(flatten)]
    pub describe: DescribeArgs,
}

fn parse_budget(s: &str) -> Result<u64, String> {
    edgediff_runtime::memory::parse_size(s)
}
