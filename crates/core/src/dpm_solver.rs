//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models", Algorithm 2), exactly diffusers' `DPMSolverMultistepScheduler`
//! with `algorithm_type="dpmsolver++"`, `solver_order=2`, `solver_type="midpoint"`,
//! `lower_order_final=True`, `final_sigmas_type="zero"`, no Karras sigmas, no thresholding.
//!
//! The solver integrates the probability-flow ODE in the log-SNR time λ = log(α/σ), where
//! α = sqrt(ᾱ), σ = sqrt(1-ᾱ), using the network's x0 ("data") prediction D. Exactly solving
//! the ODE for a D that is constant over a step gives the first-order update (which is DDIM):
//! ```text
//! x_s = (σ_s/σ_t)·x_t − α_s·(e^{−h} − 1)·D,   h = λ_s − λ_t > 0   (t → s, s less noisy)
//! ```
//! The 2M update keeps the same form but extrapolates D linearly in λ from the current x0
//! prediction x0_t and the previous step's x0_{t+1} ("multistep": one network call per step):
//! ```text
//! r = h_prev / h,   D = (1 + 1/(2r))·x0_t − (1/(2r))·x0_{t+1}
//! ```
//! evaluated as diffusers does: `(σ_s/σ_t)·x − c·x0_t − (c/2)·((1/r)·(x0_t − x0_{t+1}))`
//! with c = α_s·(e^{−h} − 1).
//!
//! Which steps are first order: the first step taken (no x0_{t+1} yet; also a first call at a
//! later index, as when diffusers starts mid-schedule), and the last step, always: it goes to
//! σ = 0 (`final_sigmas_type="zero"`), where h = ∞, r = 0, so the first-order update is the
//! only finite one and it returns the x0 prediction itself. (diffusers' `lower_order_final`
//! would also make the last step first order below 15 steps; with a zero final sigma it is
//! first order at every step count, so that setting changes nothing for 2M.)
//!
//! diffusers works with the VE sigma ς = sqrt((1-ᾱ)/ᾱ) at each visited timestep, stored as
//! f32, and re-derives α = 1/sqrt(ς²+1), σ = ς·α and λ = log α − log σ from it in f32; the
//! model output is converted to x0 with these α, σ (not with sqrt(ᾱ)). We precompute the same
//! f32 values in the same operation order (log and exp from `libm` in f64, rounded once, so
//! every platform agrees); the per-element arithmetic is plain f32. Timesteps:
//! `spacing::dpm_timesteps`. `eta` does not apply. `clip_sample` (a model's metadata may ask
//! for it) clamps the data prediction x0 before it enters the update, as DDIM clamps its
//! predicted x0, unless the model says otherwise (`ModelSchedule::dpm_clip_sample`):
//! diffusers' DPM-Solver has no static clip (only dynamic `thresholding`), so its parity cases
//! and models described by diffusers' configuration files run without clipping. Without the clamp, an undertrained model's overshooting
//! x0 predictions are extrapolated by the second-order term (measured on the default sprites
//! model: final images up to ±2.3 and FD 2x worse than DDIM at 20 steps).

use crate::prediction::x0_eps;
use crate::scheduler::check_step_args;
use crate::{ModelSchedule, NoiseSchedule, PredictionType, Scheduler, StepInfo};

/// The extra coefficients of a second-order step.
#[derive(Debug, Clone, Copy)]
struct SecondOrder {
    /// 1/r = h / h_prev: scales x0_t − x0_{t+1} into D1.
    inv_r: f32,
    /// c/2: weight of D1 (diffusers' midpoint rule).
    half_c: f32,
}

/// One step's precomputed coefficients.
#[derive(Debug, Clone, Copy)]
struct DpmStep {
    info: StepInfo,
    /// α and σ at this step's timestep, from the VE sigma (for the x0 conversion).
    alpha: f32,
    sigma: f32,
    /// σ_s/σ_t: weight of x_t.
    c_sample: f32,
    /// c = α_s·(e^{−h} − 1) (negative): x0's weight is −c.
    c_x0: f32,
    /// `None` at the first and the last step, which are first order.
    second: Option<SecondOrder>,
}

/// f32 `ln` and `exp` as the f64 result rounded once: correctly rounded but for rare
/// double-rounding cases. torch's f32 log/exp nearly are (measured here: 0.1% and 1.5% of
/// inputs 1 ulp off), `libm::logf`/`expf` are not (7% and 10%), so this matches torch best.
fn ln_f32(x: f32) -> f32 {
    libm::log(f64::from(x)) as f32
}

fn exp_f32(x: f32) -> f32 {
    libm::exp(f64::from(x)) as f32
}

/// α, σ and λ of one VE sigma ς, in f32 as diffusers' `_sigma_to_alpha_sigma_t` and
/// `torch.log(alpha_t) - torch.log(sigma_t)` compute them.
fn alpha_sigma_lambda(ve_sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (ve_sigma * ve_sigma + 1.0).sqrt();
    let sigma = ve_sigma * alpha;
    (alpha, sigma, ln_f32(alpha) - ln_f32(sigma))
}

