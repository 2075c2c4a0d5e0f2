//! Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2 with σ² = posterior variance β̃),
//! exactly diffusers' `DDPMScheduler.step` with `variance_type="fixed_small"`.
//!
//! With S < T steps the posterior is taken between consecutive *visited* timesteps: `prev` is
//! the next entry of the timestep list (diffusers' `previous_timestep`; equal to `t - T // S`
//! for `Leading`), and -1 after the last one, where ᾱ_prev = 1. Per step:
//! ```text
//! α_t = ᾱ_t / ᾱ_prev,  β_t = 1 - α_t
//! x0      = prediction(model_output, x_t)             clamped to ±clip_sample if set
//! x_prev  = (sqrt(ᾱ_prev)·β_t / (1-ᾱ_t))·x0 + (sqrt(α_t)·(1-ᾱ_prev) / (1-ᾱ_t))·x_t + σ·z
//! σ²      = max((1-ᾱ_prev)/(1-ᾱ_t) · β_t, 1e-20),  σ = 0 at the last step
//! ```
//! The one deviation: diffusers adds noise whenever t > 0, so at a last step with t > 0
//! (e.g. `Trailing`, or `steps_offset` > 0) it adds sqrt(1e-20)·z = 1e-10·z; we add nothing,
//! which keeps "the last step is deterministic" true for every spacing.

use crate::prediction::{sqrt_ab, x0_eps};
use crate::scheduler::{check_step_args, update_each};
use crate::{ModelSchedule, NoiseSchedule, PredictionType, Scheduler, StepInfo};

/// One step's precomputed coefficients.
#[derive(Debug, Clone, Copy)]
struct DdpmStep {
    info: StepInfo,
    sa: f32,
    sb: f32,
    /// Weights of x0 and x_t in the posterior mean.
    coeff_x0: f32,
    coeff_xt: f32,
}

/// diffusers' `DDPMScheduler` (fixed_small) after `set_timesteps(S)`.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    timesteps: Vec<usize>,
    steps: Vec<DdpmStep>,
    prediction_type: PredictionType,
    clip: Option<f32>,
}

impl DdpmScheduler {
    /// `schedule` is `model`'s; `timesteps` must come from `spacing::timesteps` for it (validated).
    pub(crate) fn new(model: &ModelSchedule, schedule: &NoiseSchedule, timesteps: Vec<usize>) -> Self {
        let ac = &schedule.alphas_cumprod;
        let steps = timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let prev = timesteps.get(i + 1).map_or(-1, |&p| p as i64);
                let ab = ac[t];
                let ab_prev = if prev >= 0 { ac[prev as usize] } else { 1.0 };
                let (beta_prod, beta_prod_prev) = (1.0 - ab, 1.0 - ab_prev);
                let alpha = ab / ab_prev;
                let beta = 1.0 - alpha;
                let coeff_x0 = (ab_prev.sqrt() * beta) / beta_prod;
                let coeff_xt = alpha.sqrt() * beta_prod_prev / beta_prod;
                let sigma = if prev < 0 { 0.0 } else { ((1.0 - ab_prev) / (1.0 - ab) * beta).max(1e-20).sqrt() };
                let (sa, sb) = sqrt_ab(ab);
                let info = StepInfo { timestep: t, prev_timestep: prev, alpha_bar: ab, alpha_bar_prev: ab_prev, sigma };
                DdpmStep { info, sa, sb, coeff_x0, coeff_xt }
            })
            .collect();
        DdpmScheduler { timesteps, steps, prediction_type: model.prediction_type, clip: model.clip_sample }
    }
}

