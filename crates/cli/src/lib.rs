//! What edgediff's binaries share on the command line: the sampling flags (`sampler`,
//! `train sample`, `train eval --model`), the class and guidance flags and how they resolve
//! against a model, the value parsers, and how errors reach the user: one line on stderr; exit
//! code 2 for bad input (flags, and files or models that cannot be used), 1 for everything else;
//! never a panic's message and backtrace ([`run`]). Each flag is defined once, here.

mod class;
pub mod parse;
mod scheduler;

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

pub use class::{resolve_class, ClassArgs, ClassChoice};
pub use scheduler::SchedulerArgs;

/// An error caused by the flags (exit code 2) rather than by the files or the model (exit 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An input the user gave that cannot be used: a model file, a configuration file, a `.npy`
/// vector (exit code 2, like a bad flag). Its message names the file.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Marks `error` as bad input, after `what` (e.g. the file's name).
pub fn bad_input(what: &str, error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(BadInput(format!("{what}: {error}")))
}

/// A binary's `main`: parses the arguments, runs `command`, and reports its result as one line
/// with its exit code ([`report`]). A panic, which would be a bug, is caught and reported the
/// same way, as an internal error, instead of a message and backtrace on several lines
/// (`RUST_BACKTRACE=1` keeps the default report for debugging). A build that aborts on panic
/// (the `release-small` profile) cannot catch one: there the panic hook prints the same line
/// and ends the process with the same code.
pub fn run<T: clap::Parser>(command: impl FnOnce(T) -> anyhow::Result<()>) -> ExitCode {
    let args = parse_args::<T>();
    let quiet = std::env::var_os("RUST_BACKTRACE").is_none_or(|v| v == "0");
    if cfg!(panic = "abort") {
        if quiet {
            std::panic::set_hook(Box::new(|info| {
                eprintln!("{}", internal_error(&panic_message(info.payload())));
                std::process::exit(1);
            }));
        }
        return report(command(args));
    }
    if quiet {
        std::panic::set_hook(Box::new(|_| {}));
    }
    match std::panic::catch_unwind(AssertUnwindSafe(|| command(args))) {
        Ok(result) => report(result),
        Err(payload) => {
            eprintln!("{}", internal_error(&panic_message(payload.as_ref())));
            ExitCode::from(1)
        }
    }
}

/// The line a panic is reported with ([`panic_message`] is already one line).
fn internal_error(message: &str) -> String {
    format!("error: internal error: {message} (this is a bug; please report it)")
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    text.replace('\n', " ")
}

/// Parses the process arguments; on a usage error prints clap's first paragraph as one line and
/// exits with 2 (`--help` and `--version` print and exit 0 as usual).
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            // clap adds usage and a tip on further lines; keep the lines that say what is wrong.
            let text = e.render().to_string();
            let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            eprintln!("{}", first.join(" "));
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    }
}

/// The exit code for a command's result, after printing its error as one line:
/// `error: context: cause`, skipping causes their parent already quotes.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else { return ExitCode::SUCCESS };
    eprintln!("error: {}", one_line(&e));
    let bad = e.chain().any(|c| c.downcast_ref::<UsageError>().is_some() || c.downcast_ref::<BadInput>().is_some());
    ExitCode::from(if bad { 2 } else { 1 })
}

/// `e`'s context chain joined by ": " on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !line.contains(&text) {
            line = if line.is_empty() { text } else { format!("{line}: {text}") };
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_the_chain_without_repeats() {
        let e = anyhow::anyhow!("inner\ntwo lines").context("outer");
        assert_eq!(one_line(&e), "outer: inner two lines");
        let e = anyhow::anyhow!("model.onnx: bad").context("model.onnx: bad");
        assert_eq!(one_line(&e), "model.onnx: bad");
    }

    #[test]
    fn usage_errors_exit_with_2_anywhere_in_the_chain() {
        assert_eq!(report(Ok(())), ExitCode::SUCCESS);
        assert_eq!(report(Err(anyhow::Error::new(UsageError("--steps".into())).context("x"))), ExitCode::from(2));
        assert_eq!(report(Err(anyhow::anyhow!("file"))), ExitCode::from(1));
    }
}