/// diffusers' `DPMSolverMultistepScheduler` (DPM-Solver++ 2M) after `set_timesteps(S)`.
///
/// Stateful: it remembers the x0 predicted by the last step taken. One instance drives one
/// trajectory at a time; step i uses that history only when the previous call was step i−1,
/// so restarting at step 0 (or at any index) begins a new trajectory, first order.
#[derive(Debug, Clone)]
pub struct DpmSolverPP2MScheduler {
    timesteps: Vec<usize>,
    steps: Vec<DpmStep>,
    prediction_type: PredictionType,
    /// Clamp of the x0 prediction (`clip_sample`), if any.
    clip: Option<f32>,
    /// x0 predicted by step `prev_step` (sized on the first step, then reused).
    prev_x0: Vec<f32>,
    prev_step: Option<usize>,
}

impl DpmSolverPP2MScheduler {
    /// `schedule` is `model`'s; `timesteps` must come from `spacing::dpm_timesteps` for it (validated:
    /// in range, strictly decreasing).
    pub(crate) fn new(model: &ModelSchedule, schedule: &NoiseSchedule, timesteps: Vec<usize>) -> Self {
        let ac = &schedule.alphas_cumprod;
        let n = timesteps.len();
        // α, σ, λ at every visited timestep; the final entry (σ = 0, λ = ∞) is handled apart.
        let asl: Vec<(f32, f32, f32)> =
            timesteps.iter().map(|&t| alpha_sigma_lambda(((1.0 - ac[t]) / ac[t]).sqrt())).collect();
        let steps = (0..n)
            .map(|i| {
                let t = timesteps[i];
                let (alpha, sigma, lambda) = asl[i];
                let next = timesteps.get(i + 1).copied();
                let info = StepInfo {
                    timestep: t,
                    prev_timestep: next.map_or(-1, |p| p as i64),
                    alpha_bar: ac[t],
                    alpha_bar_prev: next.map_or(1.0, |p| ac[p]),
                    sigma: 0.0,
                };
                let Some(&(alpha_s, sigma_s, lambda_s)) = asl.get(i + 1) else {
                    // To σ = 0: σ_s/σ_t = 0, α_s = 1, e^{−∞} = 0, so x_s = x0 exactly.
                    return DpmStep { info, alpha, sigma, c_sample: 0.0, c_x0: -1.0, second: None };
                };
                let h = lambda_s - lambda;
                let c_x0 = alpha_s * (exp_f32(-h) - 1.0);
                let second = (i > 0).then(|| {
                    let r = (lambda - asl[i - 1].2) / h;
                    SecondOrder { inv_r: 1.0 / r, half_c: 0.5 * c_x0 }
                });
                DpmStep { info, alpha, sigma, c_sample: sigma_s / sigma, c_x0, second }
            })
            .collect();
        DpmSolverPP2MScheduler {
            timesteps,
            steps,
            prediction_type: model.prediction_type,
            clip: model.clip_sample.filter(|_| model.dpm_clip_sample),
            prev_x0: Vec::new(),
            prev_step: None,
        }
    }
}

impl Scheduler for DpmSolverPP2MScheduler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn info(&self, i: usize) -> StepInfo {
        self.steps[i].info
    }

    /// Also panics if step i follows step i−1 on a buffer of a different length (two
    /// trajectories interleaved on one scheduler).
    fn step(&mut self, i: usize, model_output: &[f32], sample: &mut [f32], noise: Option<&[f32]>) {
        let c = self.steps[i];
        check_step_args(false, model_output, sample, noise);
        let second = c.second.filter(|_| i > 0 && self.prev_step == Some(i - 1));
        if second.is_some() {
            assert_eq!(self.prev_x0.len(), sample.len(), "sample length changed between consecutive steps");
        } else {
            self.prev_x0.resize(sample.len(), 0.0);
        }
        let kind = self.prediction_type;
        let (lo, hi) = self.clip.map_or((f32::NEG_INFINITY, f32::INFINITY), |r| (-r, r));
        let elems = sample.iter_mut().zip(model_output).zip(self.prev_x0.iter_mut());
        match second {
            None => {
                for ((x, &mo), prev) in elems {
                    let x0 = x0_eps(kind, mo, *x, c.alpha, c.sigma).0.clamp(lo, hi);
                    *x = c.c_sample * *x - c.c_x0 * x0;
                    *prev = x0;
                }
            }
            Some(s) => {
                for ((x, &mo), prev) in elems {
                    let x0 = x0_eps(kind, mo, *x, c.alpha, c.sigma).0.clamp(lo, hi);
                    *x = (c.c_sample * *x - c.c_x0 * x0) - s.half_c * (s.inv_r * (x0 - *prev));
                    *prev = x0;
                }
            }
        }
        self.prev_step = Some(i);
    }
}

#[cfg(test)]
mod tests;
