//! Unit tests of DPM-Solver++(2M): exactness on the forward path, convergence order, history.

use super::DpmSolverPP2MScheduler;
use crate::spacing::dpm_timesteps;
use crate::{
    build_scheduler, BetaSchedule, ModelSchedule, PredictionType, SamplerSettings, Scheduler, SchedulerKind, Spacing,
};

const SPACINGS: [Spacing; 3] = [Spacing::Leading, Spacing::Trailing, Spacing::Linspace];

fn cfg(steps: usize, spacing: Spacing) -> SamplerSettings {
    SamplerSettings { kind: SchedulerKind::DpmSolverPP2M, spacing, ..SamplerSettings::ddim(steps) }
}

/// The T = 1000 model of `beta_schedule` (betas 1e-4..0.02) predicting `prediction_type`.
fn model(beta_schedule: BetaSchedule, prediction_type: PredictionType) -> ModelSchedule {
    ModelSchedule { beta_schedule, prediction_type, ..ModelSchedule::default() }
}

fn concrete(m: &ModelSchedule, c: &SamplerSettings) -> DpmSolverPP2MScheduler {
    let ts = dpm_timesteps(c.spacing, m.num_train_timesteps, c.steps, c.steps_offset).unwrap();
    DpmSolverPP2MScheduler::new(m, &m.noise_schedule().unwrap(), ts)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn data() -> (Vec<f32>, Vec<f32>) {
    let x0: Vec<f32> = (0..32).map(|k| ((k as f32) * 0.37).sin() * 0.9).collect();
    let eps: Vec<f32> = (0..32).map(|k| ((k as f32) * 1.91 + 0.3).cos() * 1.2).collect();
    (x0, eps)
}

/// With a constant x0 prediction the ODE's exact solution is the forward path
/// x_t = α_t·x0 + σ_t·ε, and both the first- and second-order updates are exact for it
/// (D1 = 0): every intermediate sample must sit on that path, and the last step (to σ = 0)
/// must return x0 bit for bit.
#[test]
fn a_model_that_knows_x0_keeps_the_sample_on_the_forward_path_and_ends_on_x0() {
    let (x0, eps) = data();
    for schedule in [BetaSchedule::Linear, BetaSchedule::ScaledLinear, BetaSchedule::SquaredCosCapV2] {
        let m = model(schedule, PredictionType::Sample);
        for spacing in SPACINGS {
            for steps in [1, 2, 7, 25] {
                let mut sched = build_scheduler(&m, &cfg(steps, spacing)).unwrap();
                let on_path = |ab: f32| -> Vec<f32> {
                    let (a, b) = (f64::from(ab).sqrt(), (1.0 - f64::from(ab)).sqrt());
                    x0.iter().zip(&eps).map(|(&x, &e)| (a * f64::from(x) + b * f64::from(e)) as f32).collect()
                };
                let mut x = on_path(sched.info(0).alpha_bar);
                for i in 0..steps {
                    sched.step(i, &x0, &mut x, None);
                    let err = max_abs_diff(&x, &on_path(sched.info(i).alpha_bar_prev));
                    assert!(err < 2e-6, "{schedule} {spacing} S={steps} step {i}: off the path by {err}");
                }
                assert_eq!(x, x0, "{schedule} {spacing} S={steps}");
            }
        }
    }
}

/// A perfect network of each prediction type (outputting the true ε / v / x0 for
/// x_t = α·x0 + σ·ε) must lead the solver to x0.
#[test]
fn a_perfect_model_of_every_prediction_type_recovers_x0() {
    let (x0, eps) = data();
    for schedule in [BetaSchedule::Linear, BetaSchedule::SquaredCosCapV2] {
        for pred in [PredictionType::Epsilon, PredictionType::VPrediction, PredictionType::Sample] {
            for spacing in SPACINGS {
                let mut sched = build_scheduler(&model(schedule, pred), &cfg(20, spacing)).unwrap();
                let ab0 = sched.info(0).alpha_bar;
                let (sa, sb) = (ab0.sqrt(), (1.0 - ab0).sqrt());
                let mut x: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| sa * a + sb * e).collect();
                for i in 0..20 {
                    assert!(!sched.needs_noise(i));
                    let ab = sched.info(i).alpha_bar;
                    let out: Vec<f32> =
                        x0.iter().zip(&eps).map(|(&a, &e)| crate::training_target(pred, a, e, ab)).collect();
                    sched.step(i, &out, &mut x, None);
                }
                // As for DDIM: x_T's f32 rounding is amplified by 1/sqrt(ᾱ_T) when ε → x0.
                let (err, tol) = (max_abs_diff(&x, &x0), 1e-4 + 4e-7 / sa);
                assert!(err < tol, "{schedule} {pred} {spacing}: max err {err} > {tol}");
            }
        }
    }
}

