//! [`ModelMeta::from_props`]: the `edgediff.*` key/value pairs, each checked and bounded, into a
//! [`ModelMeta`]. Every error names the key, the value found and what was expected.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::*;
use crate::{BetaSchedule, CoreError, ModelSchedule, PredictionType};

/// The largest image side a model may declare: far above the small models this project runs,
/// low enough that a batch's buffers cannot ask for an absurd allocation.
pub const MAX_IMAGE_SIZE: usize = 2048;

/// The largest magnitude a value-range end may have: pixel ranges are [-1, 1], [0, 1] or
/// [0, 255]; anything near f32's limits would turn the sampler's arithmetic into Inf.
pub const MAX_VALUE_MAGNITUDE: f32 = 10_000.0;

/// Typed, checked access to the pairs.
struct Props<'a>(&'a BTreeMap<String, String>);

fn bad(key: &'static str, value: &str, expected: &'static str) -> CoreError {
    CoreError::BadMetadata { key, value: value.into(), expected }
}

impl Props<'_> {
    fn required(&self, key: &'static str) -> Result<&str, CoreError> {
        self.0.get(key).map(String::as_str).ok_or(CoreError::MissingMetadata(key))
    }

    fn parse<T: FromStr>(&self, key: &'static str, expected: &'static str) -> Result<T, CoreError> {
        let v = self.required(key)?;
        v.trim().parse().map_err(|_| bad(key, v, expected))
    }

    fn optional<T: FromStr>(&self, key: &'static str, expected: &'static str) -> Result<Option<T>, CoreError> {
        self.0.get(key).map(|v| v.trim().parse().map_err(|_| bad(key, v, expected))).transpose()
    }

    /// An integer in `lo..=hi`.
    fn bounded(&self, key: &'static str, lo: usize, hi: usize, expected: &'static str) -> Result<usize, CoreError> {
        let n: usize = self.parse(key, expected)?;
        if !(lo..=hi).contains(&n) {
            return Err(bad(key, &n.to_string(), expected));
        }
        Ok(n)
    }

    /// A finite number >= 0, if present.
    fn non_negative(&self, key: &'static str, expected: &'static str) -> Result<Option<f32>, CoreError> {
        match self.optional::<f32>(key, expected)? {
            Some(x) if !(x.is_finite() && x >= 0.0) => Err(bad(key, &self.0[key], expected)),
            other => Ok(other),
        }
    }
}

impl ModelMeta {
    /// Parses the key/value pairs; a missing, malformed or out-of-range key is an error naming it.
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<Self, CoreError> {
        let p = Props(props);
        let format = p.required(FORMAT)?;
        if format != FORMAT_VERSION {
            return Err(bad(FORMAT, format, "1"));
        }
        let schedule = schedule(&p)?;
        // Build the betas and ᾱ once here, so a schedule that sampling would refuse is refused
        // by every command that reads the model (`sampler info` included).
        schedule.noise_schedule()?;
        let class_names: Vec<String> = props
            .get(CLASS_NAMES)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let has_null_class = match props.get(NULL_CLASS).map(|v| v.trim()) {
            None => true,
            Some(NO_NULL_CLASS) if class_names.is_empty() => {
                return Err(bad(NULL_CLASS, NO_NULL_CLASS, "no key on an unconditional model (no class_names)"))
            }
            Some(NO_NULL_CLASS) => false,
            Some(v) => return Err(bad(NULL_CLASS, v, "none (or no key: the class after the last is the null class)")),
        };
        let sampling = SamplingDefaults {
            spacing: p.optional(TIMESTEP_SPACING, "leading, trailing or linspace")?,
            steps_offset: p.optional(STEPS_OFFSET, "an integer >= 0")?,
            set_alpha_to_one: p.optional(SET_ALPHA_TO_ONE, "true or false")?,
        };
        if let Some(offset) = sampling.steps_offset.filter(|&o| o >= schedule.num_train_timesteps) {
            return Err(bad(STEPS_OFFSET, &offset.to_string(), "an integer below num_train_timesteps"));
        }
        let value_range = value_range(&p)?;
        check_clip(&p, schedule.clip_sample, value_range)?;
        Ok(ModelMeta {
            model_name: p.required(MODEL_NAME)?.to_string(),
            schedule,
            image_size: p.bounded(IMAGE_SIZE, 1, MAX_IMAGE_SIZE, "an integer in 1..=2048")?,
            channels: p.bounded(CHANNELS, 1, 3, "1 or 3").and_then(|c| match c {
                2 => Err(bad(CHANNELS, "2", "1 or 3")),
                c => Ok(c),
            })?,
            value_range,
            precision: p.optional(PRECISION, "fp32 or int8")?.unwrap_or(Precision::Fp32),
            training_steps: p.optional(TRAINING_STEPS, "an integer")?.unwrap_or(0),
            class_names,
            has_null_class,
            guidance_scale: guidance_scale(&p)?,
            sampling,
            float_order: p.optional(FLOAT_ORDER, "fixed or tract")?.unwrap_or_default(),
        })
    }
}

