//! The sampler-facing interface: a configured scheduler walks x_T → x_0 one step at a time.
//!
//! Schedulers precompute every per-step coefficient when built, so `step` is a single
//! pass over the batch buffer, allocation-free (DPM-Solver++ sizes its history buffer on its
//! first step). Stateless kinds (DDIM, DDPM) ignore `&mut self`; it is there for multistep
//! solvers (DPM-Solver++ 2M) that remember the previous step's x0 prediction.

use std::fmt;
use std::str::FromStr;

use crate::ddim::DdimScheduler;
use crate::ddpm::DdpmScheduler;
use crate::dpm_solver::DpmSolverPP2MScheduler;
use crate::{spacing, CoreError, ModelSchedule, SamplerSettings};

/// Which sampling algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// diffusers `DDIMScheduler` (eta = 0 deterministic, eta = 1 ≈ DDPM).
    Ddim,
    /// diffusers `DDPMScheduler`, `variance_type="fixed_small"` (posterior variance).
    Ddpm,
    /// diffusers `DPMSolverMultistepScheduler`: DPM-Solver++, order 2, midpoint, final σ = 0.
    DpmSolverPP2M,
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Ddpm => "ddpm",
            SchedulerKind::DpmSolverPP2M => "dpmpp2m",
        })
    }
}

impl FromStr for SchedulerKind {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "ddim" => Ok(SchedulerKind::Ddim),
            "ddpm" => Ok(SchedulerKind::Ddpm),
            "dpmpp2m" => Ok(SchedulerKind::DpmSolverPP2M),
            _ => Err(CoreError::UnknownName { what: "scheduler", value: s.into(), expected: "ddim, ddpm, dpmpp2m" }),
        }
    }
}

/// The coefficients of step i, from training timestep `timestep` to `prev_timestep`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    pub timestep: usize,
    /// Negative when the step lands "before" timestep 0 (the final step).
    pub prev_timestep: i64,
    /// ᾱ at `timestep`.
    pub alpha_bar: f32,
    /// ᾱ at `prev_timestep` (the final value when negative).
    pub alpha_bar_prev: f32,
    /// Standard deviation of the fresh noise this step adds (0 = deterministic step).
    pub sigma: f32,
}

/// A configured sampler. Step indices i run over `0..timesteps().len()` in sampling order.
pub trait Scheduler: Send {
    /// Descending training timesteps; the network is evaluated at `timesteps()[i]` in step i.
    fn timesteps(&self) -> &[usize];
    /// Coefficients of step i. DDIM: sigma = eta·sqrt(variance); DDPM: sqrt of the posterior
    /// variance, 0 at the last step; DPM-Solver++: 0. Panics if i is out of range.
    fn info(&self, i: usize) -> StepInfo;
    /// Whether step i consumes fresh noise (sigma > 0).
    fn needs_noise(&self, i: usize) -> bool {
        self.info(i).sigma > 0.0
    }
    /// x_t → x_prev in place over a whole batch buffer. `noise` holds `sample.len()` standard
    /// normals exactly when `needs_noise(i)`, else it is `None`.
    ///
    /// Panics (caller bug, never user input) if the lengths differ or `noise` disagrees with
    /// `needs_noise(i)`: either would silently desynchronise the documented noise stream.
    fn step(&mut self, i: usize, model_output: &[f32], sample: &mut [f32], noise: Option<&[f32]>);
}

/// Checks `settings` against `model` and builds the scheduler they describe together.
pub fn build_scheduler(model: &ModelSchedule, settings: &SamplerSettings) -> Result<Box<dyn Scheduler>, CoreError> {
    if !(0.0..=1.0).contains(&settings.eta) {
        return Err(CoreError::BadEta(settings.eta));
    }
    model.validate()?;
    let schedule = model.noise_schedule()?;
    let t = schedule.num_train_timesteps();
    let (spacing, s, offset) = (settings.spacing, settings.steps, settings.steps_offset);
    Ok(match settings.kind {
        SchedulerKind::Ddim => {
            Box::new(DdimScheduler::new(model, settings, &schedule, spacing::timesteps(spacing, t, s, offset)?))
        }
        SchedulerKind::Ddpm => {
            Box::new(DdpmScheduler::new(model, &schedule, spacing::timesteps(spacing, t, s, offset)?))
        }
        SchedulerKind::DpmSolverPP2M => {
            let mut schedule = schedule;
            if model.rescale_betas_zero_snr {
                // diffusers' DPMSolverMultistepScheduler: ᾱ_T = 0 would make σ_T/α_T infinite, so it
                // takes the smallest positive f16 instead.
                if let Some(last) = schedule.alphas_cumprod.last_mut() {
                    *last = 2f32.powi(-24);
                }
            }
            Box::new(DpmSolverPP2MScheduler::new(model, &schedule, spacing::dpm_timesteps(spacing, t, s, offset)?))
        }
    })
}

