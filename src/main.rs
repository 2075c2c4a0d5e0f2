//! `sampler`: generate images with an edgediff model on the CPU.
//!
//! Exit codes: 0 success, 1 runtime error (memory budget, network output, writing files),
//! 2 bad input (flags, and model, configuration or `.npy` files that cannot be used). Every
//! error is one line on stderr, a panic included; outputs are written atomically.

mod cli;
mod commands;
mod generate;
mod model_source;
mod out_paths;
mod png_out;
mod summary;

use std::process::ExitCode;

use edgediff_runtime::CountingAllocator;

/// Counts heap bytes so `--memory-budget` is checked against a measurement.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> ExitCode {
    edgediff_cli::run(|cli: cli::Cli| match cli.command {
        Some(cli::Command::Schedule(args)) => commands::schedule(&args),
        Some(cli::Command::Info(args)) => commands::info(&args),
        Some(cli::Command::Import(args)) => commands::import(&args),
        None => generate::run(&cli.generate),
    })
}