/// α, σ, λ of ᾱ in f64, for closed forms written independently of the f32 code.
fn asl(ab: f32) -> (f64, f64, f64) {
    let (a, s) = (f64::from(ab).sqrt(), (1.0 - f64::from(ab)).sqrt());
    (a, s, (a / s).ln())
}

/// Step 0 is the first-order update (= DDIM η = 0 between the two visited timesteps); a
/// step taken right after its predecessor is the 2M update; the same step taken on a fresh
/// scheduler (no history) is first order again.
#[test]
fn first_step_is_first_order_then_2m_uses_the_previous_x0() {
    let scaled = ModelSchedule {
        beta_start: 0.00085,
        beta_end: 0.012,
        ..model(BetaSchedule::ScaledLinear, PredictionType::Sample)
    };
    let c = cfg(10, Spacing::Linspace);
    let (xa, m0, m1) = (vec![0.8f32, -1.1, 0.3], vec![0.5f32, -0.25, 0.9], vec![-0.4f32, 0.6, 0.1]);
    let first = |i: usize, x: &[f32], m: &[f32]| -> Vec<f32> {
        let info = concrete(&scaled, &c).info(i);
        let ((_, s_t, l_t), (a_s, s_s, l_s)) = (asl(info.alpha_bar), asl(info.alpha_bar_prev));
        let h = l_s - l_t;
        x.iter()
            .zip(m)
            .map(|(&x, &m)| (s_s / s_t * f64::from(x) - a_s * ((-h).exp() - 1.0) * f64::from(m)) as f32)
            .collect()
    };
    let close = |got: &[f32], want: &[f32], what: &str| {
        let err = max_abs_diff(got, want);
        assert!(err < 2e-6, "{what}: {got:?} vs {want:?} ({err})");
    };
    let mut sched = build_scheduler(&scaled, &c).unwrap();
    let mut x = xa.clone();
    sched.step(0, &m1, &mut x, None);
    close(&x, &first(0, &xa, &m1), "step 0");

    // Step 1 right after step 0: D = (1 + 1/(2r))·m0 − 1/(2r)·m1.
    let x1 = x.clone();
    sched.step(1, &m0, &mut x, None);
    let (l0, (_, s1, l1), (a2, s2, l2)) =
        (asl(sched.info(0).alpha_bar).2, asl(sched.info(1).alpha_bar), asl(sched.info(1).alpha_bar_prev));
    let (h, r) = (l2 - l1, (l1 - l0) / (l2 - l1));
    let want: Vec<f32> = (0..3)
        .map(|k| {
            let d = (1.0 + 0.5 / r) * f64::from(m0[k]) - 0.5 / r * f64::from(m1[k]);
            (s2 / s1 * f64::from(x1[k]) - a2 * ((-h).exp() - 1.0) * d) as f32
        })
        .collect();
    close(&x, &want, "step 1 (2M)");
    let first_order = first(1, &x1, &m0);
    assert!(max_abs_diff(&x, &first_order) > 1e-3, "2M must differ from first order here");

    // The same step 1 on a scheduler with no history is first order.
    let mut fresh = build_scheduler(&scaled, &c).unwrap();
    let mut y = x1.clone();
    fresh.step(1, &m0, &mut y, None);
    close(&y, &first_order, "step 1 without history");
}

/// Gaussian data N(0, c²) has the exact denoiser D(x) = α·c²·x / (α²c² + σ²) and the exact
/// ODE solution x_t ∝ sqrt(α_t²c² + σ_t²). At a timestep all runs visit (t = 99), the 2M
/// error must shrink about 4x per doubling of the steps (second order), and be far below
/// the first-order solver's (which only halves).
#[test]
fn second_order_convergence_on_gaussian_data() {
    let m = model(BetaSchedule::Linear, PredictionType::Sample);
    let c2 = 0.25f64;
    let run = |steps: usize, first_order_only: bool| -> f64 {
        let mut sched = concrete(&m, &cfg(steps, Spacing::Trailing));
        let scale = |ab: f32| (f64::from(ab) * c2 + 1.0 - f64::from(ab)).sqrt();
        let x_t = [1.3f64, -0.7];
        let s_t = scale(sched.info(0).alpha_bar);
        let mut x: Vec<f32> = x_t.iter().map(|&v| v as f32).collect();
        for i in 0..steps {
            let info = sched.info(i);
            if info.timestep == 99 {
                let want = scale(info.alpha_bar) / s_t;
                return x.iter().zip(x_t).map(|(&v, x_t)| (f64::from(v) - x_t * want).abs()).fold(0.0, f64::max);
            }
            let ab = f64::from(info.alpha_bar);
            let d: Vec<f32> =
                x.iter().map(|&v| (ab.sqrt() * c2 * f64::from(v) / (ab * c2 + 1.0 - ab)) as f32).collect();
            if first_order_only {
                sched.prev_step = None;
            }
            sched.step(i, &d, &mut x, None);
        }
        panic!("S={steps} never visits t=99");
    };
    let (e10, e20, e40) = (run(10, false), run(20, false), run(40, false));
    let (f10, f20, f40) = (run(10, true), run(20, true), run(40, true));
    eprintln!("error at t=99, S=10/20/40: 2M {e10:.2e} {e20:.2e} {e40:.2e}; first order {f10:.2e} {f20:.2e} {f40:.2e}");
    assert!(e20 < e10 / 3.0 && e40 < e20 / 3.0, "2M is not second order: {e10} {e20} {e40}");
    assert!(f20 > f10 / 2.5 && f40 > f20 / 2.5, "first order should only halve: {f10} {f20} {f40}");
    assert!(e20 < f20 / 5.0, "2M {e20} vs first order {f20}");
}

