//! `train sample`: the reference sampler. It runs a training run's EMA network on burn (GPU when
//! asked) inside the same sampling loop as the edge runtime: crates/core's schedule and
//! scheduler steps on the CPU, and the runtime's noise layout (seed S uses
//! `GaussianStream::new(image_seed(S, 0))`: first C*H*W normals = x_T, then one C*H*W block per
//! noisy step). Only the network differs (burn vs tract on the exported ONNX), so comparing the
//! two outputs tests the exporter and the runtime end to end, with an independent engine.
//!
//! Each seed is sampled alone (batch 1): a seed's image must not depend on which other seeds
//! were requested, and some backends pick different kernels for different batch sizes. A
//! class-conditional model can be given a class and a classifier-free guidance scale; a guided
//! step is then one batch-2 call (`[x; x]` with `[class; null]`) combined by the same
//! `edgediff_core::guidance::combine` as the runtime's.

pub mod files;
pub mod provenance;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use edgediff_core::guidance::{combine, Guidance};
use edgediff_core::meta::{ModelMeta, Precision};
use edgediff_core::{build_scheduler, image_seed, CoreError, GaussianStream, SamplerSettings};

use crate::export::export_onnx;
use crate::fit::run_files::load_ema;
use crate::fit::{FitError, RunState};
use crate::unet::UNet;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Run(#[from] FitError),
    #[error("network output at step {step} (t={timestep}) contains NaN or Inf")]
    NonFinite { step: usize, timestep: usize },
    #[error("cannot read the network output from the backend: {0}")]
    Backend(String),
    #[error("the ONNX model does not describe this run: {0}")]
    Mismatch(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("{0}")]
    Class(String),
}

/// The class a reference samples and its guidance (the sampler's `--class` / `--guidance`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClassSetting {
    /// Index into the model's classes; `None` = the null class (unconditional).
    pub class: Option<usize>,
    /// Classifier-free guidance scale; `None` = 1 (the class alone).
    pub guidance: Option<f32>,
}

impl ClassSetting {
    /// Checks the setting against the model's classes and returns how sampling uses them.
    pub fn mode(&self, meta: &ModelMeta) -> Result<Guidance, ReferenceError> {
        if let Some(c) = self.class {
            if meta.class_names.is_empty() {
                return Err(ReferenceError::Class(format!("--class {c}: the model is not class-conditional")));
            }
            if c >= meta.class_names.len() {
                return Err(ReferenceError::Class(format!(
                    "--class {c}: the model has {} classes ({})",
                    meta.class_names.len(),
                    meta.class_names.join(", ")
                )));
            }
        }
        Ok(Guidance::new(self.class.is_some(), self.guidance)?)
    }
}

/// The metadata `train export` writes for a run (clip 1, value range [-1, 1], fp32), so a
/// reference made without `--onnx` samples exactly as the exported model would.
pub fn meta_from_run(state: &RunState, model_name: String) -> Result<ModelMeta, ReferenceError> {
    let cfg = &state.config;
    Ok(ModelMeta {
        model_name,
        schedule: cfg.model_schedule()?,
        image_size: cfg.model.image_size,
        channels: cfg.model.in_channels,
        value_range: (-1.0, 1.0),
        precision: Precision::Fp32,
        // A warm-started run continues the source model's training.
        training_steps: state.step + cfg.init_from.as_ref().map_or(0, |i| i.training_steps),
        class_names: if cfg.model.num_classes.is_some() { state.class_names.clone() } else { Vec::new() },
        has_null_class: true,
        guidance_scale: None,
        sampling: Default::default(),
        float_order: Default::default(),
    })
}

/// Checks that an ONNX model's metadata agrees with the run on everything that shapes sampling.
pub fn check_compatible(run: &ModelMeta, onnx: &ModelMeta) -> Result<(), ReferenceError> {
    let mut diffs = Vec::new();
    let mut cmp = |what: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{what} {b} (run: {a})"));
        }
    };
    cmp("image_size", run.image_size.to_string(), onnx.image_size.to_string());
    cmp("channels", run.channels.to_string(), onnx.channels.to_string());
    let (r, o) = (&run.schedule, &onnx.schedule);
    cmp("num_train_timesteps", r.num_train_timesteps.to_string(), o.num_train_timesteps.to_string());
    cmp("beta_schedule", r.beta_schedule.to_string(), o.beta_schedule.to_string());
    cmp("beta_start", r.beta_start.to_string(), o.beta_start.to_string());
    cmp("beta_end", r.beta_end.to_string(), o.beta_end.to_string());
    cmp("prediction_type", r.prediction_type.to_string(), o.prediction_type.to_string());
    cmp("training_steps", run.training_steps.to_string(), onnx.training_steps.to_string());
    cmp("classes", run.class_names.len().to_string(), onnx.class_names.len().to_string());
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(ReferenceError::Mismatch(diffs.join(", ")))
    }
}

/// One seed's result: x_T and the final sample, both `[C, H, W]` flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceSample {
    pub seed: u64,
    pub x_t: Vec<f32>,
    pub x0: Vec<f32>,
}

/// One network evaluation on burn of the `x.len() / (C*H*W)` images in `x`, downloaded to the
/// CPU. `labels` `None` = the null class.
fn forward<B: Backend>(
    model: &UNet<B>,
    x: &[f32],
    t: usize,
    labels: Option<&[i64]>,
    meta: &ModelMeta,
    device: &B::Device,
) -> Result<Vec<f32>, ReferenceError> {
    let (c, s) = (meta.channels, meta.image_size);
    let n = x.len() / meta.image_len();
    let sample = Tensor::<B, 4>::from_data(TensorData::new(x.to_vec(), [n, c, s, s]), device);
    let timestep = Tensor::<B, 1>::from_data(TensorData::new(vec![t as f32; n], [n]), device);
    let labels = labels.map(|l| Tensor::<B, 1, Int>::from_data(TensorData::new(l.to_vec(), [n]), device));
    model
        .forward(sample, timestep, labels)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| ReferenceError::Backend(format!("{e:?}")))
}

