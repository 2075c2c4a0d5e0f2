//! DDIM (Song et al. 2021), exactly diffusers' `DDIMScheduler.step`.
//!
//! Per step, with ᾱ_t, ᾱ_prev (ᾱ at `t - T // S`, or the final value 1 / ᾱ_0 when that is
//! negative, per `set_alpha_to_one`):
//! ```text
//! (x0, ε)  = prediction(model_output, x_t)          x0 clamped to ±clip_sample if set
//! variance = ((1-ᾱ_prev)/(1-ᾱ_t)) · (1 - ᾱ_t/ᾱ_prev)
//! σ        = η · sqrt(variance)
//! x_prev   = sqrt(ᾱ_prev)·x0 + sqrt(1 - ᾱ_prev - σ²)·ε + σ·z
//! ```
//! ε is the *unclipped* one (diffusers' `use_clipped_model_output=False`). Note diffusers keeps
//! `prev = t - T // S` even for `Trailing`/`Linspace`, where it is not the next timestep; we do too.
//! All coefficients are f32 and computed in diffusers' operation order.

use crate::prediction::{sqrt_ab, x0_eps};
use crate::scheduler::{check_step_args, update_each};
use crate::{ModelSchedule, NoiseSchedule, PredictionType, SamplerSettings, Scheduler, StepInfo};

/// One step's precomputed coefficients.
#[derive(Debug, Clone, Copy)]
struct DdimStep {
    info: StepInfo,
    /// sqrt(ᾱ_t), sqrt(1-ᾱ_t).
    sa: f32,
    sb: f32,
    /// sqrt(ᾱ_prev): weight of x0.
    sa_prev: f32,
    /// sqrt(1 - ᾱ_prev - σ²): weight of ε ("pred_sample_direction").
    dir: f32,
}

/// diffusers' `DDIMScheduler` after `set_timesteps(S)`.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    timesteps: Vec<usize>,
    steps: Vec<DdimStep>,
    prediction_type: PredictionType,
    clip: Option<f32>,
}

impl DdimScheduler {
    /// `schedule` is `model`'s; `timesteps` must come from `spacing::timesteps` for `settings`
    /// and `schedule` (validated).
    pub(crate) fn new(
        model: &ModelSchedule,
        settings: &SamplerSettings,
        schedule: &NoiseSchedule,
        timesteps: Vec<usize>,
    ) -> Self {
        let ac = &schedule.alphas_cumprod;
        let final_alpha_cumprod = if settings.set_alpha_to_one { 1.0 } else { ac[0] };
        let ratio = (schedule.num_train_timesteps() / settings.steps) as i64;
        let steps = timesteps
            .iter()
            .map(|&t| {
                let prev = t as i64 - ratio;
                let ab = ac[t];
                let ab_prev = if prev >= 0 { ac[prev as usize] } else { final_alpha_cumprod };
                let variance = ((1.0 - ab_prev) / (1.0 - ab)) * (1.0 - ab / ab_prev);
                let sigma = settings.eta * variance.sqrt();
                // Mathematically > 0; the max only turns a would-be NaN into 0.
                let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
                let (sa, sb) = sqrt_ab(ab);
                let info = StepInfo { timestep: t, prev_timestep: prev, alpha_bar: ab, alpha_bar_prev: ab_prev, sigma };
                DdimStep { info, sa, sb, sa_prev: ab_prev.sqrt(), dir }
            })
            .collect();
        DdimScheduler { timesteps, steps, prediction_type: model.prediction_type, clip: model.clip_sample }
    }
}

impl Scheduler for DdimScheduler {
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
        let one = |mo: f32, x: f32| {
            let (mut x0, eps) = x0_eps(kind, mo, x, c.sa, c.sb);
            if let Some(r) = self.clip {
                x0 = x0.clamp(-r, r);
            }
            c.sa_prev * x0 + c.dir * eps
        };
        update_each(sample, model_output, noise, c.info.sigma, one);
    }
}

#[cfg(test)]
mod tests {
    use crate::{build_scheduler, BetaSchedule, ModelSchedule, PredictionType, SamplerSettings, Spacing};

    fn model(beta_schedule: BetaSchedule, prediction_type: PredictionType) -> ModelSchedule {
        ModelSchedule { beta_schedule, prediction_type, ..ModelSchedule::default() }
    }

    fn cfg(eta: f32, spacing: Spacing) -> SamplerSettings {
        SamplerSettings { eta, spacing, ..SamplerSettings::ddim(50) }
    }

