//! `train sample`: reference vectors from a run's EMA weights, sampled with the network on burn
//! and crates/core's scheduler (see `edgediff_train::reference`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use edgediff_core::{SchedulerKind, Spacing};
use edgediff_runtime::EpsModel;
use edgediff_train::device::{self, BackendJob, DeviceChoice, Selected};
use edgediff_train::reference::files::{write_reference, Provenance};
use edgediff_train::reference::provenance::{command_line, gpu_name, sha256_hex, utc_now, BURN_VERSION};
use edgediff_train::fit::run_files::load_state;
use edgediff_train::reference::{run_reference, ClassSetting, ReferenceError, ReferenceRun, SamplerSettings};

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run directory written by `train fit` (its latest checkpoint's EMA weights are sampled).
    #[arg(long, value_name = "RUN_DIR")]
    run: PathBuf,
    /// Output directory: seed-<S>/{x_T.npy, x0.npy, sample.png} and reference.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The ONNX file exported from the same run (recommended): its metadata drives the
    /// scheduler and its SHA-256 is recorded, so consumers can check they use the same weights.
    #[arg(long, value_name = "FILE")]
    onnx: Option<PathBuf>,
    /// Seeds, comma separated; one image per seed (the runtime's image for `--seed S`).
    #[arg(long, default_value = "0", value_name = "LIST", value_parser = seed_list)]
    seeds: SeedList,
    /// Number of denoising steps.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
    /// DDIM eta: 0 = deterministic DDIM, 1 = DDPM-like noise.
    #[arg(long, default_value_t = 0.0, value_parser = eta)]
    eta: f32,
    /// Sampler: ddim, ddpm or dpmpp2m (DPM-Solver++ 2M, no noise).
    #[arg(long, default_value = "ddim", value_parser = from_str::<SchedulerKind>)]
    scheduler: SchedulerKind,
    /// Timestep spacing: leading, trailing or linspace.
    #[arg(long, default_value = "leading", value_parser = from_str::<Spacing>)]
    spacing: Spacing,
    /// Offset added to leading timesteps (diffusers' steps_offset).
    #[arg(long, default_value_t = 0)]
    steps_offset: usize,
    /// Final alpha_bar_prev = 1 (diffusers' set_alpha_to_one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    set_alpha_to_one: bool,
    /// Class-conditional runs: the class to sample, a name or an index (default: the null
    /// class, i.e. unconditional), as `sampler --class`.
    #[arg(long, value_name = "NAME|INDEX")]
    class: Option<String>,
    /// Classifier-free guidance scale (needs --class), as `sampler --guidance` [default: 1].
    #[arg(long, value_name = "W", allow_negative_numbers = true, value_parser = guidance_scale, requires = "class")]
    guidance: Option<f32>,
    /// Backend of the network: auto (CUDA if built and present, else CPU), cpu, cuda.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Debug, Clone)]
pub struct SeedList(Vec<u64>);

fn seed_list(s: &str) -> Result<SeedList, String> {
    let seeds = s
        .split(',')
        .map(|p| p.trim().parse::<u64>().map_err(|_| format!("{p:?} is not a seed (a non-negative integer)")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err("a seed is listed twice".into());
    }
    Ok(SeedList(seeds))
}

pub fn eta(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{s} must be in [0, 1]")) }
}

pub fn guidance_scale(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(format!("{s} must be a finite number >= 0")) }
}

/// `--class NAME|INDEX` -> an index into `class_names` (a name first, then an index).
pub fn class_index(class: &str, class_names: &[String]) -> anyhow::Result<usize> {
    if class_names.is_empty() {
        anyhow::bail!("--class {class}: the model is not class-conditional");
    }
    match (class_names.iter().position(|n| n == class), class.parse::<usize>()) {
        (Some(i), _) => Ok(i),
        (None, Ok(i)) if i < class_names.len() => Ok(i),
        _ => anyhow::bail!("--class {class}: unknown class; the model has {} (or an index 0..={})", class_names.join(", "), class_names.len() - 1),
    }
}

pub fn from_str<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

struct SampleJob<'a> {
    args: &'a SampleArgs,
    name: String,
    onnx: Option<(Vec<u8>, edgediff_core::meta::ModelMeta)>,
    settings: SamplerSettings,
    class: ClassSetting,
}

