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
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use edgediff_core::{NoiseSchedule, PredictionType};

use crate::checkpoint::{self, CheckpointError, MODEL_FILE, OPTIM_FILE};
use crate::import::OnnxWeights;
use crate::unet::{UNet, UNetConfig};
use edgediff_data::rng::mix;
use edgediff_data::{DataError, Dataset};

pub use config::{FitConfig, FitOverrides, RunState};

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "{run} already holds a run (checkpoint at step {step}): pass --resume to continue it, or choose another --out"
    )]
    RunExists { run: PathBuf, step: u64 },
    #[error(
        "loss is {loss} at step {step}: training diverged (last good checkpoint: step {last_saved}); try a lower --lr"
    )]
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
    let OpenedRun { cfg, resumed, data } = open_run(run_dir, overrides, resume)?;
    checkpoint::create_run_dir(run_dir)?;
    let mut run = Training::<B, _>::start(cfg, resumed, overrides, &data, device)?;
    let start_step = run.state.step;
    let bar = progress_bar(opts, start_step, run.cfg.steps);
    log(opts, &bar, run.describe(&data, device));

    let mut clock = Clock::new(start_step, run.state.train_seconds);
    let mut interrupted = false;
    while run.state.step < run.cfg.steps {
        let (loss, grad_norm);
        (run, loss, grad_norm) = run.step(&data, device).inspect_err(|_| bar.abandon())?;
        let rate = clock.seconds_per_step(run.state.step);
        bar.set_position(run.state.step);
        bar.set_message(format!(
            "loss {loss:.4} |g| {grad_norm:.2}{}",
            rate.map(|s| format!(" {:.1} img/s", run.cfg.batch as f64 / s)).unwrap_or_default()
        ));
        let stop = opts.stop.load(Ordering::SeqCst);
        if stop || run.state.step.is_multiple_of(run.cfg.checkpoint_every) || run.state.step == run.cfg.steps {
            let saved_at = Instant::now();
            let dir = run.save(run_dir, clock.train_seconds())?;
            clock.saving += saved_at.elapsed().as_secs_f64();
            log(opts, &bar, run.checkpoint_line(loss, rate, &dir, saved_at.elapsed().as_secs_f64()));
            if stop {
                interrupted = run.state.step < run.cfg.steps;
                break;
            }
        }
    }
    bar.finish_and_clear();
    let seconds_per_step = clock.seconds_per_step(run.state.step);
    Ok(FitSummary {
        run_dir: run_dir.to_path_buf(),
        params: run.model.num_params(),
        start_step,
        final_step: run.state.step,
        last_loss: run.state.losses.last().copied(),
        seconds_per_step,
        images_per_second: seconds_per_step.map(|s| run.cfg.batch as f64 / s),
        interrupted,
    })
}

/// A run about to train: its settings, its saved state and checkpoint directory if it is
/// resumed, and its data.
struct OpenedRun {
    cfg: FitConfig,
    resumed: Option<(RunState, PathBuf)>,
    data: Dataset,
}

/// `--resume` needs a run and continues its settings; a new run needs an empty `run_dir`.
fn open_run(run_dir: &Path, overrides: &FitOverrides, resume: bool) -> Result<OpenedRun, FitError> {
    let existing = match run_files::load_state(run_dir) {
        Ok(found) => Some(found),
        Err(FitError::Checkpoint(CheckpointError::NoCheckpoint(_))) => None,
        Err(e) => return Err(e),
    };
    match (resume, existing) {
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
            Ok(OpenedRun { cfg, resumed: Some((state, dir)), data })
        }
        (true, None) => Err(CheckpointError::NoCheckpoint(run_dir.to_path_buf()).into()),
        (false, Some((state, _))) => Err(FitError::RunExists { run: run_dir.to_path_buf(), step: state.step }),
        (false, None) => {
            // The dataset first: a conditional run takes its classes from it.
            let spec =
                overrides.data.as_deref().ok_or_else(|| FitError::Config("--data is required for a new run".into()))?;
            let data = Dataset::open(spec, overrides.image_size.unwrap_or_else(|| UNetConfig::new().image_size))?;
            Ok(OpenedRun { cfg: FitConfig::from_overrides(overrides, &data.class_names())?, resumed: None, data })
        }
    }
}

