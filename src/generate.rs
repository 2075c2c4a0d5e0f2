//! The default command: sample a batch and write PNG(s) (+ optional .npy vectors and report).
//!
//! In order: check every output path, load and plan the model ([`prepare`]), run the sampling
//! loop with a progress bar, write the images and vectors, then the report and the summary
//! ([`crate::summary`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use edgediff_cli::{resolve_class, ClassChoice, UsageError};
use edgediff_core::meta::ModelMeta;
use edgediff_core::SamplerSettings;
use edgediff_runtime::memory::{self, format_size};
use edgediff_runtime::pixels::to_pixels;
use edgediff_runtime::{sample, Network, RuntimeError, SampleOutput, SampleRequest, StepProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::GenerateArgs;
use crate::model_source::ModelSource;
use crate::png_out::Picture;

/// A model loaded and planned for one run, with the run's settings and what loading cost.
pub struct Prepared {
    /// How to name the model in messages: its path, or `embedded:…`.
    pub label: String,
    pub sha256: String,
    pub meta: ModelMeta,
    pub settings: SamplerSettings,
    pub choice: ClassChoice,
    pub request: SampleRequest,
    pub net: Network,
    pub load: LoadStats,
}

/// Time and heap of loading and planning the model.
pub struct LoadStats {
    pub time: Duration,
    /// Peak heap while loading.
    pub peak: usize,
    /// Heap the planned network keeps (weights, packed kernels, buffers) once loading's
    /// transients (file bytes, decoded protobuf, graph rewrites) are freed.
    pub held: usize,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let out = args.out.clone().ok_or_else(|| UsageError("missing OUT.png".into()))?;
    crate::out_paths::check(args, &out)?;
    let started = Instant::now();
    let mut prepared = prepare(args, started)?;
    // The sampling peak is measured on its own, so int8 and fp32 models compare by what
    // sampling really needs.
    memory::reset_peak();
    let output = sample_with_progress(args, &mut prepared)?;
    write_images(args, &out, &prepared, &output)?;
    let shape = [args.batch as usize, prepared.meta.channels, prepared.meta.image_size, prepared.meta.image_size];
    if let Some(path) = &args.save_raw {
        edgediff_io::npy::write_f32(path, &output.x0, &shape)?;
    }
    if let Some(path) = &args.save_init_noise {
        edgediff_io::npy::write_f32(path, &output.x_t, &shape)?;
    }
    if let Some(path) = &args.report_json {
        let report = crate::summary::report_json(args, &prepared, &output, started.elapsed());
        edgediff_io::write_atomic(path, format!("{report:#}\n").as_bytes())?;
    }
    if !args.quiet {
        crate::summary::print(args, &out, &prepared, &output, started.elapsed());
    }
    Ok(())
}

/// Loads the model, resolves the flags against it and plans the network; fails when loading
/// alone exceeds `--memory-budget`.
fn prepare(args: &GenerateArgs, started: Instant) -> Result<Prepared> {
    let batch = args.batch as usize;
    let source = ModelSource::from_args(&args.model, args.memory_budget)?;
    let model = source.load()?;
    let sha256 = source.sha256()?;
    let meta = model.meta.clone();
    let settings = args.scheduler.for_model(&meta.schedule, &meta.default_settings())?;
    let init_noise = match &args.init_noise {
        Some(path) => Some(load_init_noise(path, batch, &meta)?),
        None => None,
    };
    let choice = resolve_class(&args.class, &meta, model.info.conditional)?;
    let request = SampleRequest {
        seed: args.seed,
        settings: settings.clone(),
        init_noise,
        class_labels: choice.index.map(|c| vec![c as i64; batch]),
        guidance: choice.scale,
        memory_budget: args.memory_budget,
    };
    // Under classifier-free guidance the network evaluates 2 x batch images per call.
    let net_batch = request.network_batch(batch)?;
    let buffers = request.buffer_bytes(batch, &meta)?.saturating_add(output_bytes(args, &meta));
    let net = model.into_network_with(net_batch, args.threads as usize, buffers).map_err(|e| source.error(e))?;
    let load = LoadStats { time: started.elapsed(), peak: memory::peak_bytes(), held: memory::current_bytes() };
    if let Some(budget) = args.memory_budget {
        if load.peak as u64 > budget {
            anyhow::bail!(RuntimeError::OverBudget {
                budget: format_size(budget),
                needed: format_size(load.peak as u64),
                phase: "loading the model",
            });
        }
    }
    Ok(Prepared { label: source.label, sha256, meta, settings, choice, request, net, load })
}

fn sample_with_progress(args: &GenerateArgs, prepared: &mut Prepared) -> Result<SampleOutput> {
    let bar = progress_bar(args.quiet, prepared.settings.steps as u64);
    let result = sample(&mut prepared.net, &prepared.request, |p: StepProgress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("t={}", p.timestep));
    });
    bar.finish_and_clear();
    Ok(result?)
}

