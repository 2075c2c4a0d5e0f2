//! `firmware-sim`: emulated aarch64 parity runs per device profile.
//!
//! Exit codes: 0 every gate passed; 1 a gate failed or the input/tools were bad (one line on
//! stderr); 2 malformed flags.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use edgediff_firmware_sim::emulate::ModelChoice;
use edgediff_firmware_sim::harness::{execute, Plan};
use edgediff_firmware_sim::profile::{self, Precision};
use edgediff_firmware_sim::reference::Reference;
use edgediff_firmware_sim::report::{self, RunInfo};
use edgediff_firmware_sim::toolchain::Toolchain;

/// The default model (embedded into `sampler` at build time) and its reference vectors.
const DEFAULT_MODEL: &str = "models/sprites-eps.onnx";
const REFERENCE_ROOT: &str = "models/reference";

#[derive(Parser)]
#[command(name = "firmware-sim", version, about = "Run the aarch64 sampler under qemu per device profile and check parity with the reference vectors")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the device profiles (firmware-sim/profiles/*.toml)
    List,
    /// Cross-build, run under qemu, check the gates, write target/firmware-sim/report.{md,json}
    Run(RunArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("which").required(true).args(["profile", "all"])))]
struct RunArgs {
    /// Device profile (repeatable), e.g. cortex-a53
    #[arg(long)]
    profile: Vec<String>,
    /// Every profile
    #[arg(long)]
    all: bool,
    /// ONNX model (default: models/sprites-eps.onnx, embedded in the sampler)
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Reference directory (default: models/reference/<model file stem>)
    #[arg(long, value_name = "DIR")]
    reference: Option<PathBuf>,
    /// Denoising steps (default: the reference's; another count compares x0 with the host sampler)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "max_steps")]
    steps: Option<u32>,
    /// At most this many steps: the reference's count if it is not larger (bounds CI time)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_steps: Option<u32>,
    /// Seeds to run, comma-separated (default: all of the reference's)
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Run only the first N of the selected seeds
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_seeds: Option<u64>,
    /// Precision of the model under test: fp32 or int8
    #[arg(long, default_value = "fp32", value_parser = |s: &str| s.parse::<Precision>())]
    precision: Precision,
    /// Output directory (default: target/firmware-sim)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::List => list(),
        Cmd::Run(args) => run(args),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            let line: Vec<String> = e.chain().map(|c| c.to_string().replace('\n', " ")).collect();
            eprintln!("firmware-sim: error: {}", line.join(": "));
            std::process::exit(1);
        }
    }
}

fn list() -> Result<bool> {
    let profiles = profile::load_all(&root().join("firmware-sim/profiles"))?;
    println!("{:<12} {:<12} {:<8} {:>9} {:>10} {:>7}  {:<6} description", "profile", "qemu cpu", "tract", "RAM MiB", "budget MiB", "threads", "gates");
    for p in profiles {
        let gates: Vec<String> = p.gates.keys().map(|k| k.to_string()).collect();
        println!(
            "{:<12} {:<12} {:<8} {:>9} {:>10} {:>7}  {:<6} {}",
            p.name,
            p.qemu_cpu,
            p.tract_kind,
            p.board_ram_mib,
            p.memory_budget_mib,
            p.threads,
            gates.join(","),
            p.description
        );
    }
    Ok(true)
}

/// The model under test, its label and the stem its reference directory is named after.
fn resolve_model(root: &Path, model: Option<&Path>, precision: Precision) -> Result<(ModelChoice, String, String)> {
    match model {
        Some(path) => {
            let meta = std::fs::metadata(path).with_context(|| format!("--model {}", path.display()))?;
            if meta.len() == 0 {
                bail!("--model {}: file is empty", path.display());
            }
            let abs = path.canonicalize().with_context(|| format!("--model {}", path.display()))?;
            let stem = abs.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Ok((ModelChoice::File(abs), path.display().to_string(), stem))
        }
        None => {
            if precision != Precision::Fp32 {
                bail!("there is no default {precision} model yet: pass --model FILE");
            }
            let file = root.join(DEFAULT_MODEL);
            let len = std::fs::metadata(&file).map(|m| m.len()).with_context(|| file.display().to_string())?;
            if len == 0 {
                bail!("{DEFAULT_MODEL} is an empty placeholder (no trained default model committed yet): pass --model FILE");
            }
            Ok((ModelChoice::Embedded, format!("{DEFAULT_MODEL} (embedded in sampler)"), "sprites-eps".into()))
        }
    }
}

fn run(args: RunArgs) -> Result<bool> {
    let root = root();
    let profile_dir = root.join("firmware-sim/profiles");
    let profiles = if args.all {
        profile::load_all(&profile_dir)?
    } else {
        args.profile.iter().map(|name| profile::find(&profile_dir, name)).collect::<Result<Vec<_>, _>>()?
    };
    for p in &profiles {
        p.gate(args.precision)?;
    }
    let (model, model_label, stem) = resolve_model(&root, args.model.as_deref(), args.precision)?;
    let reference_dir = args.reference.clone().unwrap_or_else(|| root.join(REFERENCE_ROOT).join(&stem));
    let reference = Reference::load(&reference_dir)?;
    let mut seeds = reference.select_seeds(&args.seeds)?;
    if let Some(n) = args.max_seeds {
        seeds.truncate(n as usize);
    }
    let steps = match (args.steps, args.max_steps) {
        (Some(n), _) => n,
        (None, Some(cap)) => reference.steps.min(cap),
        (None, None) => reference.steps,
    };
    let tools = Toolchain::check(&root)?;
    let plan = Plan {
        profiles,
        precision: args.precision,
        model,
        steps,
        seeds,
        reference,
        // Absolute: qemu runs inside each case's directory.
        out_dir: match &args.out {
            Some(dir) if dir.is_relative() => std::env::current_dir().context("current directory")?.join(dir),
            Some(dir) => dir.clone(),
            None => root.join("target/firmware-sim"),
        },
    };
    let results = execute(&tools, &plan, &mut |line| eprintln!("firmware-sim: {line}"))?;
    let info = RunInfo {
        model: model_label,
        reference_dir: plan.reference.dir.display().to_string(),
        reference_device: plan.reference.device.clone(),
        reference_steps: plan.reference.steps,
        reference_model_sha256: plan.reference.model_sha256.clone(),
    };
    let (md, json) = report::write(&plan.out_dir, &info, &results)?;
    print!("{}", report::to_markdown(&info, &results));
    eprintln!("firmware-sim: report written to {} and {}", md.display(), json.display());
    let failures: Vec<String> = results.iter().flat_map(|r| r.failures()).collect();
    for f in &failures {
        eprintln!("{f}");
    }
    Ok(failures.is_empty())
}