#[test]
fn runs_are_deterministic_and_restarting_at_step_0_starts_afresh() {
    let m = model(BetaSchedule::SquaredCosCapV2, PredictionType::Epsilon);
    let mut sched = build_scheduler(&m, &cfg(15, Spacing::Leading)).unwrap();
    let run = |sched: &mut Box<dyn Scheduler>| {
        let mut x: Vec<f32> = (0..24).map(|k| ((k as f32) * 0.71).sin()).collect();
        for i in 0..15 {
            let out: Vec<f32> = (0..24).map(|k| ((k * 7 + i * 3) as f32 * 0.13).cos()).collect();
            sched.step(i, &out, &mut x, None);
        }
        x
    };
    let a = run(&mut sched);
    let b = run(&mut sched);
    let c = run(&mut build_scheduler(&m, &cfg(15, Spacing::Leading)).unwrap());
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), c.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}

#[test]
fn info_chains_the_visited_timesteps_and_ends_at_alpha_bar_1() {
    let m = ModelSchedule { clip_sample: Some(1.0), ..ModelSchedule::default() };
    let s = m.noise_schedule().unwrap();
    let c = SamplerSettings { steps_offset: 1, ..cfg(10, Spacing::Leading) };
    let sched = build_scheduler(&m, &c).unwrap();
    assert_eq!(sched.timesteps(), (1..=10).rev().map(|i| i * 90 + 1).collect::<Vec<_>>());
    for i in 0..10 {
        let info = sched.info(i);
        assert_eq!((info.sigma, sched.needs_noise(i)), (0.0, false));
        assert_eq!(info.alpha_bar, s.alphas_cumprod[info.timestep]);
        if i < 9 {
            assert_eq!(info.prev_timestep, sched.timesteps()[i + 1] as i64);
            assert_eq!(info.alpha_bar_prev, s.alphas_cumprod[sched.timesteps()[i + 1]]);
        }
    }
    assert_eq!((sched.info(9).prev_timestep, sched.info(9).alpha_bar_prev), (-1, 1.0));
}

#[test]
#[should_panic(expected = "adds none")]
fn noise_is_a_caller_bug() {
    let mut sched = build_scheduler(&ModelSchedule::default(), &cfg(10, Spacing::Leading)).unwrap();
    sched.step(0, &[0.0], &mut [0.0], Some(&[1.0]));
}

#[test]
#[should_panic(expected = "length changed")]
fn interleaving_two_batch_sizes_is_a_caller_bug() {
    let mut sched = build_scheduler(&ModelSchedule::default(), &cfg(10, Spacing::Leading)).unwrap();
    sched.step(0, &[0.0, 0.0], &mut [0.0, 0.0], None);
    sched.step(1, &[0.0], &mut [0.0], None);
}

#[test]
fn clip_sample_clamps_the_data_prediction() {
    let mut m = model(BetaSchedule::Linear, PredictionType::Sample);
    let c = cfg(10, Spacing::Leading);
    let run = |m: &ModelSchedule| {
        let mut sched = build_scheduler(m, &c).unwrap();
        let mut x = vec![0.5f32, -0.5];
        for i in 0..sched.timesteps().len() {
            // A model that predicts x0 far outside the range.
            sched.step(i, &[3.0, -4.0], &mut x, None);
        }
        x
    };
    // Unclipped (diffusers), the last step returns the prediction itself.
    assert_eq!(run(&m), vec![3.0, -4.0]);
    m.clip_sample = Some(1.0);
    assert_eq!(run(&m), vec![1.0, -1.0]);
}