    /// A deterministic DDIM run fed the *true* noise at every step (what a perfect ε-model
    /// outputs for x_T = sqrt(ᾱ)x0 + sqrt(1-ᾱ)ε) must land on x0.
    #[test]
    fn eta0_with_the_true_noise_recovers_x0_for_every_prediction_type() {
        let x0: Vec<f32> = (0..64).map(|k| ((k as f32) * 0.37).sin() * 0.9).collect();
        let eps: Vec<f32> = (0..64).map(|k| ((k as f32) * 1.91 + 0.3).cos() * 1.2).collect();
        for schedule in [BetaSchedule::Linear, BetaSchedule::SquaredCosCapV2] {
            for pred in [PredictionType::Epsilon, PredictionType::VPrediction, PredictionType::Sample] {
                for spacing in [Spacing::Leading, Spacing::Trailing] {
                    let mut sched = build_scheduler(&model(schedule, pred), &cfg(0.0, spacing)).unwrap();
                    let ab0 = sched.info(0).alpha_bar;
                    let (sa, sb) = (ab0.sqrt(), (1.0 - ab0).sqrt());
                    let mut x: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| sa * a + sb * e).collect();
                    for i in 0..sched.timesteps().len() {
                        assert!(!sched.needs_noise(i));
                        let ab = sched.info(i).alpha_bar;
                        let out: Vec<f32> =
                            x0.iter().zip(&eps).map(|(&a, &e)| crate::training_target(pred, a, e, ab)).collect();
                        sched.step(i, &out, &mut x, None);
                    }
                    let err = x.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    // The f32 rounding of x_T (~1e-7) is amplified by 1/sqrt(ᾱ_T) when ε is turned
                    // into x0 (cosine + trailing starts at ᾱ ≈ 2e-9: error ≈ 1e-3 there).
                    let tol = 1e-4 + 4e-7 / sa;
                    assert!(err < tol, "{schedule} {pred} {spacing}: max err {err} > {tol}");
                }
            }
        }
    }

    #[test]
    fn sigma_scales_with_eta_and_vanishes_at_the_end() {
        let m = ModelSchedule::default();
        let a = build_scheduler(&m, &cfg(1.0, Spacing::Leading)).unwrap();
        let b = build_scheduler(&m, &cfg(0.5, Spacing::Leading)).unwrap();
        for i in 0..49 {
            let (ia, ib) = (a.info(i), b.info(i));
            assert!(ia.sigma > 0.0 && a.needs_noise(i));
            assert_eq!(ib.sigma, 0.5 * ia.sigma);
            assert_eq!(ia.prev_timestep, ia.timestep as i64 - 20);
            // η = 1: σ² is the DDPM posterior variance.
            let var = (1.0 - ia.alpha_bar_prev) / (1.0 - ia.alpha_bar) * (1.0 - ia.alpha_bar / ia.alpha_bar_prev);
            assert!((ia.sigma * ia.sigma - var).abs() <= var * 1e-5);
        }
        let last = a.info(49);
        assert_eq!((last.timestep, last.prev_timestep, last.alpha_bar_prev, last.sigma), (0, -20, 1.0, 0.0));
        assert!(!a.needs_noise(49));
    }

    #[test]
    fn set_alpha_to_one_false_ends_on_alpha_bar_0_and_clip_bounds_x0() {
        let m = ModelSchedule { clip_sample: Some(0.5), ..model(BetaSchedule::Linear, PredictionType::Sample) };
        let c = SamplerSettings { set_alpha_to_one: false, ..cfg(0.0, Spacing::Leading) };
        let mut sched = build_scheduler(&m, &c).unwrap();
        let alphas_cumprod = m.noise_schedule().unwrap().alphas_cumprod;
        assert_eq!(sched.info(49).alpha_bar_prev, alphas_cumprod[0]);
        // At the last step x_prev = sqrt(ᾱ_0)·clip(x0) + sqrt(1-ᾱ_0)·ε.
        let mut x = vec![0.3f32, -0.2];
        sched.step(49, &[3.0, -3.0], &mut x, None);
        let ab = alphas_cumprod[0];
        let (sa, sb) = (ab.sqrt(), (1.0 - ab).sqrt());
        let eps = [(0.3 - sa * 3.0) / sb, (-0.2 + sa * 3.0) / sb];
        assert_eq!(x, vec![sa * 0.5 + sb * eps[0], sa * -0.5 + sb * eps[1]]);
    }

    #[test]
    #[should_panic(expected = "needs noise")]
    fn a_noisy_step_without_noise_is_a_caller_bug() {
        let mut sched = build_scheduler(&ModelSchedule::default(), &cfg(1.0, Spacing::Leading)).unwrap();
        sched.step(0, &[0.0], &mut [0.0], None);
    }
}
