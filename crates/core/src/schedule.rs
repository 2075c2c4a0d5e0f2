//! Beta schedules and the cumulative products of alphas, stored exactly as diffusers stores them.
//!
//! diffusers keeps `betas` and `alphas_cumprod` as float32 torch tensors. To agree with it to the
//! last bit we mirror how torch builds them:
//! - `torch.linspace(start, end, T, dtype=float32)` (CPU): `step = (end - start) / (T - 1)` in f32,
//!   then element i is `start + step * i` for i < T/2 and `end - step * (T - 1 - i)` otherwise,
//!   evaluated in f64 and rounded to f32 (measured bit-identical with torch 2.x).
//! - `betas_for_alpha_bar` (squaredcos_cap_v2) runs in Python f64 and is rounded to f32 once.
//! - `alphas = 1 - betas` in f32; `torch.cumprod` on CPU accumulates in f64 and rounds each
//!   partial product to f32.

use std::fmt;
use std::str::FromStr;

use crate::CoreError;

/// How betas grow with the timestep; names are diffusers' `beta_schedule` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, T)` (DDPM paper).
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (Stable Diffusion).
    ScaledLinear,
    /// Nichol & Dhariwal's cosine schedule, betas capped at 0.999; ignores beta_start/end.
    SquaredCosCapV2,
}

impl fmt::Display for BetaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
        })
    }
}

impl FromStr for BetaSchedule {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "linear" => Ok(BetaSchedule::Linear),
            "scaled_linear" => Ok(BetaSchedule::ScaledLinear),
            "squaredcos_cap_v2" => Ok(BetaSchedule::SquaredCosCapV2),
            _ => Err(CoreError::UnknownName {
                what: "beta schedule",
                value: s.into(),
                expected: "linear, scaled_linear, squaredcos_cap_v2",
            }),
        }
    }
}

/// The training noise schedule: `betas[t]` and `alphas_cumprod[t]` (ᾱ_t) for t in 0..T.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    pub betas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// Builds the schedule diffusers builds for the same `beta_schedule`, T and beta ends.
    ///
    /// `beta_start`/`beta_end` are ignored by `SquaredCosCapV2` (as in diffusers) and must
    /// satisfy `0 < beta_start <= beta_end < 1` otherwise.
    pub fn new(
        kind: BetaSchedule,
        num_train_timesteps: usize,
        beta_start: f32,
        beta_end: f32,
    ) -> Result<Self, CoreError> {
        let t = num_train_timesteps;
        if t < 2 {
            return Err(CoreError::BadTrainTimesteps(t));
        }
        let betas = match kind {
            BetaSchedule::Linear | BetaSchedule::ScaledLinear => {
                let ok = beta_start > 0.0 && beta_start <= beta_end && beta_end < 1.0;
                if !ok {
                    return Err(CoreError::BadBetas { beta_start, beta_end });
                }
                if kind == BetaSchedule::Linear {
                    torch_linspace_f32(beta_start, beta_end, t)
                } else {
                    // diffusers takes `beta_start**0.5` of the Python float the user wrote;
                    // recover that double from the f32's shortest decimal form.
                    let s = libm::sqrt(intended_f64(beta_start)) as f32;
                    let e = libm::sqrt(intended_f64(beta_end)) as f32;
                    torch_linspace_f32(s, e, t).into_iter().map(|b| b * b).collect()
                }
            }
            BetaSchedule::SquaredCosCapV2 => cosine_betas(t, 0.999),
        };
        Ok(NoiseSchedule::with_betas(betas))
    }

    /// The schedule of given betas (diffusers' `trained_betas`), each in (0, 1), at least two.
    pub fn from_betas(betas: Vec<f32>) -> Result<Self, CoreError> {
        if betas.len() < 2 {
            return Err(CoreError::BadTrainTimesteps(betas.len()));
        }
        if let Some(&b) = betas.iter().find(|&&b| !(b > 0.0 && b < 1.0)) {
            return Err(CoreError::BadBetas { beta_start: b, beta_end: b });
        }
        Ok(NoiseSchedule::with_betas(betas))
    }

    /// `betas` and their ᾱ, as torch computes `cumprod(1 - betas)`.
    fn with_betas(betas: Vec<f32>) -> Self {
        let mut acc = 1.0f64;
        let alphas_cumprod = betas
            .iter()
            .map(|&b| {
                acc *= f64::from(1.0f32 - b);
                acc as f32
            })
            .collect();
        NoiseSchedule { betas, alphas_cumprod }
    }

    /// diffusers' `rescale_zero_terminal_snr`: sqrt(ᾱ) shifted and scaled so that it keeps its
    /// first value and reaches 0 at the last timestep, then the betas that give it, in torch's
    /// f32 operation order. The last beta becomes 1 and ᾱ there 0.
    pub fn rescaled_to_zero_terminal_snr(self) -> Self {
        let mut root: Vec<f32> = self.alphas_cumprod.iter().map(|&a| a.sqrt()).collect();
        let (first, last) = (root[0], root[root.len() - 1]);
        let scale = first / (first - last);
        for r in &mut root {
            *r = (*r - last) * scale;
        }
        let bar: Vec<f32> = root.iter().map(|r| r * r).collect();
        let betas = std::iter::once(bar[0]).chain(bar.windows(2).map(|w| w[1] / w[0])).map(|a| 1.0 - a).collect();
        NoiseSchedule::with_betas(betas)
    }

    /// T, the number of training timesteps (the length of `alphas_cumprod`, which schedulers index).
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }
}

