//! `firmware-sim`: emulated aarch64 parity runs per device profile.
//!
//! Exit codes: 0 every gate passed; 1 a gate failed or the input/tools were bad (one line on
//! stderr); 2 malformed flags.
//!
//! Usage (`cargo xtask sim ARGS` runs `firmware-sim run ARGS`, default `--all`):
//! ```text
//! firmware-sim list                                   the device profiles and their gates
//! firmware-sim run --all                              every profile, fp32 and int8 default models
//! firmware-sim run --profile cortex-a53 --precision int8 --seeds 0 --max-steps 20
//! firmware-sim run --all --model m.onnx --precision fp32 --reference DIR
//! ```
//! Every precision is gated against the fp32 reference (models/reference/sprites-cond): x_T bit for
//! bit, the final sample by the profile's `[gates.<precision>] min_psnr_db`, the peak heap by its
//! budget. Each row also shows (not gated) the PSNR against the x86_64 host sampler's sample for
//! the same model and seed, i.e. how much that precision differs between CPUs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};
use edgediff_firmware_sim::emulate::ModelChoice;
use edgediff_firmware_sim::gates::CaseResult;
use edgediff_firmware_sim::harness::{execute, Plan, Variant};
use edgediff_firmware_sim::profile::{self, Precision, Profile};
use edgediff_firmware_sim::reference::Reference;
use edgediff_firmware_sim::report::{self, RunInfo};
use edgediff_firmware_sim::toolchain::Toolchain;

/// The default model (embedded into `sampler` at build time) and its reference vectors.
const DEFAULT_MODEL: &str = "models/sprites-cond.onnx";
/// The default int8 model: DEFAULT_MODEL quantised by `train quantize` (judged against
/// DEFAULT_MODEL's reference).
const DEFAULT_INT8_MODEL: &str = "models/sprites-cond-int8.onnx";
const REFERENCE_ROOT: &str = "models/reference";

#[derive(Parser)]
#[command(
    name = "firmware-sim",
    version,
    about = "Run the aarch64 sampler under qemu per device profile and check parity with the reference vectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the device profiles (firmware-sim/profiles/*.toml)
    List,
    /// Cross-build, run under qemu, check the gates, write target/firmware-sim/report.{md,json}
    Run(Box<RunArgs>),
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
    /// ONNX model under test, at the one --precision given (default: models/sprites-cond.onnx,
    /// embedded in the sampler, for fp32; models/sprites-cond-int8.onnx for int8)
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The fp32 model the reference was made from (default: --model for fp32, else
    /// models/sprites-cond.onnx); names the default reference and re-references at other step counts
    #[arg(long, value_name = "FILE")]
    reference_model: Option<PathBuf>,
    /// Reference directory (default: models/reference/<reference model file stem>)
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
    /// Precisions to run, comma-separated: fp32, int8 (default: both; fp32 with --model)
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.parse::<Precision>())]
    precision: Vec<Precision>,
    /// Output directory (default: target/firmware-sim)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also run each case as a batch of N images (seeds S..S+N) and gate that image k is, bit
    /// for bit, the image of seed S+k: image 0 against the single run, the batch against the
    /// x86_64 host's batch, and each of the host's images against that seed alone
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=16))]
    batch_check: Option<u32>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::List => list(),
        Cmd::Run(args) => run(*args),
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
    println!(
        "{:<12} {:<12} {:<8} {:>9} {:>10} {:>7}  {:<6} description",
        "profile", "qemu cpu", "tract", "RAM MiB", "budget MiB", "threads", "gates"
    );
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

/// A model file the user named: it must exist and not be empty.
fn user_model(flag: &str, path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
    if meta.len() == 0 {
        bail!("{flag} {}: file is empty", path.display());
    }
    path.canonicalize().with_context(|| format!("{flag} {}", path.display()))
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The model under test at `precision`: the user's `--model`, or the default for the precision.
fn resolve_model(root: &Path, model: Option<&Path>, precision: Precision) -> Result<Variant> {
    if let Some(path) = model {
        return Ok(Variant {
            precision,
            model: ModelChoice::File(user_model("--model", path)?),
            label: path.display().to_string(),
            meta: Vec::new(),
        });
    }
    match precision {
        Precision::Fp32 => {
            let file = root.join(DEFAULT_MODEL);
            let len = std::fs::metadata(&file).map(|m| m.len()).with_context(|| file.display().to_string())?;
            if len == 0 {
                bail!("{DEFAULT_MODEL} is an empty placeholder (no trained default model committed yet): pass --model FILE");
            }
            Ok(Variant {
                precision,
                model: ModelChoice::Embedded,
                label: format!("{DEFAULT_MODEL} (embedded in sampler)"),
                meta: Vec::new(),
            })
        }
        Precision::Int8 => {
            let file = root.join(DEFAULT_INT8_MODEL);
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                bail!("{DEFAULT_INT8_MODEL} is missing or empty: make it with `train quantize {DEFAULT_MODEL} {DEFAULT_INT8_MODEL}` or pass --model FILE");
            }
            // The shipped int8 file keeps tract's kernels (its quality gates were measured with
            // them); run in the fixed order, it must give the same bytes on every CPU.
            Ok(Variant {
                precision,
                model: ModelChoice::File(file),
                label: format!("{DEFAULT_INT8_MODEL} (float_order=fixed)"),
                meta: vec!["float_order=fixed".into()],
            })
        }
    }
}

