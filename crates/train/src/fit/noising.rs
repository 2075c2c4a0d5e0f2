//! The forward (noising) process of one training batch, computed on the CPU.
//!
//! Timesteps and noise are drawn here from streams seeded by (seed, step) rather than by the
//! backend's RNG: the bytes then depend only on those two integers, not on the backend, its
//! thread count or what ran before, which is what makes `--resume` exact and lets a CUDA and a
//! CPU run see the same batches. The arithmetic (x_t = sqrt(ab) x0 + sqrt(1-ab) eps in f32) is
//! diffusers' `add_noise`; the regression target comes from core so trainer and sampler agree.

use edgediff_core::{training_target, GaussianStream, NoiseSchedule, PredictionType};

use edgediff_data::rng::{mix, Stream};

const TIMESTEP_TAG: u64 = 0x5449_4D45;
const NOISE_TAG: u64 = 0x4E4F_4953;

/// Network inputs and regression target for one batch, NCHW / N, flat.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyBatch {
    pub x_t: Vec<f32>,
    /// The integer timestep as f32 (the graph contract's `timestep` input).
    pub timesteps: Vec<f32>,
    pub target: Vec<f32>,
}

/// Noises the clean batch `x0` (N images of `x0.len() / n` values) for training step `step`.
pub fn noisy_batch(
    x0: &[f32],
    n: usize,
    seed: u64,
    step: u64,
    schedule: &NoiseSchedule,
    kind: PredictionType,
) -> NoisyBatch {
    let per_image = x0.len() / n.max(1);
    let t_max = schedule.alphas_cumprod.len() as u64;
    let mut ts = Stream::new(mix(&[seed, step, TIMESTEP_TAG]));
    let timesteps: Vec<usize> = (0..n).map(|_| ts.below(t_max) as usize).collect();
    let mut eps = vec![0f32; x0.len()];
    GaussianStream::new(mix(&[seed, step, NOISE_TAG])).fill(&mut eps);
    let mut x_t = vec![0f32; x0.len()];
    let mut target = vec![0f32; x0.len()];
    for (i, &t) in timesteps.iter().enumerate() {
        let ab = schedule.alphas_cumprod[t];
        let (sa, sb) = (ab.sqrt(), (1.0 - ab).sqrt());
        for k in i * per_image..(i + 1) * per_image {
            x_t[k] = sa * x0[k] + sb * eps[k];
            target[k] = training_target(kind, x0[k], eps[k], ab);
        }
    }
    NoisyBatch { x_t, timesteps: timesteps.iter().map(|&t| t as f32).collect(), target }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgediff_core::BetaSchedule;

    #[test]
    fn deterministic_and_consistent_with_the_target() {
        let s = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
        let x0: Vec<f32> = (0..2 * 12).map(|i| (i as f32 / 12.0) - 1.0).collect();
        let a = noisy_batch(&x0, 2, 7, 3, &s, PredictionType::Epsilon);
        assert_eq!(a, noisy_batch(&x0, 2, 7, 3, &s, PredictionType::Epsilon));
        assert_ne!(a.x_t, noisy_batch(&x0, 2, 7, 4, &s, PredictionType::Epsilon).x_t);
        assert!(a.timesteps.iter().all(|&t| (0.0..1000.0).contains(&t) && t.fract() == 0.0));
        // x_t = sa*x0 + sb*eps with eps = target for epsilon prediction.
        let ab = s.alphas_cumprod[a.timesteps[0] as usize];
        let want = ab.sqrt() * x0[5] + (1.0 - ab).sqrt() * a.target[5];
        assert_eq!(a.x_t[5], want);
        let v = noisy_batch(&x0, 2, 7, 3, &s, PredictionType::Sample);
        assert_eq!(v.target, x0);
        assert_eq!(v.x_t, a.x_t);
    }
}
