//! What the network predicts, and how to turn that into (x0, ε) and back.
//!
//! With ᾱ = alpha_bar, a noisy sample is `x_t = sqrt(ᾱ)·x0 + sqrt(1-ᾱ)·ε`. The network may
//! predict ε ("epsilon"), x0 ("sample") or the velocity `v = sqrt(ᾱ)·ε - sqrt(1-ᾱ)·x0`
//! ("v_prediction"). The formulas and their f32 operation order are diffusers' (DDIMScheduler.step),
//! so schedulers built on them reproduce diffusers bit for bit.

use std::fmt;
use std::str::FromStr;

use crate::CoreError;

/// diffusers' `prediction_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

impl fmt::Display for PredictionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        })
    }
}

impl FromStr for PredictionType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "epsilon" => Ok(PredictionType::Epsilon),
            "v_prediction" => Ok(PredictionType::VPrediction),
            "sample" => Ok(PredictionType::Sample),
            _ => Err(CoreError::UnknownName {
                what: "prediction type",
                value: s.into(),
                expected: "epsilon, v_prediction, sample",
            }),
        }
    }
}

/// `sqrt(ᾱ)` and `sqrt(1 - ᾱ)` in f32, as diffusers computes `alpha_prod_t ** 0.5` and
/// `beta_prod_t ** 0.5` from float32 tensors.
#[inline]
pub(crate) fn sqrt_ab(alpha_bar: f32) -> (f32, f32) {
    (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt())
}

/// (x0, ε) from one model output, given `sa = sqrt(ᾱ)` and `sb = sqrt(1-ᾱ)`.
#[inline]
pub(crate) fn x0_eps(kind: PredictionType, model_output: f32, sample: f32, sa: f32, sb: f32) -> (f32, f32) {
    match kind {
        PredictionType::Epsilon => ((sample - sb * model_output) / sa, model_output),
        PredictionType::Sample => (model_output, (sample - sa * model_output) / sb),
        PredictionType::VPrediction => (sa * sample - sb * model_output, sa * model_output + sb * sample),
    }
}

/// The predicted clean sample x0 and noise ε implied by `model_output` at noisy `sample` x_t.
pub fn to_x0_eps(kind: PredictionType, model_output: f32, sample: f32, alpha_bar: f32) -> (f32, f32) {
    let (sa, sb) = sqrt_ab(alpha_bar);
    x0_eps(kind, model_output, sample, sa, sb)
}

/// What a network of this kind should output for clean `x0` noised with `eps` at ᾱ: the
/// regression target of training (diffusers' `get_velocity` for v).
pub fn training_target(kind: PredictionType, x0: f32, eps: f32, alpha_bar: f32) -> f32 {
    match kind {
        PredictionType::Epsilon => eps,
        PredictionType::Sample => x0,
        PredictionType::VPrediction => {
            let (sa, sb) = sqrt_ab(alpha_bar);
            sa * eps - sb * x0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [PredictionType; 3] = [PredictionType::Epsilon, PredictionType::VPrediction, PredictionType::Sample];

    #[test]
    fn names_round_trip() {
        for k in KINDS {
            assert_eq!(k.to_string().parse::<PredictionType>().unwrap(), k);
        }
        assert!(matches!("v".parse::<PredictionType>(), Err(CoreError::UnknownName { .. })));
    }

    #[test]
    fn target_then_conversion_recovers_x0_and_eps() {
        let cases = [(0.7f32, -1.3f32), (-0.95, 0.2), (0.0, 2.5), (1.0, -0.01)];
        for kind in KINDS {
            for ab in [0.9999f32, 0.9, 0.5, 0.1, 4.0e-5] {
                let (sa, sb) = (ab.sqrt(), (1.0 - ab).sqrt());
                for (x0, eps) in cases {
                    let xt = sa * x0 + sb * eps;
                    let out = training_target(kind, x0, eps, ab);
                    let (x0r, epsr) = to_x0_eps(kind, out, xt, ab);
                    // Recovering x0 from ε divides by sqrt(ᾱ) (and ε from x0 by sqrt(1-ᾱ)):
                    // the f32 rounding of x_t is amplified by that factor.
                    let tol_x0 = 4e-7 * (1.0 + 1.0 / sa) * 4.0;
                    let tol_eps = 4e-7 * (1.0 + 1.0 / sb) * 4.0;
                    assert!((x0r - x0).abs() <= tol_x0, "{kind} ab={ab}: x0 {x0r} vs {x0}");
                    assert!((epsr - eps).abs() <= tol_eps, "{kind} ab={ab}: eps {epsr} vs {eps}");
                }
            }
        }
    }

    #[test]
    fn v_is_the_rotation_of_eps_and_x0() {
        let ab = 0.36f32; // sqrt = 0.6, sqrt(1-ab) = 0.8
        assert!((training_target(PredictionType::VPrediction, 1.0, 0.0, ab) + 0.8).abs() < 1e-7);
        assert!((training_target(PredictionType::VPrediction, 0.0, 1.0, ab) - 0.6).abs() < 1e-7);
        assert_eq!(training_target(PredictionType::Epsilon, 0.3, -0.4, ab), -0.4);
        assert_eq!(training_target(PredictionType::Sample, 0.3, -0.4, ab), 0.3);
    }
}
