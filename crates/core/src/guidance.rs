//! Classifier-free guidance (Ho & Salimans 2022) for class-conditional models.
//!
//! A model trained with label dropout predicts both `cond` (with the class label) and `uncond`
//! (with the null class, index `class_names.len()`). Guidance with scale `w` samples with
//! `uncond + w * (cond - uncond)`: `w = 1` is the plain conditional model, `w = 0` the
//! unconditional one, `w > 1` sharpens towards the class. The combination applies to the model
//! output in whatever prediction type the model has (epsilon, v or x0), as diffusers does.
//!
//! The runtime and the burn reference sampler both combine with [`combine`], so they agree on
//! the arithmetic (plain f32, which Rust never fuses into an FMA: the same bits everywhere).

use crate::CoreError;

/// The largest guidance scale accepted: published models sample at 1 to about 20, and a scale
/// far beyond that only pushes the prediction towards Inf.
pub const MAX_GUIDANCE: f32 = 100.0;

/// How a sampling run uses the class input, decided once from the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guidance {
    /// The null class only: the model's unconditional distribution (also what `w = 0` is).
    Unconditional,
    /// The requested class only, one evaluation per image and step (`w = 1`, or no scale).
    Conditional,
    /// `uncond + scale * (cond - uncond)`: two evaluations per image and step.
    ClassifierFree { scale: f32 },
}

impl Guidance {
    /// `class_given`: whether a class is requested; `scale`: the guidance scale, if given. A
    /// scale without a class is an error rather than silently meaningless; `w = 0` and `w = 1`
    /// take the one-evaluation shortcuts (their results equal the formula's).
    pub fn new(class_given: bool, scale: Option<f32>) -> Result<Guidance, CoreError> {
        if let Some(w) = scale {
            if !(0.0..=MAX_GUIDANCE).contains(&w) {
                return Err(CoreError::BadGuidance(w));
            }
            if !class_given {
                return Err(CoreError::GuidanceWithoutClass(w));
            }
        }
        Ok(match (class_given, scale) {
            (false, _) => Guidance::Unconditional,
            (true, None) => Guidance::Conditional,
            (true, Some(0.0)) => Guidance::Unconditional,
            (true, Some(1.0)) => Guidance::Conditional,
            (true, Some(w)) => Guidance::ClassifierFree { scale: w },
        })
    }

    /// Network evaluations per image and step: the factor to plan a fixed-batch network with
    /// (the two halves of a guided step are one batched call).
    pub fn evaluations_per_image(self) -> usize {
        match self {
            Guidance::ClassifierFree { .. } => 2,
            Guidance::Unconditional | Guidance::Conditional => 1,
        }
    }

    /// Whether the class label is fed at all (`Unconditional` feeds the null class instead).
    pub fn uses_class(self) -> bool {
        !matches!(self, Guidance::Unconditional)
    }
}

/// `out[i] = uncond[i] + scale * (cond[i] - uncond[i])`.
///
/// # Panics
/// If the three slices differ in length (a caller bug, never user input).
pub fn combine(cond: &[f32], uncond: &[f32], scale: f32, out: &mut [f32]) {
    assert!(cond.len() == uncond.len() && cond.len() == out.len(), "guidance: slices differ in length");
    for ((o, &c), &u) in out.iter_mut().zip(cond).zip(uncond) {
        *o = u + scale * (c - u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_shortcuts() {
        assert_eq!(Guidance::new(false, None), Ok(Guidance::Unconditional));
        assert_eq!(Guidance::new(true, None), Ok(Guidance::Conditional));
        assert_eq!(Guidance::new(true, Some(1.0)), Ok(Guidance::Conditional));
        assert_eq!(Guidance::new(true, Some(0.0)), Ok(Guidance::Unconditional));
        assert_eq!(Guidance::new(true, Some(3.0)), Ok(Guidance::ClassifierFree { scale: 3.0 }));
        assert_eq!(Guidance::new(true, Some(3.0)).unwrap().evaluations_per_image(), 2);
        assert_eq!(Guidance::new(true, Some(1.0)).unwrap().evaluations_per_image(), 1);
        assert!(matches!(Guidance::new(false, Some(2.0)), Err(CoreError::GuidanceWithoutClass(_))));
        assert!(matches!(Guidance::new(true, Some(-1.0)), Err(CoreError::BadGuidance(_))));
        assert!(matches!(Guidance::new(true, Some(f32::NAN)), Err(CoreError::BadGuidance(_))));
    }

    #[test]
    fn combine_is_the_cfg_formula() {
        let (cond, uncond) = ([1.0f32, -2.0, 0.5], [0.0f32, 1.0, 0.5]);
        let mut out = [0f32; 3];
        combine(&cond, &uncond, 3.0, &mut out);
        assert_eq!(out, [3.0, -8.0, 0.5]);
        combine(&cond, &uncond, 1.0, &mut out);
        assert_eq!(out, cond, "w = 1 is the conditional output exactly");
        combine(&cond, &uncond, 0.0, &mut out);
        assert_eq!(out, uncond, "w = 0 is the unconditional output exactly");
    }
}
