//! `edgediff-fuzz`: run the fuzz targets (`run`), replay an input (`replay`), rebuild the seed
//! corpus (`gen-corpus`). See this crate's README.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use edgediff_fuzz::engine::{install_quiet_hook, run_case, Outcome};
use edgediff_fuzz::supervisor::{self, RunConfig, Summary};
use edgediff_fuzz::worker::{self, WorkerConfig};
use edgediff_fuzz::{corpus, find_target, gen_corpus, Context, Target, TARGETS};

#[derive(Parser)]
#[command(name = "edgediff-fuzz", about = "Fuzz edgediff's input readers with a seeded mutation engine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fuzz each target for a time or a number of cases; exits 1 on any finding
    Run(RunArgs),
    /// Run a target on saved inputs (findings, regressions) and say how far each got
    Replay {
        #[arg(long)]
        target: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the seed corpus (corpus/<target>/) from its generators
    GenCorpus {
        /// Where to write it [default: this crate's corpus/]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the targets
    List,
    /// One target's cases in this process (started by `run`)
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Targets to run, comma-separated [default: all]
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Seconds per target [default: 10 unless --runs is given]
    #[arg(long, conflicts_with = "runs")]
    seconds: Option<f64>,
    /// Cases per target
    #[arg(long)]
    runs: Option<u64>,
    /// Seed of the case generator: the same seed gives the same cases
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where findings are saved [default: target/fuzz-findings in the workspace]
    #[arg(long)]
    findings: Option<PathBuf>,
    /// Address-space limit of each worker process, in MiB
    #[arg(long, default_value_t = 4096)]
    memory_limit_mib: u64,
    /// A case running longer than this many seconds is a finding
    #[arg(long, default_value_t = 20.0)]
    case_timeout: f64,
}

#[derive(Args)]
struct WorkerArgs {
    #[arg(long)]
    target: String,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    seconds: Option<f64>,
    #[arg(long)]
    runs: Option<u64>,
    #[arg(long)]
    findings: PathBuf,
    #[arg(long)]
    case_timeout: f64,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Run(args) => run(args),
        Cmd::Replay { target, files } => replay(find_target(&target).map_err(anyhow::Error::from), &files),
        Cmd::GenCorpus { out } => {
            let out = out.unwrap_or_else(corpus::corpus_dir);
            gen_corpus::write_corpus(&out)
                .map(|n| println!("wrote {n} seed inputs under {}", out.display()))
                .map_err(Into::into)
        }
        Cmd::List => {
            TARGETS.iter().for_each(|t| println!("{:<18} {}", t.name, t.about));
            Ok(())
        }
        Cmd::Worker(args) => work(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgediff-fuzz: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let targets: Vec<&'static Target> = if args.target.is_empty() {
        TARGETS.iter().collect()
    } else {
        args.target.iter().map(|t| find_target(t)).collect::<Result<_, _>>()?
    };
    let cfg = RunConfig {
        targets,
        seconds: args.seconds.or(args.runs.is_none().then_some(10.0)),
        runs: args.runs,
        seed: args.seed,
        findings: args
            .findings
            .unwrap_or_else(|| edgediff_fuzz::context::workspace_root().join("target/fuzz-findings")),
        memory_limit_mib: args.memory_limit_mib,
        case_timeout: Duration::from_secs_f64(args.case_timeout),
    };
    let summary = supervisor::run(&cfg)?;
    print_summary(&summary, args.seed);
    if summary.failed() {
        bail!(
            "findings saved under {}: add each as a regression test (see crates/fuzz/README.md)",
            cfg.findings.display()
        );
    }
    Ok(())
}

fn print_summary(summary: &Summary, seed: u64) {
    println!("edgediff-fuzz run, seed {seed}");
    println!("{:<18} {:>11} {:>8}  stages reached", "target", "executions", "seconds");
    for r in &summary.reports {
        let stages: Vec<String> = r.stages.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!("{:<18} {:>11} {:>8.1}  {}", r.target, r.executions, r.seconds, stages.join(", "));
    }
    let (caught, findings): (Vec<_>, Vec<_>) = summary.findings.iter().partition(|f| !f.kind.is_fatal());
    println!("findings: {}", findings.len());
    for f in findings {
        let known = edgediff_fuzz::known::lookup(f).map(|k| format!(" [known open bug, test {}]", k.test));
        println!("  {f}{}", known.unwrap_or_default());
    }
    println!("panics caught inside the code under test (not fatal): {}", caught.len());
    for f in caught {
        let place = f.message.rsplit(" at ").next().unwrap_or("");
        println!("  {} at {place}", f.target);
    }
}

fn replay(target: Result<&'static Target>, files: &[PathBuf]) -> Result<()> {
    let target = target?;
    let ctx = Context::new()?;
    target.check(&ctx)?;
    install_quiet_hook();
    let mut panicked = 0;
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        match run_case(target, &ctx, &bytes) {
            Outcome::Returned { stage, guarded } => {
                let note = guarded.map(|g| format!(" (a panic was caught inside: {} at {})", g.message, g.location));
                println!("{}: {stage}{}", file.display(), note.unwrap_or_default());
            }
            Outcome::Panicked(p) => {
                panicked += 1;
                println!("{}: PANIC {} at {}", file.display(), p.message, p.location);
            }
        }
    }
    if panicked > 0 {
        bail!("{panicked} of {} inputs panicked", files.len());
    }
    Ok(())
}

fn work(args: WorkerArgs) -> Result<()> {
    let cfg = WorkerConfig {
        seed: args.seed,
        seconds: args.seconds,
        runs: args.runs,
        findings: args.findings,
        case_timeout: Duration::from_secs_f64(args.case_timeout),
    };
    worker::run(find_target(&args.target)?, &cfg, &mut std::io::stdout().lock())?;
    Ok(())
}