/// Samples one image for `seed` with the network on burn and the scheduler on the CPU. Use a
/// backend without autodiff (dropout then is the identity). Conditional models get the null
/// class, as the runtime gives them without labels.
pub fn sample_seed<B: Backend>(
    model: &UNet<B>,
    meta: &ModelMeta,
    settings: &SamplerSettings,
    seed: u64,
    device: &B::Device,
) -> Result<ReferenceSample, ReferenceError> {
    sample_seed_with_class(model, meta, settings, seed, ClassSetting::default(), device)
}

/// [`sample_seed`] for a class and guidance scale (see [`ClassSetting`]).
pub fn sample_seed_with_class<B: Backend>(
    model: &UNet<B>,
    meta: &ModelMeta,
    settings: &SamplerSettings,
    seed: u64,
    class: ClassSetting,
    device: &B::Device,
) -> Result<ReferenceSample, ReferenceError> {
    let guidance = class.mode(meta)?;
    let label = class.class.unwrap_or(0) as i64;
    let null = meta.class_names.len() as i64;
    let mut scheduler = build_scheduler(&meta.schedule, settings)?;
    let timesteps = scheduler.timesteps().to_vec();
    let mut stream = GaussianStream::new(image_seed(seed, 0));
    let mut x = vec![0f32; meta.image_len()];
    stream.fill(&mut x);
    let x_t = x.clone();
    let mut z = vec![0f32; x.len()];
    let mut guided = vec![0f32; x.len()];
    for (i, &t) in timesteps.iter().enumerate() {
        let out = match guidance {
            Guidance::Unconditional => forward(model, &x, t, None, meta, device)?,
            Guidance::Conditional => forward(model, &x, t, Some(&[label]), meta, device)?,
            Guidance::ClassifierFree { scale } => {
                let both =
                    forward(model, &[x.as_slice(), x.as_slice()].concat(), t, Some(&[label, null]), meta, device)?;
                if both.len() != 2 * x.len() {
                    return Err(ReferenceError::Backend(format!(
                        "the network returned {} values for {}",
                        both.len(),
                        2 * x.len()
                    )));
                }
                if both.iter().any(|v| !v.is_finite()) {
                    return Err(ReferenceError::NonFinite { step: i, timestep: t });
                }
                let (cond, uncond) = both.split_at(x.len());
                combine(cond, uncond, scale, &mut guided);
                guided.clone()
            }
        };
        if out.len() != x.len() {
            return Err(ReferenceError::Backend(format!("the network returned {} values for {}", out.len(), x.len())));
        }
        if out.iter().any(|v| !v.is_finite()) {
            return Err(ReferenceError::NonFinite { step: i, timestep: t });
        }
        let noise = if scheduler.needs_noise(i) {
            stream.fill(&mut z);
            Some(z.as_slice())
        } else {
            None
        };
        scheduler.step(i, &out, &mut x, noise);
    }
    Ok(ReferenceSample { seed, x_t, x0: x })
}

/// Everything `train sample` computed, before it is written.
#[derive(Debug, Clone)]
pub struct ReferenceRun {
    /// The metadata sampling used: the ONNX file's when given, else the run's.
    pub meta: ModelMeta,
    pub scheduler: SamplerSettings,
    pub timesteps: Vec<usize>,
    pub samples: Vec<ReferenceSample>,
    /// With an ONNX file: whether re-exporting the run's EMA weights gives that file's bytes
    /// (i.e. both hold the same weights).
    pub onnx_weights_match: Option<bool>,
    pub class: ClassSetting,
}

/// What to sample from a run: the sampler settings, the seeds (one image each) and the class.
#[derive(Debug, Clone, Copy)]
pub struct ReferenceRequest<'a> {
    pub settings: &'a SamplerSettings,
    pub seeds: &'a [u64],
    pub class: ClassSetting,
}

/// Loads the run's EMA weights on backend `B` and samples every seed. `onnx` (bytes and
/// parsed metadata of an exported model) must describe the same run; its metadata then drives
/// the scheduler, exactly as in the runtime. `progress(done, total)` runs after each seed.
pub fn run_reference<B: Backend>(
    run_dir: &Path,
    model_name: String,
    onnx: Option<(&[u8], &ModelMeta)>,
    request: ReferenceRequest,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<ReferenceRun, ReferenceError> {
    let ReferenceRequest { settings, seeds, class } = request;
    let (model, state) = load_ema::<B>(run_dir, device)?;
    let run_meta = meta_from_run(&state, model_name)?;
    let (meta, onnx_weights_match) = match onnx {
        Some((bytes, onnx_meta)) => {
            check_compatible(&run_meta, onnx_meta)?;
            let same = export_onnx(&model, &state.config.model, onnx_meta).map(|b| b == bytes).unwrap_or(false);
            (onnx_meta.clone(), Some(same))
        }
        None => (run_meta, None),
    };
    class.mode(&meta)?;
    let timesteps = build_scheduler(&meta.schedule, settings)?.timesteps().to_vec();
    let mut samples = Vec::with_capacity(seeds.len());
    for (k, &seed) in seeds.iter().enumerate() {
        samples.push(sample_seed_with_class(&model, &meta, settings, seed, class, device)?);
        progress(k + 1, seeds.len());
    }
    Ok(ReferenceRun { meta, scheduler: settings.clone(), timesteps, samples, onnx_weights_match, class })
}