/// The PNG grid, or one PNG per image with `--separate`, each with its provenance.
fn write_images(args: &GenerateArgs, out: &Path, prepared: &Prepared, output: &SampleOutput) -> Result<()> {
    let meta = &prepared.meta;
    let tiles: Vec<Vec<u8>> = output.x0.chunks(meta.image_len()).map(|img| to_pixels(img, meta)).collect();
    let text = png_text(args, prepared);
    if args.batch > 1 && args.separate {
        for (k, tile) in tiles.into_iter().enumerate() {
            let pic =
                Picture { width: meta.image_size, height: meta.image_size, channels: meta.channels, pixels: tile };
            let mut t = text.clone();
            t.push(("seed".into(), (args.seed.wrapping_add(k as u64)).to_string()));
            pic.upscaled(args.upscale as usize).save(&numbered(out, k), &t)?;
        }
    } else {
        let mut t = text;
        t.push(("seed".into(), args.seed.to_string()));
        Picture::grid(&tiles, meta.image_size, meta.channels).upscaled(args.upscale as usize).save(out, &t)?;
    }
    Ok(())
}

/// The bytes of what the run writes, held while it is written: the image tiles, the PNG grid
/// (enlarged by `--upscale`) and its encoding, and the `.npy` vectors.
fn output_bytes(args: &GenerateArgs, meta: &ModelMeta) -> u64 {
    let pixels = (args.batch as u64).saturating_mul(meta.image_len() as u64);
    let upscaled = pixels.saturating_mul(u64::from(args.upscale).pow(2));
    let vectors = [&args.save_raw, &args.save_init_noise].iter().filter(|p| p.is_some()).count() as u64;
    pixels.saturating_mul(2).saturating_add(upscaled.saturating_mul(2)).saturating_add(pixels * 4 * vectors)
}

/// The largest |value| an x_T may hold: standard normal noise stays within ±10; a vector of
/// values far beyond is not noise and would only overflow the sampler's arithmetic.
const MAX_INIT_NOISE: f32 = 1e4;

fn load_init_noise(path: &Path, batch: usize, meta: &ModelMeta) -> Result<Vec<f32>> {
    // The expected values plus room for a header: a larger file is not this run's x_T.
    let max_bytes = (batch as u64 * meta.image_len() as u64 * 4).saturating_add(1 << 16);
    let (data, shape) =
        edgediff_io::npy::read_f32_at_most(path, max_bytes).map_err(|e| edgediff_cli::bad_input("--init-noise", e))?;
    let chw = [meta.channels, meta.image_size, meta.image_size];
    let fits = shape == [batch, chw[0], chw[1], chw[2]] || (batch == 1 && shape == chw);
    if !fits {
        return Err(UsageError(format!(
            "--init-noise {}: shape {:?} does not match [{batch}, {}, {}, {}]",
            path.display(),
            shape,
            chw[0],
            chw[1],
            chw[2]
        ))
        .into());
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(UsageError(format!("--init-noise {}: value {i} is {}", path.display(), data[i])).into());
    }
    if let Some(i) = data.iter().position(|v| v.abs() > MAX_INIT_NOISE) {
        return Err(UsageError(format!(
            "--init-noise {}: value {i} is {}, expected noise within ±{MAX_INIT_NOISE}",
            path.display(),
            data[i]
        ))
        .into());
    }
    Ok(data)
}

fn progress_bar(quiet: bool, steps: u64) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} steps {msg} [{elapsed_precise}, eta {eta}]") {
        bar.set_style(style);
    }
    bar
}

/// The PNG tEXt chunks: software, model and its sha256, the sampling settings, and for a
/// conditional model its class (or that it sampled unconditionally) and guidance scale.
fn png_text(args: &GenerateArgs, prepared: &Prepared) -> Vec<(String, String)> {
    let (cfg, choice) = (&prepared.settings, &prepared.choice);
    let mut text = vec![
        ("Software".into(), format!("edgediff sampler {}", env!("CARGO_PKG_VERSION"))),
        ("model".into(), prepared.meta.model_name.clone()),
        ("model_sha256".into(), prepared.sha256.clone()),
        ("steps".into(), cfg.steps.to_string()),
        ("eta".into(), cfg.eta.to_string()),
        ("scheduler".into(), cfg.kind.to_string()),
        ("spacing".into(), cfg.spacing.to_string()),
        ("batch".into(), args.batch.to_string()),
    ];
    if choice.conditional {
        text.push(("class".into(), choice.name.clone().unwrap_or_else(|| "null (unconditional)".into())));
        if let Some(w) = choice.effective_scale() {
            text.push(("guidance".into(), w.to_string()));
        }
    }
    text
}

/// `out.png` -> `out-3.png`.
pub(crate) fn numbered(out: &Path, k: usize) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let ext = out.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    out.with_file_name(format!("{stem}-{k}{ext}"))
}
