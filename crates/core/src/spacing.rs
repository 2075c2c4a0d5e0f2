//! Which training timesteps a sampler visits: diffusers' `timestep_spacing`.
//!
//! `timesteps` reproduces `DDIMScheduler.set_timesteps` / `DDPMScheduler.set_timesteps`
//! (identical code in both), including numpy's float arithmetic and its round-half-to-even.
//! `dpm_timesteps` reproduces `DPMSolverMultistepScheduler.set_timesteps`, which spaces S + 1
//! points and drops the one at (or nearest) 0, so its leading and linspace lists differ.

use std::fmt;
use std::str::FromStr;

use crate::CoreError;

/// diffusers' `timestep_spacing` (see table 2 of "Common Diffusion Noise Schedules and Sample
/// Steps are Flawed" for why the choice matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// `(0..S) * (T / S)` (integer division) `+ steps_offset`: the DDIM paper's choice.
    Leading,
    /// `round(arange(T, 0, -T/S)) - 1`: always starts at T-1; ignores steps_offset.
    Trailing,
    /// `round(linspace(0, T-1, S))`: both ends included; ignores steps_offset.
    Linspace,
}

impl fmt::Display for Spacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
            Spacing::Linspace => "linspace",
        })
    }
}

impl FromStr for Spacing {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            _ => Err(CoreError::UnknownName {
                what: "timestep spacing",
                value: s.into(),
                expected: "leading, trailing, linspace",
            }),
        }
    }
}