impl Scheduler for DdpmScheduler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn info(&self, i: usize) -> StepInfo {
        self.steps[i].info
    }

    fn step(&mut self, i: usize, model_output: &[f32], sample: &mut [f32], noise: Option<&[f32]>) {
        let c = self.steps[i];
        check_step_args(c.info.sigma > 0.0, model_output, sample, noise);
        let kind = self.prediction_type;
        let mean = |mo: f32, x: f32| {
            let (mut x0, _) = x0_eps(kind, mo, x, c.sa, c.sb);
            if let Some(r) = self.clip {
                x0 = x0.clamp(-r, r);
            }
            c.coeff_x0 * x0 + c.coeff_xt * x
        };
        update_each(sample, model_output, noise, c.info.sigma, mean);
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        build_scheduler, BetaSchedule, ModelSchedule, PredictionType, SamplerSettings, SchedulerKind, Spacing,
    };

    fn model(beta_schedule: BetaSchedule, prediction_type: PredictionType) -> ModelSchedule {
        ModelSchedule { beta_schedule, prediction_type, ..ModelSchedule::default() }
    }

    fn cfg(steps: usize, spacing: Spacing) -> SamplerSettings {
        SamplerSettings { kind: SchedulerKind::Ddpm, spacing, set_alpha_to_one: false, ..SamplerSettings::ddim(steps) }
    }

    #[test]
    fn full_length_ddpm_uses_the_training_betas() {
        let m = ModelSchedule::default();
        let s = m.noise_schedule().unwrap();
        let sched = build_scheduler(&m, &cfg(1000, Spacing::Leading)).unwrap();
        for i in 0..999 {
            let info = sched.info(i);
            let t = info.timestep;
            assert_eq!((t, info.prev_timestep), (999 - i, t as i64 - 1));
            // β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t)·β_t, with β_t re-derived from ᾱ in f32 as diffusers does.
            let beta = f64::from(s.betas[t]);
            let want = (1.0 - f64::from(s.alphas_cumprod[t - 1])) / (1.0 - f64::from(s.alphas_cumprod[t])) * beta;
            let got = f64::from(info.sigma).powi(2);
            assert!((got - want).abs() <= want * 2e-3, "t={t}: {got} vs {want}");
        }
    }

    #[test]
    fn the_last_step_adds_no_noise_for_every_spacing() {
        let m = model(BetaSchedule::SquaredCosCapV2, PredictionType::Epsilon);
        for spacing in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
            let mut sched = build_scheduler(&m, &cfg(10, spacing)).unwrap();
            for i in 0..9 {
                assert!(sched.needs_noise(i), "{spacing} step {i}");
                assert_eq!(sched.info(i).prev_timestep, sched.timesteps()[i + 1] as i64);
            }
            let last = sched.info(9);
            assert_eq!((last.prev_timestep, last.alpha_bar_prev, last.sigma), (-1, 1.0, 0.0));
            assert!(!sched.needs_noise(9));
            // ᾱ_prev = 1 makes the last step return x0 itself: here (x - sb·ε)/sa.
            let mut x = vec![0.25f32];
            sched.step(9, &[0.5], &mut x, None);
            let (x0, _) = crate::to_x0_eps(PredictionType::Epsilon, 0.5, 0.25, last.alpha_bar);
            assert!((x[0] - x0).abs() <= 1e-6 * x0.abs().max(1.0), "{spacing}: {} vs {x0}", x[0]);
        }
    }

    #[test]
    fn noise_enters_scaled_by_sigma() {
        let m = model(BetaSchedule::Linear, PredictionType::VPrediction);
        let mut a = build_scheduler(&m, &cfg(20, Spacing::Leading)).unwrap();
        let mut b = build_scheduler(&m, &cfg(20, Spacing::Leading)).unwrap();
        let (mo, x) = ([0.1f32, -0.4, 0.9], [1.0f32, 0.5, -2.0]);
        let (mut xa, mut xb) = (x, x);
        a.step(3, &mo, &mut xa, Some(&[0.0, 0.0, 0.0]));
        b.step(3, &mo, &mut xb, Some(&[1.0, -2.0, 0.5]));
        let sigma = a.info(3).sigma;
        assert!(sigma > 0.01);
        for (k, z) in [1.0f32, -2.0, 0.5].into_iter().enumerate() {
            assert_eq!(xb[k], xa[k] + sigma * z);
        }
    }

    #[test]
    #[should_panic(expected = "adds none")]
    fn noise_for_a_deterministic_step_is_a_caller_bug() {
        let mut sched = build_scheduler(&ModelSchedule::default(), &cfg(10, Spacing::Leading)).unwrap();
        sched.step(9, &[0.0], &mut [0.0], Some(&[1.0]));
    }
}
