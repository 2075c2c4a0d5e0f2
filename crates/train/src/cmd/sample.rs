//! `train sample`: reference vectors from a run's EMA weights, sampled with the network on burn
//! and crates/core's scheduler (see `edgediff_train::reference`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use edgediff_cli::{resolve_class, ClassArgs, SchedulerArgs};
use edgediff_core::meta::ModelMeta;
use edgediff_core::SamplerSettings;
use edgediff_io::sha256_hex;
use edgediff_runtime::Denoiser;
use edgediff_train::device::{self, BackendJob, DeviceChoice, Selected};
use edgediff_train::fit::run_files::load_state;
use edgediff_train::reference::files::{write_reference, Provenance};
use edgediff_train::reference::provenance::{command_line, gpu_name, utc_now, BURN_VERSION};
use edgediff_train::reference::{
    meta_from_run, run_reference, ClassSetting, ReferenceError, ReferenceRequest, ReferenceRun,
};

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
    #[command(flatten)]
    sampling: SchedulerArgs,
    /// Class-conditional runs: `--class` (default: the null class, i.e. unconditional) and
    /// `--guidance`, as the sampler's.
    #[command(flatten)]
    class: ClassArgs,
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

struct SampleJob<'a> {
    args: &'a SampleArgs,
    name: String,
    onnx: Option<(Vec<u8>, ModelMeta)>,
    settings: SamplerSettings,
    class: ClassSetting,
}

impl BackendJob for SampleJob<'_> {
    type Output = Result<ReferenceRun, ReferenceError>;
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let onnx = self.onnx.as_ref().map(|(b, m)| (b.as_slice(), m));
        let seeds = &self.args.seeds.0;
        // The inner (non-autodiff) backend: inference only, dropout off.
        let request = ReferenceRequest { settings: &self.settings, seeds, class: self.class };
        run_reference::<B::InnerBackend>(&self.args.run, self.name, onnx, request, &device, |done, total| {
            eprintln!("sampled seed {} ({done}/{total})", seeds[done - 1]);
        })
    }
}

/// The command that regenerates this output, with every setting explicit.
fn regenerate_command(args: &SampleArgs, settings: &SamplerSettings, class: &ClassSetting, device: &str) -> String {
    let seeds: Vec<String> = args.seeds.0.iter().map(u64::to_string).collect();
    let mut cmd: Vec<String> = ["train", "sample", "--run"].map(String::from).to_vec();
    cmd.push(args.run.display().to_string());
    if let Some(onnx) = &args.onnx {
        cmd.extend(["--onnx".to_string(), onnx.display().to_string()]);
    }
    cmd.extend(["--seeds".to_string(), seeds.join(",")]);
    cmd.extend(SchedulerArgs::command_line(settings));
    for (flag, value) in [("--device", device.to_string()), ("--out", args.out.display().to_string())] {
        cmd.extend([flag.to_string(), value]);
    }
    if let Some(class) = &args.class.class {
        cmd.extend(["--class".to_string(), class.clone()]);
    }
    if let (Some(_), Some(w)) = (class.class, args.class.guidance) {
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
    // Whether the exported graph takes class labels (`None` without --onnx).
    let mut onnx_conditional = None;
    let onnx = match &args.onnx {
        Some(path) => {
            let bytes = edgediff_runtime::source::read_model(path, None)
                .map_err(|e| edgediff_cli::bad_input(&path.display().to_string(), e))?;
            let (meta, info) =
                Denoiser::inspect(&bytes, &Default::default()).with_context(|| path.display().to_string())?;
            onnx_conditional = Some(info.conditional);
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
    // The flags are checked against the model that will be sampled: the ONNX file's, else the run's.
    let meta = match &onnx {
        Some((_, meta)) => meta.clone(),
        None => {
            let (state, _) = load_state(&args.run).with_context(|| format!("run {}", args.run.display()))?;
            meta_from_run(&state, name.clone())?
        }
    };
    let settings = args.sampling.for_model(&meta.schedule, &SamplerSettings::default())?;
    // With a class and no --guidance, the scale the model file recommends (edgediff.guidance_scale).
    let conditional = onnx_conditional.unwrap_or(!meta.class_names.is_empty());
    let choice = resolve_class(&args.class, &meta, conditional)?;
    let class = ClassSetting { class: choice.index, guidance: choice.scale };
    let command = regenerate_command(&args, &settings, &class, device_flag);
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
        command,
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