/// The descending training timesteps of an S-step sampler over T training steps.
///
/// Exactly diffusers' `set_timesteps(S)`, with one deliberate difference: for some (T, S)
/// (e.g. T=100, S=29) numpy's float `arange` in `Trailing` yields
/// an extra element ≈ 0, which diffusers turns into a bogus timestep -1 (then indexes ᾱ[-1],
/// the *last* entry). We return exactly S timesteps, i.e. drop that element.
///
/// Errors: S = 0 or S > T, or `steps_offset` pushing a `Leading` timestep to T or beyond.
pub fn timesteps(
    spacing: Spacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>, CoreError> {
    let (t, s) = (num_train_timesteps, num_inference_steps);
    if s == 0 || s > t {
        return Err(CoreError::BadSteps { steps: s, num_train_timesteps: t });
    }
    let ts: Vec<usize> = match spacing {
        Spacing::Leading => {
            let ratio = t / s;
            (0..s).rev().map(|i| (i * ratio).saturating_add(steps_offset)).collect()
        }
        Spacing::Trailing => {
            // np.arange(T, 0, -T/S): numpy stores `start` and `start + step`, then fills
            // element i >= 2 with `start + i * ((start + step) - start)`.
            let start = t as f64;
            let next = start + -(t as f64 / s as f64);
            let delta = next - start;
            (0..s)
                .map(|i| match i {
                    0 => start,
                    1 => next,
                    _ => start + i as f64 * delta,
                })
                .map(|v| v.round_ties_even() as usize - 1)
                .collect()
        }
        Spacing::Linspace => {
            // np.linspace(0, T-1, S): `i * step + 0.0`, the last element set to `stop` exactly.
            let stop = (t - 1) as f64;
            let step = if s > 1 { stop / (s - 1) as f64 } else { 0.0 };
            (0..s)
                .rev()
                .map(|i| if s > 1 && i == s - 1 { stop } else { i as f64 * step + 0.0 })
                .map(|v| v.round_ties_even() as usize)
                .collect()
        }
    };
    if let Some(&max) = ts.first().filter(|&&m| m >= t) {
        return Err(CoreError::TimestepOutOfRange { steps_offset, timestep: max, num_train_timesteps: t });
    }
    Ok(ts)
}

/// The descending training timesteps diffusers' `DPMSolverMultistepScheduler.set_timesteps(S)`
/// visits (with its default `lambda_min_clipped = -inf`, so the range is the whole 0..T):
/// - `Leading`: `(1..=S) * (T // (S+1)) + steps_offset`;
/// - `Linspace`: `round(linspace(0, T-1, S+1))` without its first point 0;
/// - `Trailing`: the same list as `timesteps` (and the same dropped numpy extra element).
///
/// The solver divides by the log-SNR gap between consecutive timesteps, so a list that repeats
/// a timestep (`Leading` or `Linspace` with S = T) is an error here; diffusers would step
/// through it and produce NaN/inf.
pub fn dpm_timesteps(
    spacing: Spacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>, CoreError> {
    let (t, s) = (num_train_timesteps, num_inference_steps);
    if s == 0 || s > t {
        return Err(CoreError::BadSteps { steps: s, num_train_timesteps: t });
    }
    let ts: Vec<usize> = match spacing {
        Spacing::Trailing => return timesteps(spacing, t, s, steps_offset),
        Spacing::Leading => {
            let ratio = t / (s + 1);
            (1..=s).rev().map(|i| (i * ratio).saturating_add(steps_offset)).collect()
        }
        Spacing::Linspace => {
            // np.linspace(0, T-1, S+1): `i * step + 0.0`, the last point (i = S) exactly T-1.
            let stop = (t - 1) as f64;
            let step = stop / s as f64;
            (1..=s)
                .rev()
                .map(|i| if i == s { stop } else { i as f64 * step + 0.0 })
                .map(|v| v.round_ties_even() as usize)
                .collect()
        }
    };
    if let Some(&max) = ts.first().filter(|&&m| m >= t) {
        return Err(CoreError::TimestepOutOfRange { steps_offset, timestep: max, num_train_timesteps: t });
    }
    if ts.windows(2).any(|w| w[1] >= w[0]) {
        return Err(CoreError::RepeatedTimestep { spacing: spacing.to_string(), steps: s, num_train_timesteps: t });
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
            assert_eq!(k.to_string().parse::<Spacing>().unwrap(), k);
        }
        assert!(matches!("lead".parse::<Spacing>(), Err(CoreError::UnknownName { .. })));
    }

    #[test]
    fn leading_50_of_1000_is_980_down_to_0() {
        let ts = timesteps(Spacing::Leading, 1000, 50, 0).unwrap();
        let want: Vec<usize> = (0..50).rev().map(|i| i * 20).collect();
        assert_eq!(ts, want);
        assert_eq!((ts[0], ts[49]), (980, 0));
        let off = timesteps(Spacing::Leading, 1000, 50, 1).unwrap();
        assert_eq!((off[0], off[49]), (981, 1));
    }

    #[test]
    fn leading_with_remainder_uses_integer_ratio() {
        // 1000 // 3 = 333.
        assert_eq!(timesteps(Spacing::Leading, 1000, 3, 0).unwrap(), vec![666, 333, 0]);
    }

    #[test]
    fn trailing_starts_at_t_minus_1() {
        let ts = timesteps(Spacing::Trailing, 1000, 10, 7).unwrap();
        assert_eq!(ts, vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        assert_eq!(timesteps(Spacing::Trailing, 1000, 3, 0).unwrap(), vec![999, 666, 332]);
    }

    #[test]
    fn trailing_never_returns_the_extra_numpy_element() {
        for s in 1..=100 {
            let ts = timesteps(Spacing::Trailing, 100, s, 0).unwrap();
            assert_eq!(ts.len(), s);
            assert_eq!(ts[0], 99);
            assert!(ts.windows(2).all(|w| w[1] < w[0]), "S={s}: {ts:?}");
        }
    }

    #[test]
    fn linspace_includes_both_ends_and_rounds_half_to_even() {
        let ts = timesteps(Spacing::Linspace, 1000, 10, 5).unwrap();
        assert_eq!(ts, vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
        // numpy rounds halves to even: 499.5 -> 500, 1.5 -> 2, but 2.5 -> 2.
        assert_eq!(timesteps(Spacing::Linspace, 1000, 3, 0).unwrap(), vec![999, 500, 0]);
        assert_eq!(timesteps(Spacing::Linspace, 4, 3, 0).unwrap(), vec![3, 2, 0]); // 1.5 -> 2
        assert_eq!(timesteps(Spacing::Linspace, 6, 3, 0).unwrap(), vec![5, 2, 0]); // 2.5 -> 2
        assert_eq!(timesteps(Spacing::Linspace, 1000, 1, 0).unwrap(), vec![0]);
    }

    #[test]
    fn every_spacing_allows_s_equal_t() {
        let all: Vec<usize> = (0..1000).rev().collect();
        for sp in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
            assert_eq!(timesteps(sp, 1000, 1000, 0).unwrap(), all, "{sp}");
        }
    }

    #[test]
    fn bad_step_counts_and_offsets_are_errors() {
        assert_eq!(
            timesteps(Spacing::Leading, 1000, 0, 0),
            Err(CoreError::BadSteps { steps: 0, num_train_timesteps: 1000 })
        );
        assert!(matches!(timesteps(Spacing::Trailing, 1000, 1001, 0), Err(CoreError::BadSteps { steps: 1001, .. })));
        let err = timesteps(Spacing::Leading, 1000, 1000, 1).unwrap_err();
        assert_eq!(err, CoreError::TimestepOutOfRange { steps_offset: 1, timestep: 1000, num_train_timesteps: 1000 });
        assert!(err.to_string().contains("1000"), "{err}");
        let huge = timesteps(Spacing::Leading, 1000, 10, usize::MAX).unwrap_err();
        assert!(matches!(huge, CoreError::TimestepOutOfRange { timestep: usize::MAX, .. }), "{huge}");
    }

    #[test]
    fn dpm_spacing_places_s_plus_1_points_and_drops_the_one_at_0() {
        // diffusers: linspace(0, 999, 11) = 0, 99.9, 199.8, ... rounded, 0 dropped.
        let lin = dpm_timesteps(Spacing::Linspace, 1000, 10, 3).unwrap();
        assert_eq!(lin, vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
        // 1000 // 11 = 90; steps_offset is added to leading only.
        let lead = dpm_timesteps(Spacing::Leading, 1000, 10, 1).unwrap();
        assert_eq!(lead, (1..=10).rev().map(|i| i * 90 + 1).collect::<Vec<_>>());
        let trailing = timesteps(Spacing::Trailing, 1000, 10, 0).unwrap();
        assert_eq!(dpm_timesteps(Spacing::Trailing, 1000, 10, 1).unwrap(), trailing);
        assert_eq!(dpm_timesteps(Spacing::Linspace, 1000, 1, 0).unwrap(), vec![999]);
        assert_eq!(dpm_timesteps(Spacing::Leading, 1000, 1, 0).unwrap(), vec![500]);
    }

    #[test]
    fn dpm_spacing_rejects_repeated_timesteps_and_bad_counts() {
        for sp in [Spacing::Leading, Spacing::Linspace] {
            let err = dpm_timesteps(sp, 1000, 1000, 0).unwrap_err();
            assert!(matches!(err, CoreError::RepeatedTimestep { steps: 1000, .. }), "{sp}: {err}");
            let ok = dpm_timesteps(sp, 1000, 999, 0).unwrap();
            assert!(ok.windows(2).all(|w| w[1] < w[0]), "{sp}");
        }
        assert_eq!(dpm_timesteps(Spacing::Trailing, 1000, 1000, 0).unwrap(), (0..1000).rev().collect::<Vec<_>>());
        assert!(matches!(dpm_timesteps(Spacing::Linspace, 1000, 0, 0), Err(CoreError::BadSteps { steps: 0, .. })));
        let err = dpm_timesteps(Spacing::Leading, 1000, 10, 100).unwrap_err();
        assert_eq!(err, CoreError::TimestepOutOfRange { steps_offset: 100, timestep: 1000, num_train_timesteps: 1000 });
    }
}