/// `LOW,HIGH`, both finite and within ±[`MAX_VALUE_MAGNITUDE`], LOW < HIGH.
fn value_range(p: &Props) -> Result<(f32, f32), CoreError> {
    let range = p.required(VALUE_RANGE)?;
    let within = |v: f32| v.is_finite() && v.abs() <= MAX_VALUE_MAGNITUDE;
    range
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .filter(|&(a, b): &(f32, f32)| within(a) && within(b) && a < b)
        .ok_or_else(|| bad(VALUE_RANGE, range, "LOW,HIGH with LOW < HIGH, each within ±10000"))
}

/// A clip range no wider than the value range's largest end: clipping x0 to ±2 for pixels in
/// [-1, 1] would mean the key was written for another model.
fn check_clip(p: &Props, clip: Option<f32>, (low, high): (f32, f32)) -> Result<(), CoreError> {
    match clip {
        Some(c) if c > low.abs().max(high.abs()) => {
            Err(bad(CLIP_SAMPLE, &p.0[CLIP_SAMPLE], "0 (no clipping) or at most the value range's largest |end|"))
        }
        _ => Ok(()),
    }
}

/// The model's default guidance scale, within what `--guidance` accepts.
fn guidance_scale(p: &Props) -> Result<Option<f32>, CoreError> {
    let expected = "a number in 0..=100";
    match p.non_negative(GUIDANCE_SCALE, expected)? {
        Some(w) if w > crate::guidance::MAX_GUIDANCE => Err(bad(GUIDANCE_SCALE, &p.0[GUIDANCE_SCALE], expected)),
        w => Ok(w),
    }
}

/// The [`ModelSchedule`] keys.
fn schedule(p: &Props) -> Result<ModelSchedule, CoreError> {
    let num_train_timesteps = p.bounded(NUM_TRAIN_TIMESTEPS, 2, MAX_TRAIN_TIMESTEPS, "an integer in 2..=100000")?;
    let trained_betas = match p.0.get(TRAINED_BETAS) {
        Some(v) => Some(trained_betas(v, num_train_timesteps)?),
        None => None,
    };
    let clip = p.non_negative(CLIP_SAMPLE, "a finite number >= 0 (0 = no clipping)")?;
    Ok(ModelSchedule {
        num_train_timesteps,
        beta_schedule: p.parse::<BetaSchedule>(BETA_SCHEDULE, "linear, scaled_linear or squaredcos_cap_v2")?,
        beta_start: p.parse(BETA_START, "a number")?,
        beta_end: p.parse(BETA_END, "a number")?,
        trained_betas,
        rescale_betas_zero_snr: p.optional(RESCALE_BETAS_ZERO_SNR, "true or false")?.unwrap_or(false),
        prediction_type: p.parse::<PredictionType>(PREDICTION_TYPE, "epsilon, v_prediction or sample")?,
        clip_sample: clip.filter(|&c| c > 0.0),
        dpm_clip_sample: p.optional(DPM_CLIP_SAMPLE, "true or false")?.unwrap_or(true),
    })
}

/// `count` comma-separated betas, each in (0, 1).
fn trained_betas(v: &str, count: usize) -> Result<Vec<f32>, CoreError> {
    let expected = "num_train_timesteps comma-separated numbers in (0, 1)";
    let betas: Option<Vec<f32>> =
        v.split(',').map(|b| b.trim().parse::<f32>().ok().filter(|b| *b > 0.0 && *b < 1.0)).collect();
    let shown: String =
        if v.chars().count() > 40 { v.chars().take(40).chain(['…']).collect() } else { v.to_string() };
    match betas {
        Some(b) if b.len() == count => Ok(b),
        _ => Err(bad(TRAINED_BETAS, &shown, expected)),
    }
}
