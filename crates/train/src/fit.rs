//! The training loop: Adam with linear warm-up, global gradient-norm clipping, an EMA copy of
//! the weights, uniform timesteps, MSE against core's `training_target`, and checkpoints that
//! make `--resume` continue bit-exactly.
//!
//! Exact resume rests on one rule: everything random in step `s` is a pure function of
//! `(seed, s)`. The batch comes from the dataset's (seed, index) stream, timesteps and noise
//! from CPU streams seeded by (seed, s) (see `noising`), and the backend RNG (dropout) is
//! re-seeded with a hash of (seed, s) before each step. Weights, Adam moments and the EMA are
//! saved at f32 precision, so the state after loading equals the state before saving.
//! Class-conditional runs add the batch's labels, with label dropout drawn from a stream seeded
//! by (seed, s) as well (see `labels`).

pub mod clip;
pub mod config;
pub mod ema;
pub mod labels;
pub mod noising;
pub mod plot;
pub mod run_files;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};


use crate::checkpoint::{self, CheckpointError, MODEL_FILE, OPTIM_FILE};
use edgediff_data::rng::mix;
use edgediff_data::{DataError, Dataset};
use crate::import::OnnxWeights;
use crate::unet::{UNet, UNetConfig};

pub use config::{FitConfig, FitOverrides, RunState};

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{run} already holds a run (checkpoint at step {step}): pass --resume to continue it, or choose another --out")]
    RunExists { run: PathBuf, step: u64 },
    #[error("loss is {loss} at step {step}: training diverged (last good checkpoint: step {last_saved}); try a lower --lr")]
    Diverged { step: u64, loss: f32, last_saved: u64 },
    #[error("backend error: {0}")]
    Backend(String),
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
}

/// How the caller wants the loop to behave (not part of the run's identity).
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// Set (e.g. by a Ctrl-C handler) to finish the current step, checkpoint and return.
    pub stop: Arc<AtomicBool>,
    /// Draw an indicatif progress bar (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Print a line per checkpoint and the start/end summary on stderr.
    pub verbose: bool,
}

/// What a call to [`fit`] did.
#[derive(Debug, Clone)]
pub struct FitSummary {
    pub run_dir: PathBuf,
    pub params: usize,
    pub start_step: u64,
    pub final_step: u64,
    pub last_loss: Option<f32>,
    /// Mean wall time per step of this session, excluding the first step (which pays one-off
    /// costs such as kernel selection); `None` with fewer than two steps.
    pub seconds_per_step: Option<f64>,
    pub images_per_second: Option<f64>,
    pub interrupted: bool,
}

const INIT_TAG: u64 = 0x494E_4954;
const STEP_TAG: u64 = 0x5354_4550;

/// Forces burn's lazily initialised parameters to materialise now, while the init seed is in
/// effect, rather than at the first forward pass under a step seed.
struct Materialise;
impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

fn log(opts: &FitOptions, bar: &indicatif::ProgressBar, msg: String) {
    if opts.verbose {
        bar.suspend(|| eprintln!("{msg}"));
    }
}