/// The fp32 model the reference was made from, and the stem its reference directory is named by.
fn resolve_reference_model(args: &RunArgs, variants: &[Variant]) -> Result<(ModelChoice, String)> {
    if let Some(path) = &args.reference_model {
        let abs = user_model("--reference-model", path)?;
        let stem = stem(&abs);
        return Ok((ModelChoice::File(abs), stem));
    }
    match (&args.model, variants) {
        (Some(_), [Variant { precision: Precision::Fp32, model: ModelChoice::File(abs), .. }]) => {
            Ok((ModelChoice::File(abs.clone()), stem(abs)))
        }
        _ => Ok((ModelChoice::Embedded, stem(Path::new(DEFAULT_MODEL)))),
    }
}

/// `firmware-sim run`: resolves the plan, runs it, writes the report; `Ok(false)` when a gate
/// failed.
fn run(args: RunArgs) -> Result<bool> {
    let root = root();
    let precisions = precisions(&args);
    let profiles = load_profiles(&root, &args, &precisions)?;
    let variants =
        precisions.iter().map(|&p| resolve_model(&root, args.model.as_deref(), p)).collect::<Result<Vec<_>>>()?;
    let (reference_model, reference) = load_reference(&root, &args, &variants)?;
    let seeds = select_seeds(&args, &reference)?;
    let steps = match (args.steps, args.max_steps) {
        (Some(n), _) => n,
        (None, Some(cap)) => reference.steps.min(cap),
        (None, None) => reference.steps,
    };
    let tools = Toolchain::check(&root)?;
    let plan = Plan {
        profiles,
        variants,
        reference_model,
        steps,
        seeds,
        reference,
        out_dir: out_dir(&root, args.out.as_deref())?,
        batch_check: args.batch_check,
    };
    let results = execute(&tools, &plan, &mut |line| eprintln!("firmware-sim: {line}"))?;
    write_report(&plan, &results)
}

/// The precisions to run, sorted: `--precision`, else fp32 with `--model`, else both. One
/// `--model` takes exactly one precision (a usage error, exit 2, otherwise).
fn precisions(args: &RunArgs) -> Vec<Precision> {
    let mut precisions = args.precision.clone();
    if precisions.is_empty() {
        precisions = if args.model.is_some() { vec![Precision::Fp32] } else { vec![Precision::Fp32, Precision::Int8] };
    }
    precisions.sort();
    precisions.dedup();
    if args.model.is_some() && precisions.len() > 1 {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--model names one model: give exactly one --precision (fp32 or int8)",
            )
            .exit();
    }
    precisions
}

/// The profiles asked for, each required to set a gate for every precision run.
fn load_profiles(root: &Path, args: &RunArgs, precisions: &[Precision]) -> Result<Vec<Profile>> {
    let profile_dir = root.join("firmware-sim/profiles");
    let profiles = if args.all {
        profile::load_all(&profile_dir)?
    } else {
        args.profile.iter().map(|name| profile::find(&profile_dir, name)).collect::<Result<Vec<_>, _>>()?
    };
    for p in &profiles {
        for &precision in precisions {
            p.gate(precision)?;
        }
    }
    Ok(profiles)
}

/// The fp32 model the reference was made from, and the reference itself (`--reference`, or the
/// directory named after that model).
fn load_reference(root: &Path, args: &RunArgs, variants: &[Variant]) -> Result<(ModelChoice, Reference)> {
    let (reference_model, stem) = resolve_reference_model(args, variants)?;
    let reference_dir = args.reference.clone().unwrap_or_else(|| root.join(REFERENCE_ROOT).join(&stem));
    Ok((reference_model, Reference::load(&reference_dir)?))
}

/// `--seeds` (default: all of the reference's), cut to `--max-seeds`.
fn select_seeds(args: &RunArgs, reference: &Reference) -> Result<Vec<u64>> {
    let mut seeds = reference.select_seeds(&args.seeds)?;
    if let Some(n) = args.max_seeds {
        seeds.truncate(n as usize);
    }
    Ok(seeds)
}

/// Where runs and the report go, absolute: qemu runs inside each case's directory.
fn out_dir(root: &Path, out: Option<&Path>) -> Result<PathBuf> {
    Ok(match out {
        Some(dir) if dir.is_relative() => std::env::current_dir().context("current directory")?.join(dir),
        Some(dir) => dir.to_path_buf(),
        None => root.join("target/firmware-sim"),
    })
}

/// Writes report.md and report.json, prints the markdown, and lists every failed gate on
/// stderr; `Ok(true)` when every gate passed.
fn write_report(plan: &Plan, results: &[CaseResult]) -> Result<bool> {
    let info = RunInfo {
        models: plan.variants.iter().map(|v| (v.precision, v.label.clone())).collect(),
        reference_dir: plan.reference.dir.display().to_string(),
        reference_device: plan.reference.device.clone(),
        reference_steps: plan.reference.steps,
        reference_model_sha256: plan.reference.model_sha256.clone(),
    };
    let (md, json) = report::write(&plan.out_dir, &info, results)?;
    print!("{}", report::to_markdown(&info, results));
    eprintln!("firmware-sim: report written to {} and {}", md.display(), json.display());
    let failures: Vec<String> = results.iter().flat_map(|r| r.failures()).collect();
    for f in &failures {
        eprintln!("{f}");
    }
    Ok(failures.is_empty())
}
