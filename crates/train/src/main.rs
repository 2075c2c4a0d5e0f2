//! `train`: fits edgediff diffusion models, exports them to ONNX, previews datasets.
//!
//! One module per subcommand under `src/cmd/` (its clap `Args` struct and a `run` fn); adding a
//! subcommand = one file, one `mod` line, one enum variant, one match arm.
//! Exit codes: 0 success (also after Ctrl-C, once the checkpoint is saved), 1 runtime error,
//! 2 bad input (flags, unusable model or data files); every error is one line on stderr, a
//! panic included.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that ignores write errors: `train dataset ... | head` closes the pipe early, and
/// that must not turn into a panic (Rust ignores SIGPIPE, so the write fails with EPIPE instead).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod cmd {
    pub mod dataset;
    pub mod eval;
    pub mod export;
    pub mod fit;
    pub mod quantize;
    pub mod sample;
}

#[derive(Parser)]
#[command(name = "train", version, about = "Train, export and inspect edgediff diffusion models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a U-Net (new run, or --resume an existing one).
    Fit(cmd::fit::FitArgs),
    /// Write a run's EMA weights as an ONNX model for the sampler.
    Export(cmd::export::ExportArgs),
    /// Preview a dataset as a PNG grid; check the sprite shape checker.
    Dataset(cmd::dataset::DatasetArgs),
    /// Reference samples from a run's EMA weights on burn (x_T, x0, PNG, reference.json).
    Sample(cmd::sample::SampleArgs),
    /// Frechet distance of generated samples to held-out real data, with floor and ceilings.
    Eval(cmd::eval::EvalArgs),
    /// int8 model from an fp32 one: per-channel int8 weights, activations calibrated on DDIM runs.
    Quantize(cmd::quantize::QuantizeArgs),
}

fn main() -> ExitCode {
    edgediff_cli::run(|cli: Cli| match cli.command {
        Command::Fit(args) => cmd::fit::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Dataset(args) => cmd::dataset::run(args),
        Command::Sample(args) => cmd::sample::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Quantize(args) => cmd::quantize::run(args),
    })
}