/// The f64 a person most likely meant when they wrote this f32 (e.g. `0.00085`), found through
/// the shortest decimal string that round-trips the f32.
fn intended_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` on CPU, bit for bit (n >= 2).
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = f64::from((end - start) / (n - 1) as f32);
    let (s, e) = (f64::from(start), f64::from(end));
    let half = n / 2;
    (0..n).map(|i| if i < half { s + step * i as f64 } else { e - step * (n - 1 - i) as f64 } as f32).collect()
}

/// diffusers' `betas_for_alpha_bar(T, max_beta)` with the cosine `alpha_bar_fn`, in f64.
fn cosine_betas(t: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |x: f64| {
        let c = libm::cos((x + 0.008) / 1.008 * std::f64::consts::PI / 2.0);
        c * c
    };
    (0..t)
        .map(|i| {
            let t1 = i as f64 / t as f64;
            let t2 = (i + 1) as f64 / t as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_an_error() {
        for k in [BetaSchedule::Linear, BetaSchedule::ScaledLinear, BetaSchedule::SquaredCosCapV2] {
            assert_eq!(k.to_string().parse::<BetaSchedule>().unwrap(), k);
        }
        let err = "cosine".parse::<BetaSchedule>().unwrap_err();
        assert!(err.to_string().contains("\"cosine\""), "{err}");
    }

    #[test]
    fn linear_betas_hit_both_ends_and_are_evenly_spaced() {
        let s = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
        assert_eq!(s.num_train_timesteps(), 1000);
        assert_eq!(s.betas[0], 1e-4f32);
        assert_eq!(s.betas[999], 0.02f32);
        let step = (0.02 - 1e-4) / 999.0;
        for (i, &b) in s.betas.iter().enumerate() {
            let want = 1e-4 + step * i as f64;
            assert!((f64::from(b) - want).abs() <= want * 2.5e-7, "beta[{i}] = {b} vs {want}");
        }
        // ᾱ_0 = 1 - β_0, ᾱ decreasing, ᾱ_999 ≈ 4.04e-5 (the well-known DDPM value).
        assert_eq!(s.alphas_cumprod[0], 1.0 - 1e-4f32);
        assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
        assert!((s.alphas_cumprod[999] - 4.0358e-5).abs() < 1e-8, "{}", s.alphas_cumprod[999]);
    }

    #[test]
    fn scaled_linear_squares_a_linspace_of_roots() {
        let s = NoiseSchedule::new(BetaSchedule::ScaledLinear, 1000, 0.00085, 0.012).unwrap();
        assert!((s.betas[0] - 0.00085).abs() < 1e-9);
        assert!((s.betas[999] - 0.012).abs() < 1e-9);
        let mid = (0.00085f64.sqrt() + (0.012f64.sqrt() - 0.00085f64.sqrt()) * 500.0 / 999.0).powi(2);
        assert!((f64::from(s.betas[500]) - mid).abs() < 1e-9);
    }

    #[test]
    fn cosine_betas_are_capped_at_0_999_and_follow_the_closed_form() {
        let s = NoiseSchedule::new(BetaSchedule::SquaredCosCapV2, 1000, 0.0, 0.0).unwrap();
        assert_eq!(*s.betas.last().unwrap(), 0.999f32, "the last beta is the cap");
        assert!(s.betas.iter().all(|&b| b > 0.0 && b <= 0.999f32));
        let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        for i in [0usize, 100, 500, 900] {
            let want = 1.0 - f((i + 1) as f64 / 1000.0) / f(i as f64 / 1000.0);
            assert!((f64::from(s.betas[i]) - want).abs() <= want * 1e-6, "beta[{i}]");
            // ᾱ_t telescopes to f(t+1)/f(0).
            let ab = f((i + 1) as f64 / 1000.0) / f(0.0);
            assert!((f64::from(s.alphas_cumprod[i]) - ab).abs() <= ab * 1e-5, "alpha_bar[{i}]");
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(NoiseSchedule::new(BetaSchedule::Linear, 1, 1e-4, 0.02), Err(CoreError::BadTrainTimesteps(1)));
        for (a, b) in [(0.0, 0.02), (0.02, 0.01), (1e-4, 1.0), (f32::NAN, 0.02)] {
            let err = NoiseSchedule::new(BetaSchedule::Linear, 10, a, b).unwrap_err();
            assert!(matches!(err, CoreError::BadBetas { .. }), "{a} {b}: {err}");
        }
    }
}
