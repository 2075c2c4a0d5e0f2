//! Diffusion maths for edgediff, with no tensor library underneath.
//!
//! Everything here reproduces Hugging Face diffusers' schedulers (`DDIMScheduler`,
//! `DDPMScheduler` with `variance_type="fixed_small"`, `DPMSolverMultistepScheduler` as
//! DPM-Solver++(2M)) number for number, so a model trained with either toolkit samples the same
//! way in both. The parity test
//! (`tests/diffusers_parity.rs`) checks this against fixtures dumped from real diffusers.
//!
//! Determinism: schedule coefficients are computed once (f64 or f32, mirroring torch's own
//! precision); the per-element step arithmetic is plain f32 `+ - * /` and `sqrt`, which IEEE
//! fixes exactly, and Rust never fuses them into FMAs. Transcendental functions (used for the
//! cosine schedule, DPM-Solver's log-SNR coefficients and the Gaussian noise) come from the
//! `libm` crate, a portable software implementation, so results are bit-identical on x86_64
//! and aarch64.

pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod guidance;
pub mod meta;
pub mod model_schedule;
pub mod noise;
pub mod prediction;
pub mod schedule;
pub mod scheduler;
pub mod settings;
pub mod spacing;

pub use guidance::Guidance;
pub use model_schedule::ModelSchedule;
pub use noise::{image_seed, GaussianStream};
pub use prediction::{to_x0_eps, training_target, PredictionType};
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use scheduler::{build_scheduler, schedule_table, ScheduleTable, Scheduler, SchedulerKind, StepInfo};
pub use settings::SamplerSettings;
pub use spacing::{dpm_timesteps, timesteps, Spacing};

/// Everything that can go wrong in this crate: each message names the offending value and
/// what was expected, on one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("model metadata lacks the key `{0}`")]
    MissingMetadata(&'static str),
    #[error("model metadata `{key}` = {value:?}: expected {expected}")]
    BadMetadata { key: &'static str, value: String, expected: &'static str },
    /// A name (beta schedule, spacing, prediction type, scheduler) that is not known.
    #[error("unknown {what} {value:?}: expected one of {expected}")]
    UnknownName { what: &'static str, value: String, expected: &'static str },
    #[error("num_train_timesteps = {0}: expected at least 2")]
    BadTrainTimesteps(usize),
    #[error("beta_start = {beta_start}, beta_end = {beta_end}: expected 0 < beta_start <= beta_end < 1")]
    BadBetas { beta_start: f32, beta_end: f32 },
    #[error("num_inference_steps = {steps}: expected 1..={num_train_timesteps}")]
    BadSteps { steps: usize, num_train_timesteps: usize },
    #[error(
        "steps_offset = {steps_offset} puts timestep {timestep} outside the training range 0..{num_train_timesteps}"
    )]
    TimestepOutOfRange { steps_offset: usize, timestep: usize, num_train_timesteps: usize },
    /// DPM-Solver++ needs strictly decreasing timesteps (it divides by their log-SNR gaps).
    #[error(
        "num_inference_steps = {steps} with {spacing} spacing repeats a timestep of the {num_train_timesteps} \
         training steps: use fewer steps"
    )]
    RepeatedTimestep { spacing: String, steps: usize, num_train_timesteps: usize },
    #[error("eta = {0}: expected a number in [0, 1]")]
    BadEta(f32),
    #[error("clip_sample = {0}: expected a positive finite number (or no clipping)")]
    BadClip(f32),
    #[error("guidance scale {0}: expected a number in 0..=100")]
    BadGuidance(f32),
    #[error("guidance scale {0} needs a class to guide towards")]
    GuidanceWithoutClass(f32),
    /// A `--class` that names no class of the model.
    #[error("class {class:?}: {reason}")]
    UnknownClass { class: String, reason: String },
}