/// Every step's coefficients, one column per field (what `sampler schedule --json` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleTable {
    pub timesteps: Vec<usize>,
    pub alpha_bar: Vec<f32>,
    pub alpha_bar_prev: Vec<f32>,
    pub sigma: Vec<f32>,
}

/// The coefficient table of the scheduler `settings` and `model` describe.
pub fn schedule_table(model: &ModelSchedule, settings: &SamplerSettings) -> Result<ScheduleTable, CoreError> {
    let sched = build_scheduler(model, settings)?;
    let infos: Vec<StepInfo> = (0..sched.timesteps().len()).map(|i| sched.info(i)).collect();
    Ok(ScheduleTable {
        timesteps: infos.iter().map(|s| s.timestep).collect(),
        alpha_bar: infos.iter().map(|s| s.alpha_bar).collect(),
        alpha_bar_prev: infos.iter().map(|s| s.alpha_bar_prev).collect(),
        sigma: infos.iter().map(|s| s.sigma).collect(),
    })
}

/// `x = update(model_output, x)` for every element, then `+ sigma · z` where `noise` is given:
/// the per-element form of the DDIM and DDPM steps (plain f32, in this order).
pub(crate) fn update_each(
    sample: &mut [f32],
    model_output: &[f32],
    noise: Option<&[f32]>,
    sigma: f32,
    update: impl Fn(f32, f32) -> f32,
) {
    match noise {
        Some(z) => {
            for ((x, &mo), &z) in sample.iter_mut().zip(model_output).zip(z) {
                *x = update(mo, *x) + sigma * z;
            }
        }
        None => {
            for (x, &mo) in sample.iter_mut().zip(model_output) {
                *x = update(mo, *x);
            }
        }
    }
}

/// Shared length checks of `Scheduler::step` (see its panics section).
pub(crate) fn check_step_args(needs_noise: bool, model_output: &[f32], sample: &[f32], noise: Option<&[f32]>) {
    assert_eq!(model_output.len(), sample.len(), "model_output and sample lengths differ");
    match noise {
        Some(z) => {
            assert!(needs_noise, "noise passed to a step that adds none");
            assert_eq!(z.len(), sample.len(), "noise and sample lengths differ");
        }
        None => assert!(!needs_noise, "this step needs noise but none was passed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: SchedulerKind, steps: usize) -> SamplerSettings {
        SamplerSettings { kind, ..SamplerSettings::ddim(steps) }
    }

    const ALL: [SchedulerKind; 3] = [SchedulerKind::Ddim, SchedulerKind::Ddpm, SchedulerKind::DpmSolverPP2M];

    fn linear() -> ModelSchedule {
        ModelSchedule::default()
    }

    #[test]
    fn names_round_trip() {
        for k in ALL {
            assert_eq!(k.to_string().parse::<SchedulerKind>().unwrap(), k);
        }
        let err = "dpm".parse::<SchedulerKind>().unwrap_err();
        assert!(matches!(err, CoreError::UnknownName { .. }) && err.to_string().contains("dpmpp2m"), "{err}");
    }

    #[test]
    fn invalid_configs_are_errors_naming_the_value() {
        let mut s = linear();
        let mut c = cfg(SchedulerKind::Ddim, 0);
        assert!(matches!(build_scheduler(&s, &c), Err(CoreError::BadSteps { steps: 0, .. })));
        c.steps = 1001;
        assert!(matches!(build_scheduler(&s, &c), Err(CoreError::BadSteps { steps: 1001, .. })));
        c.steps = 10;
        for eta in [-0.1, 1.5, f32::NAN] {
            c.eta = eta;
            let err = build_scheduler(&s, &c).err().unwrap();
            assert!(matches!(err, CoreError::BadEta(_)), "{err}");
        }
        c.eta = 1.0;
        for r in [0.0, -1.0, f32::INFINITY] {
            s.clip_sample = Some(r);
            assert!(matches!(build_scheduler(&s, &c).err().unwrap(), CoreError::BadClip(_)));
        }
        s.clip_sample = Some(1.0);
        assert!(build_scheduler(&s, &c).is_ok());
    }

    #[test]
    fn table_matches_info_and_timesteps() {
        let s = linear();
        let alphas_cumprod = s.noise_schedule().unwrap().alphas_cumprod;
        for kind in ALL {
            let mut c = cfg(kind, 50);
            c.eta = 0.5;
            let table = schedule_table(&s, &c).unwrap();
            let sched = build_scheduler(&s, &c).unwrap();
            assert_eq!(table.timesteps, sched.timesteps());
            assert_eq!(table.timesteps.len(), 50);
            for i in 0..50 {
                let info = sched.info(i);
                assert_eq!(info.timestep, table.timesteps[i]);
                assert_eq!(info.alpha_bar, alphas_cumprod[info.timestep]);
                assert_eq!((table.alpha_bar_prev[i], table.sigma[i]), (info.alpha_bar_prev, info.sigma));
            }
        }
    }
}