/// Trains into `run_dir`: a new run from `overrides`, or (`resume`) the run already there,
/// continued to its (possibly raised) `--steps`.
pub fn fit<B: AutodiffBackend>(
    run_dir: &Path,
    overrides: &FitOverrides,
    resume: bool,
    device: &B::Device,
    opts: &FitOptions,
) -> Result<FitSummary, FitError> {
    let existing = match run_files::load_state(run_dir) {
        Ok(found) => Some(found),
        Err(FitError::Checkpoint(CheckpointError::NoCheckpoint(_))) => None,
        Err(e) => return Err(e),
    };
    let (mut cfg, resumed, data) = match (resume, existing) {
        (true, Some((state, dir))) => {
            let cfg = FitConfig::resumed(&state.config, overrides)?;
            let data = Dataset::open(&cfg.data, cfg.model.image_size)?;
            if cfg.model.num_classes.is_some() && data.class_names() != state.class_names {
                return Err(FitError::Config(format!(
                    "--resume: {} now has the classes [{}], the conditional run was trained on [{}]",
                    cfg.data,
                    data.class_names().join(", "),
                    state.class_names.join(", ")
                )));
            }
            (cfg, Some((state, dir)), data)
        }
        (true, None) => return Err(CheckpointError::NoCheckpoint(run_dir.to_path_buf()).into()),
        (false, Some((state, _))) => return Err(FitError::RunExists { run: run_dir.to_path_buf(), step: state.step }),
        (false, None) => {
            // The dataset first: a conditional run takes its classes from it.
            let spec = overrides.data.as_deref().ok_or_else(|| FitError::Config("--data is required for a new run".into()))?;
            let data = Dataset::open(spec, overrides.image_size.unwrap_or_else(|| UNetConfig::new().image_size))?;
            (FitConfig::from_overrides(overrides, &data.class_names())?, None, data)
        }
    };
    checkpoint::create_run_dir(run_dir)?;
    let kind = cfg.prediction_type()?;
    let schedule = cfg.model_schedule()?.noise_schedule().map_err(|e| FitError::Config(e.to_string()))?;

    B::seed(device, mix(&[cfg.seed, INIT_TAG]));
    let mut model: UNet<B> = cfg.model.init::<B>(device);
    model.visit(&mut Materialise);
    if let (None, Some(path)) = (&resumed, &overrides.init_from) {
        let weights = OnnxWeights::read(path)?;
        weights.check_matches(&cfg, &data.class_names())?;
        model = weights.load_into(model, &cfg.model)?;
        cfg.init_from = Some(weights.provenance());
    }
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<B, UNet<B>>();
    let (mut ema, mut state) = match resumed {
        Some((state, dir)) => {
            model = model.load_record(run_files::load_record::<B, _>(&dir, MODEL_FILE, device)?);
            optim = optim.load_record(run_files::load_record::<B, _>(&dir, OPTIM_FILE, device)?);
            let ema = cfg.model.init::<B::InnerBackend>(device);
            let ema = ema.load_record(run_files::load_record::<B::InnerBackend, _>(&dir, checkpoint::EMA_FILE, device)?);
            (ema, RunState { config: cfg.clone(), ..state })
        }
        None => {
            let state = RunState {
                format: config::STATE_FORMAT,
                step: 0,
                config: cfg.clone(),
                losses: Vec::new(),
                train_seconds: 0.0,
                class_names: data.class_names(),
            };
            (model.valid(), state)
        }
    };
    let params = model.num_params();
    let (c, n) = (cfg.model.in_channels, cfg.model.image_size);
    let start_step = state.step;

    let bar = if opts.progress && start_step < cfg.steps {
        indicatif::ProgressBar::new(cfg.steps)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(start_step);
    let conditioning = match cfg.model.num_classes {
        Some(k) => format!(" | conditional on {k} classes, label dropout {}", cfg.label_dropout),
        None => String::new(),
    };
    log(opts, &bar, format!(
        "{}{conditioning} | {} parameters | {} backend | {}",
        data.describe(), params, B::name(device),
        if start_step > 0 { format!("resuming at step {start_step}/{}", cfg.steps) } else { format!("{} steps", cfg.steps) }
    ));

    let session = Instant::now();
    let base_seconds = state.train_seconds;
    // Seconds spent writing checkpoints, left out of the s/step figures.
    let mut saving = 0.0f64;
    let mut after_first: Option<Instant> = None;
    let mut last_saved = start_step;
    let mut interrupted = false;
    while state.step < cfg.steps {
        let step = state.step;
        B::seed(device, mix(&[cfg.seed, step, STEP_TAG]));
        let batch = data.batch(cfg.seed, step, cfg.batch);
        let noisy = noising::noisy_batch(&batch.images, cfg.batch, cfg.seed, step, &schedule, kind);
        let shape = [cfg.batch, c, n, n];
        let x_t = Tensor::<B, 4>::from_data(TensorData::new(noisy.x_t, shape), device);
        let t = Tensor::<B, 1>::from_data(TensorData::new(noisy.timesteps, [cfg.batch]), device);
        let target = Tensor::<B, 4>::from_data(TensorData::new(noisy.target, shape), device);

        let labels = cfg.model.num_classes.map(|k| {
            let l = labels::training_labels(&batch.labels, k, cfg.label_dropout, cfg.seed, step);
            Tensor::<B, 1, Int>::from_data(TensorData::new(l, [cfg.batch]), device)
        });

        let out = model.forward(x_t, t, labels);
        let loss = out.sub(target).square().mean();
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            bar.abandon();
            return Err(FitError::Diverged { step: step + 1, loss: loss_value, last_saved });
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let grad_norm = clip::clip_global_norm::<B, _>(&model, &mut grads, cfg.grad_clip);
        model = optim.step(cfg.lr_at(step), model, grads);
        ema = ema::update(ema, &model.valid(), ema::effective_decay(cfg.ema, step))
            .map_err(|n| FitError::Backend(format!("EMA and model disagree on {n} parameters")))?;

        state.step += 1;
        state.losses.push(loss_value);
        if after_first.is_none() {
            after_first = Some(Instant::now());
        }
        let done_now = state.step - start_step;
        let rate = after_first
            .filter(|_| done_now > 1)
            .map(|t0| (t0.elapsed().as_secs_f64() - saving).max(0.0) / (done_now - 1) as f64);
        bar.set_position(state.step);
        bar.set_message(format!(
            "loss {loss_value:.4} |g| {grad_norm:.2}{}",
            rate.map(|s| format!(" {:.1} img/s", cfg.batch as f64 / s)).unwrap_or_default()
        ));

        let stop = opts.stop.load(Ordering::SeqCst);
        if stop || state.step % cfg.checkpoint_every == 0 || state.step == cfg.steps {
            state.train_seconds = base_seconds + session.elapsed().as_secs_f64();
            let saved_at = Instant::now();
            let dir = run_files::save_checkpoint(
                run_dir,
                &state,
                checkpoint::record_to_bytes::<B, _>(model.clone().into_record(), "model")?,
                checkpoint::record_to_bytes::<B, _>(optim.to_record(), "optimizer")?,
                checkpoint::record_to_bytes::<B::InnerBackend, _>(ema.clone().into_record(), "EMA")?,
            )?;
            last_saved = state.step;
            saving += saved_at.elapsed().as_secs_f64();
            log(opts, &bar, format!(
                "step {}/{} loss {loss_value:.5}{} | checkpoint {} ({:.1} s)",
                state.step, cfg.steps,
                rate.map(|s| format!(" | {s:.3} s/step, {:.1} img/s", cfg.batch as f64 / s)).unwrap_or_default(),
                dir.display(), saved_at.elapsed().as_secs_f64()
            ));
            if stop {
                interrupted = state.step < cfg.steps;
                break;
            }
        }
    }
    bar.finish_and_clear();
    let done_now = state.step - start_step;
    let seconds_per_step = after_first
        .filter(|_| done_now > 1)
        .map(|t0| (t0.elapsed().as_secs_f64() - saving).max(0.0) / (done_now - 1) as f64);
    Ok(FitSummary {
        run_dir: run_dir.to_path_buf(),
        params,
        start_step,
        final_step: state.step,
        last_loss: state.losses.last().copied(),
        seconds_per_step,
        images_per_second: seconds_per_step.map(|s| cfg.batch as f64 / s),
        interrupted,
    })
}
