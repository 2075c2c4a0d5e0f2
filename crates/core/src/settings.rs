//! What the user asks of a sampling run: which solver, how many steps, which timesteps, how
//! much noise. These are the sampler's flags (`sampler --steps --scheduler --spacing --eta ...`)
//! and nothing else; the model's own facts are a [`crate::ModelSchedule`].

use crate::{SchedulerKind, Spacing};

/// A sampling run's settings; field meanings are diffusers' (`num_inference_steps`,
/// `timestep_spacing`, `steps_offset`, `eta`, `set_alpha_to_one`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSettings {
    pub kind: SchedulerKind,
    /// S, the number of denoising steps, in 1..=T.
    pub steps: usize,
    pub spacing: Spacing,
    /// Added to `Leading` timesteps only (diffusers ignores it for the other spacings).
    pub steps_offset: usize,
    /// DDIM's η in [0, 1]: scales the noise each step adds. Checked but unused by DDPM and
    /// DPM-Solver++.
    pub eta: f32,
    /// DDIM: ᾱ "before" timestep 0 is 1 (true) or ᾱ_0 (false). DDPM and DPM-Solver++ always use 1.
    pub set_alpha_to_one: bool,
}

impl Default for SamplerSettings {
    /// `sampler`'s defaults: DDIM, 50 steps, leading spacing, no offset, η = 0, ᾱ before
    /// timestep 0 taken as 1.
    fn default() -> Self {
        SamplerSettings {
            kind: SchedulerKind::Ddim,
            steps: 50,
            spacing: Spacing::Leading,
            steps_offset: 0,
            eta: 0.0,
            set_alpha_to_one: true,
        }
    }
}

impl SamplerSettings {
    /// The defaults with `steps` steps: the deterministic DDIM trajectories calibration,
    /// evaluation and the tests run unless they say otherwise.
    pub fn ddim(steps: usize) -> SamplerSettings {
        SamplerSettings { steps, ..SamplerSettings::default() }
    }
}