fn progress_bar(opts: &FitOptions, start_step: u64, steps: u64) -> indicatif::ProgressBar {
    let bar = if opts.progress && start_step < steps {
        indicatif::ProgressBar::new(steps)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(start_step);
    bar
}

/// The session's timing: training seconds across sessions, and seconds per step of this one
/// without the first step (one-off costs such as kernel selection) and checkpoint writes.
struct Clock {
    session: Instant,
    base_seconds: f64,
    start_step: u64,
    after_first: Option<Instant>,
    /// Seconds spent writing checkpoints.
    saving: f64,
}

impl Clock {
    fn new(start_step: u64, base_seconds: f64) -> Clock {
        Clock { session: Instant::now(), base_seconds, start_step, after_first: None, saving: 0.0 }
    }

    /// Seconds per step so far, once `step` is at least two steps into the session.
    fn seconds_per_step(&mut self, step: u64) -> Option<f64> {
        let first = *self.after_first.get_or_insert_with(Instant::now);
        let done = step - self.start_step;
        (done > 1).then(|| (first.elapsed().as_secs_f64() - self.saving).max(0.0) / (done - 1) as f64)
    }

    /// Training seconds of the run: earlier sessions plus this one.
    fn train_seconds(&self) -> f64 {
        self.base_seconds + self.session.elapsed().as_secs_f64()
    }
}

/// A run being trained: its settings, the model, Adam, the EMA copy and the saved state.
struct Training<B: AutodiffBackend, O: Optimizer<UNet<B>, B>> {
    cfg: FitConfig,
    kind: PredictionType,
    schedule: NoiseSchedule,
    model: UNet<B>,
    optim: O,
    ema: UNet<B::InnerBackend>,
    state: RunState,
    last_saved: u64,
}

impl<B: AutodiffBackend> Training<B, OptimizerAdaptor<Adam, UNet<B>, B>> {
    /// The model initialised under the run's init seed, then warm-started (`--init-from`) or
    /// loaded from the resumed checkpoint with Adam and the EMA.
    fn start(
        mut cfg: FitConfig,
        resumed: Option<(RunState, PathBuf)>,
        overrides: &FitOverrides,
        data: &Dataset,
        device: &B::Device,
    ) -> Result<Self, FitError> {
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
        let (ema, state) = match resumed {
            Some((state, dir)) => {
                model = model.load_record(run_files::load_record::<B, _>(&dir, MODEL_FILE, device)?);
                optim = optim.load_record(run_files::load_record::<B, _>(&dir, OPTIM_FILE, device)?);
                let ema = cfg.model.init::<B::InnerBackend>(device);
                let ema =
                    ema.load_record(run_files::load_record::<B::InnerBackend, _>(&dir, checkpoint::EMA_FILE, device)?);
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
        let last_saved = state.step;
        Ok(Training { cfg, kind, schedule, model, optim, ema, state, last_saved })
    }
}

impl<B: AutodiffBackend, O: Optimizer<UNet<B>, B>> Training<B, O> {
    /// The start line: data, classes, parameters, backend, where the run stands.
    fn describe(&self, data: &Dataset, device: &B::Device) -> String {
        let (cfg, start_step) = (&self.cfg, self.state.step);
        let conditioning = match cfg.model.num_classes {
            Some(k) => format!(" | conditional on {k} classes, label dropout {}", cfg.label_dropout),
            None => String::new(),
        };
        let at = if start_step > 0 {
            format!("resuming at step {start_step}/{}", cfg.steps)
        } else {
            format!("{} steps", cfg.steps)
        };
        format!(
            "{}{conditioning} | {} parameters | {} backend | {at}",
            data.describe(),
            self.model.num_params(),
            B::name(device)
        )
    }

    /// One optimiser step (everything random in it a function of (seed, step)); returns the
    /// run after it, the loss and the gradient norm before clipping. Takes the run by value so
    /// that the optimiser and the EMA own the only handles to the weights they update.
    fn step(mut self, data: &Dataset, device: &B::Device) -> Result<(Self, f32, f32), FitError> {
        let (cfg, step) = (&self.cfg, self.state.step);
        let (c, n) = (cfg.model.in_channels, cfg.model.image_size);
        B::seed(device, mix(&[cfg.seed, step, STEP_TAG]));
        let batch = data.batch(cfg.seed, step, cfg.batch);
        let noisy = noising::noisy_batch(&batch.images, cfg.batch, cfg.seed, step, &self.schedule, self.kind);
        let shape = [cfg.batch, c, n, n];
        let x_t = Tensor::<B, 4>::from_data(TensorData::new(noisy.x_t, shape), device);
        let t = Tensor::<B, 1>::from_data(TensorData::new(noisy.timesteps, [cfg.batch]), device);
        let target = Tensor::<B, 4>::from_data(TensorData::new(noisy.target, shape), device);
        let labels = cfg.model.num_classes.map(|k| {
            let l = labels::training_labels(&batch.labels, k, cfg.label_dropout, cfg.seed, step);
            Tensor::<B, 1, Int>::from_data(TensorData::new(l, [cfg.batch]), device)
        });

        let out = self.model.forward(x_t, t, labels);
        let loss = out.sub(target).square().mean();
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            return Err(FitError::Diverged { step: step + 1, loss: loss_value, last_saved: self.last_saved });
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let grad_norm = clip::clip_global_norm::<B, _>(&self.model, &mut grads, cfg.grad_clip);
        self.model = self.optim.step(cfg.lr_at(step), self.model, grads);
        self.ema = ema::update(self.ema, &self.model.valid(), ema::effective_decay(cfg.ema, step))
            .map_err(|n| FitError::Backend(format!("EMA and model disagree on {n} parameters")))?;
        self.state.step += 1;
        self.state.losses.push(loss_value);
        Ok((self, loss_value, grad_norm))
    }

    /// Writes a checkpoint of the model, Adam and the EMA; returns its directory.
    fn save(&mut self, run_dir: &Path, train_seconds: f64) -> Result<PathBuf, FitError> {
        self.state.train_seconds = train_seconds;
        let dir = run_files::save_checkpoint(
            run_dir,
            &self.state,
            checkpoint::record_to_bytes::<B, _>(self.model.clone().into_record(), "model")?,
            checkpoint::record_to_bytes::<B, _>(self.optim.to_record(), "optimizer")?,
            checkpoint::record_to_bytes::<B::InnerBackend, _>(self.ema.clone().into_record(), "EMA")?,
        )?;
        self.last_saved = self.state.step;
        Ok(dir)
    }

    fn checkpoint_line(&self, loss: f32, rate: Option<f64>, dir: &Path, seconds: f64) -> String {
        format!(
            "step {}/{} loss {loss:.5}{} | checkpoint {} ({seconds:.1} s)",
            self.state.step,
            self.cfg.steps,
            rate.map(|s| format!(" | {s:.3} s/step, {:.1} img/s", self.cfg.batch as f64 / s)).unwrap_or_default(),
            dir.display(),
        )
    }
}