impl BackendJob for SampleJob<'_> {
    type Output = Result<ReferenceRun, ReferenceError>;
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let onnx = self.onnx.as_ref().map(|(b, m)| (b.as_slice(), m));
        let seeds = &self.args.seeds.0;
        // The inner (non-autodiff) backend: inference only, dropout off.
        run_reference::<B::InnerBackend>(&self.args.run, self.name, onnx, &self.settings, seeds, self.class, &device, |done, total| {
            eprintln!("sampled seed {} ({done}/{total})", seeds[done - 1]);
        })
    }
}

/// The command that regenerates this output, with every setting explicit.
fn regenerate_command(args: &SampleArgs, device: &str) -> String {
    let seeds: Vec<String> = args.seeds.0.iter().map(u64::to_string).collect();
    let mut cmd: Vec<String> = ["train", "sample", "--run"].map(String::from).to_vec();
    cmd.push(args.run.display().to_string());
    if let Some(onnx) = &args.onnx {
        cmd.extend(["--onnx".to_string(), onnx.display().to_string()]);
    }
    for (flag, value) in [
        ("--seeds", seeds.join(",")),
        ("--steps", args.steps.to_string()),
        ("--scheduler", args.scheduler.to_string()),
        ("--eta", args.eta.to_string()),
        ("--spacing", args.spacing.to_string()),
        ("--steps-offset", args.steps_offset.to_string()),
        ("--set-alpha-to-one", args.set_alpha_to_one.to_string()),
        ("--device", device.to_string()),
        ("--out", args.out.display().to_string()),
    ] {
        cmd.extend([flag.to_string(), value]);
    }
    if let Some(class) = &args.class {
        cmd.extend(["--class".to_string(), class.clone()]);
    }
    if let Some(w) = args.guidance {
        cmd.extend(["--guidance".to_string(), w.to_string()]);
    }
    command_line(&cmd)
}

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (selected, notice) = device::select(args.device)?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    let (device_name, device_flag) = match selected {
        Selected::Cpu => ("cpu".to_string(), "cpu"),
        Selected::Cuda => (gpu_name().map(|g| format!("cuda: {g}")).unwrap_or_else(|| "cuda".into()), "cuda"),
    };
    let onnx = match &args.onnx {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let (meta, _) = EpsModel::inspect(&bytes, &Default::default()).with_context(|| path.display().to_string())?;
            Some((bytes, meta))
        }
        None => None,
    };
    let name = match &onnx {
        Some((_, meta)) => meta.model_name.clone(),
        None => args
            .run
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "edgediff".into()),
    };
    let sha = onnx.as_ref().map(|(bytes, _)| sha256_hex(bytes));
    let settings = SamplerSettings {
        kind: args.scheduler,
        steps: args.steps as usize,
        spacing: args.spacing,
        steps_offset: args.steps_offset,
        eta: args.eta,
        set_alpha_to_one: args.set_alpha_to_one,
    };
    let class = match &args.class {
        Some(c) => {
            let names = match &onnx {
                Some((_, meta)) => meta.class_names.clone(),
                None => {
                    let (state, _) = load_state(&args.run).with_context(|| format!("run {}", args.run.display()))?;
                    if state.config.model.num_classes.is_some() { state.class_names } else { Vec::new() }
                }
            };
            Some(class_index(c, &names)?)
        }
        None => None,
    };
    // With a class and no --guidance, the scale the model file recommends (edgediff.guidance_scale).
    let model_scale = class.and(onnx.as_ref().and_then(|(_, meta)| meta.guidance_scale));
    let class = ClassSetting { class, guidance: args.guidance.or(model_scale) };
    let job = SampleJob { args: &args, name, onnx, settings, class };
    let result = device::run_job(selected, job).with_context(|| format!("run {}", args.run.display()))?;
    if result.onnx_weights_match == Some(false) {
        eprintln!(
            "warning: {} does not hold exactly this run's EMA weights (re-export with `train export --run {} --out FILE`)",
            args.onnx.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            args.run.display()
        );
    }
    let provenance = Provenance {
        device: device_name,
        burn_version: BURN_VERSION.into(),
        date: utc_now(),
        run: args.run.display().to_string(),
        onnx: args.onnx.as_ref().zip(sha).map(|(p, s)| (p.display().to_string(), s)),
        command: regenerate_command(&args, device_flag),
        cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
    };
    write_reference(&args.out, &result, &provenance)?;
    println!(
        "wrote {} seed(s) to {} ({} {} steps, eta {}, {}, {:.1} s)",
        result.samples.len(),
        args.out.display(),
        result.scheduler.kind,
        result.timesteps.len(),
        result.scheduler.eta,
        provenance.device,
        provenance.seconds
    );
    Ok(())
}
