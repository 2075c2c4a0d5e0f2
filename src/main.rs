//! `sampler`: generate images with an edgediff model on the CPU.
//!
//! Exit codes: 0 success, 1 runtime error (model, files, memory budget, network output),
//! 2 usage error (flags). Every error is one line on stderr; outputs are written atomically.

mod cli;
mod commands;
mod conditioning;
mod generate;
mod model_source;
mod png_out;

use clap::Parser;
use edgediff_runtime::CountingAllocator;

/// Counts heap bytes so `--memory-budget` is checked against a measurement.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// An error caused by the flags (exit code 2) rather than by the files or the model.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // clap adds usage and a tip on further lines; keep the one line that says what is wrong.
            let text = e.render().to_string();
            let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            eprintln!("{}", first.join(" "));
            std::process::exit(2);
        }
        Err(e) => e.exit(), // --help / --version
    };
    let result = match cli.command {
        Some(cli::Command::Schedule(args)) => commands::schedule(&args),
        Some(cli::Command::Info(args)) => commands::info(&args),
        None => generate::run(&cli.generate),
    };
    if let Err(e) = result {
        // One line: the context chain joined, skipping causes their parent already quotes.
        let mut line = String::new();
        for cause in e.chain() {
            let text = cause.to_string().replace('\n', " ");
            if !line.contains(&text) {
                line = if line.is_empty() { text } else { format!("{line}: {text}") };
            }
        }
        eprintln!("error: {line}");
        let usage = e.chain().any(|c| c.downcast_ref::<UsageError>().is_some());
        std::process::exit(if usage { 2 } else { 1 });
    }
}
