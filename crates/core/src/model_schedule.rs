//! What a model file says about its diffusion process, apart from what the user asks of a run
//! ([`crate::SamplerSettings`]): the training noise schedule, what the network predicts and
//! whether its x0 prediction is clipped. A model is trained for one of these and samples
//! correctly only with it, so it travels in the model file (`edgediff.*` metadata, see
//! [`crate::meta`]) and is never a sampler flag.

use crate::{BetaSchedule, CoreError, NoiseSchedule, PredictionType};

/// The diffusion process a model was trained for. Field names are diffusers' scheduler config
/// keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSchedule {
    /// T, the number of training timesteps.
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    /// Ends of the linear and scaled-linear beta schedules (ignored by the cosine one).
    pub beta_start: f32,
    pub beta_end: f32,
    /// The betas themselves (T of them), in place of `beta_schedule` (diffusers' `trained_betas`).
    pub trained_betas: Option<Vec<f32>>,
    /// Betas rescaled so that ᾱ at the last timestep is 0, a zero terminal SNR (Lin et al.,
    /// "Common Diffusion Noise Schedules and Sample Steps are Flawed"; diffusers'
    /// `rescale_betas_zero_snr`).
    pub rescale_betas_zero_snr: bool,
    pub prediction_type: PredictionType,
    /// Clamp the predicted x0 to ±this (diffusers `clip_sample=True, clip_sample_range=r`);
    /// `None` = no clipping.
    pub clip_sample: Option<f32>,
    /// Whether DPM-Solver++ clamps x0 by `clip_sample` too. Our own models: yes (measured
    /// better on undertrained models, see `dpm_solver`). diffusers' DPM-Solver never clamps, so
    /// models described by diffusers' configuration files say no.
    pub dpm_clip_sample: bool,
}

impl Default for ModelSchedule {
    /// The DDPM paper's process: T = 1000, betas linear from 1e-4 to 0.02, ε-prediction, no clipping.
    fn default() -> Self {
        ModelSchedule {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::Linear,
            beta_start: 1e-4,
            beta_end: 0.02,
            trained_betas: None,
            rescale_betas_zero_snr: false,
            prediction_type: PredictionType::Epsilon,
            clip_sample: None,
            dpm_clip_sample: true,
        }
    }
}

impl ModelSchedule {
    /// The betas and ᾱ of this process, exactly as diffusers builds them.
    pub fn noise_schedule(&self) -> Result<NoiseSchedule, CoreError> {
        let schedule = match &self.trained_betas {
            Some(betas) => NoiseSchedule::from_betas(betas.clone())?,
            None => NoiseSchedule::new(self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end)?,
        };
        Ok(if self.rescale_betas_zero_snr { schedule.rescaled_to_zero_terminal_snr() } else { schedule })
    }

    /// Checks the values a sampler relies on (the clip range; the betas are checked by
    /// [`ModelSchedule::noise_schedule`]).
    pub fn validate(&self) -> Result<(), CoreError> {
        match self.clip_sample {
            Some(r) if !(r.is_finite() && r > 0.0) => Err(CoreError::BadClip(r)),
            _ => Ok(()),
        }
    }
}
