//! The model's self-description, stored in ONNX `metadata_props`.
//!
//! The trainer writes these keys when it exports; the runtime reads them so a model file
//! needs no side files. Every key is defined here once. Values are plain strings.
//!
//! | key | example | meaning |
//! |---|---|---|
//! | `edgediff.format` | `1` | version of this key set |
//! | `edgediff.model_name` | `sprites-eps-32` | human name, printed by `sampler info`, written into PNGs |
//! | `edgediff.num_train_timesteps` | `1000` | T of the training schedule |
//! | `edgediff.beta_schedule` | `linear` | `linear`, `scaled_linear` or `squaredcos_cap_v2` (diffusers names) |
//! | `edgediff.beta_start` / `edgediff.beta_end` | `0.0001` / `0.02` | ends of the linear/scaled_linear schedules |
//! | `edgediff.prediction_type` | `epsilon` | `epsilon`, `v_prediction` or `sample` |
//! | `edgediff.image_size` | `32` | height = width in pixels |
//! | `edgediff.channels` | `3` | C of `sample` (1 = grey, 3 = RGB) |
//! | `edgediff.value_range` | `-1,1` | network pixel range; maps linearly to 0..255 |
//! | `edgediff.clip_sample` | `1` | optional: clip predicted x0 to ±this (0 = no clipping) |
//! | `edgediff.precision` | `fp32` | `fp32` or `int8` |
//! | `edgediff.training_steps` | `20000` | optimiser steps the weights saw |
//! | `edgediff.class_names` | `circle,square` | optional: classes of a conditional model (`class_labels` input) |
//! | `edgediff.guidance_scale` | `3` | optional, conditional models: the guidance scale `--class` uses when no `--guidance` is given (absent = 1) |
//! | `edgediff.quantization` | `form=qoperator; ...` | optional, int8 models: how `train quantize` made it (informational) |
//!
//! Graph contract: inputs `sample` f32 `[N, C, H, W]` and `timestep` f32 `[N]` (the integer
//! training timestep as a float), optional `class_labels` i64 `[N]` (index into `class_names`,
//! `class_names.len()` = the null/unconditional class); one output, the prediction, `[N, C, H, W]`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::{CoreError, ModelSchedule};

pub const FORMAT: &str = "edgediff.format";
pub const MODEL_NAME: &str = "edgediff.model_name";
pub const NUM_TRAIN_TIMESTEPS: &str = "edgediff.num_train_timesteps";
pub const BETA_SCHEDULE: &str = "edgediff.beta_schedule";
pub const BETA_START: &str = "edgediff.beta_start";
pub const BETA_END: &str = "edgediff.beta_end";
pub const PREDICTION_TYPE: &str = "edgediff.prediction_type";
pub const IMAGE_SIZE: &str = "edgediff.image_size";
pub const CHANNELS: &str = "edgediff.channels";
pub const VALUE_RANGE: &str = "edgediff.value_range";
pub const CLIP_SAMPLE: &str = "edgediff.clip_sample";
pub const PRECISION: &str = "edgediff.precision";
pub const TRAINING_STEPS: &str = "edgediff.training_steps";
pub const CLASS_NAMES: &str = "edgediff.class_names";
pub const QUANTIZATION: &str = "edgediff.quantization";
pub const GUIDANCE_SCALE: &str = "edgediff.guidance_scale";

/// Names of the graph's inputs and the version this crate writes.
pub const INPUT_SAMPLE: &str = "sample";
pub const INPUT_TIMESTEP: &str = "timestep";
pub const INPUT_CLASS_LABELS: &str = "class_labels";
pub const FORMAT_VERSION: &str = "1";

/// Weight precision of an exported model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

impl FromStr for Precision {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            _ => Err(CoreError::BadMetadata { key: PRECISION, value: s.into(), expected: "fp32 or int8" }),
        }
    }
}

/// Everything a sampler needs to know about a model, parsed from `metadata_props`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub model_name: String,
    /// The diffusion process the model was trained for (schedule, prediction type, clipping).
    pub schedule: ModelSchedule,
    pub image_size: usize,
    pub channels: usize,
    /// Network pixel range (low, high), mapped linearly to 0..255.
    pub value_range: (f32, f32),
    pub precision: Precision,
    pub training_steps: u64,
    /// Empty for an unconditional model.
    pub class_names: Vec<String>,
    /// Conditional models: the classifier-free guidance scale a class is sampled with when the
    /// caller names none (chosen by evaluation and stored at export, so a model file carries
    /// the setting it was measured at). `None` = 1, plain conditional sampling.
    pub guidance_scale: Option<f32>,
}

impl ModelMeta {
    /// Parses the key/value pairs; a missing or malformed required key is an error naming it.
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<Self, CoreError> {
        let get = |key: &'static str| props.get(key).map(String::as_str).ok_or(CoreError::MissingMetadata(key));
        fn parse<T: FromStr>(key: &'static str, v: &str, expected: &'static str) -> Result<T, CoreError> {
            v.trim().parse().map_err(|_| CoreError::BadMetadata { key, value: v.into(), expected })
        }
        let format = get(FORMAT)?;
        if format != FORMAT_VERSION {
            return Err(CoreError::BadMetadata { key: FORMAT, value: format.into(), expected: "1" });
        }
        let range = get(VALUE_RANGE)?;
        let value_range = range
            .split_once(',')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .filter(|(a, b): &(f32, f32)| a.is_finite() && b.is_finite() && a < b)
            .ok_or(CoreError::BadMetadata {
                key: VALUE_RANGE,
                value: range.into(),
                expected: "LOW,HIGH with LOW < HIGH",
            })?;
        let clip: f32 = match props.get(CLIP_SAMPLE) {
            Some(v) => parse(CLIP_SAMPLE, v, "a non-negative number")?,
            None => 0.0,
        };
        let schedule = ModelSchedule {
            num_train_timesteps: parse(NUM_TRAIN_TIMESTEPS, get(NUM_TRAIN_TIMESTEPS)?, "a positive integer")?,
            beta_schedule: parse(BETA_SCHEDULE, get(BETA_SCHEDULE)?, "linear, scaled_linear or squaredcos_cap_v2")?,
            beta_start: parse(BETA_START, get(BETA_START)?, "a number")?,
            beta_end: parse(BETA_END, get(BETA_END)?, "a number")?,
            prediction_type: parse(PREDICTION_TYPE, get(PREDICTION_TYPE)?, "epsilon, v_prediction or sample")?,
            clip_sample: (clip > 0.0).then_some(clip),
        };
        let meta = ModelMeta {
            model_name: get(MODEL_NAME)?.to_string(),
            schedule,
            image_size: parse(IMAGE_SIZE, get(IMAGE_SIZE)?, "a positive integer")?,
            channels: parse(CHANNELS, get(CHANNELS)?, "1 or 3")?,
            value_range,
            precision: match props.get(PRECISION) {
                Some(v) => v.parse()?,
                None => Precision::Fp32,
            },
            training_steps: match props.get(TRAINING_STEPS) {
                Some(v) => parse(TRAINING_STEPS, v, "an integer")?,
                None => 0,
            },
            class_names: props
                .get(CLASS_NAMES)
                .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
            guidance_scale: match props.get(GUIDANCE_SCALE) {
                Some(v) => Some(
                    parse::<f32>(GUIDANCE_SCALE, v, "a finite number >= 0")
                        .ok()
                        .filter(|w| w.is_finite() && *w >= 0.0)
                        .ok_or(CoreError::BadMetadata {
                            key: GUIDANCE_SCALE,
                            value: v.clone(),
                            expected: "a finite number >= 0",
                        })?,
                ),
                None => None,
            },
        };
        if meta.schedule.num_train_timesteps == 0 {
            return Err(CoreError::BadMetadata {
                key: NUM_TRAIN_TIMESTEPS,
                value: "0".into(),
                expected: "a positive integer",
            });
        }
        if meta.image_size == 0 {
            return Err(CoreError::BadMetadata { key: IMAGE_SIZE, value: "0".into(), expected: "a positive integer" });
        }
        if meta.channels != 1 && meta.channels != 3 {
            return Err(CoreError::BadMetadata { key: CHANNELS, value: meta.channels.to_string(), expected: "1 or 3" });
        }
        Ok(meta)
    }

    /// The key/value pairs to store in an exported model.
    pub fn to_props(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put(FORMAT, FORMAT_VERSION.into());
        put(MODEL_NAME, self.model_name.clone());
        let s = &self.schedule;
        put(NUM_TRAIN_TIMESTEPS, s.num_train_timesteps.to_string());
        put(BETA_SCHEDULE, s.beta_schedule.to_string());
        put(BETA_START, s.beta_start.to_string());
        put(BETA_END, s.beta_end.to_string());
        put(PREDICTION_TYPE, s.prediction_type.to_string());
        put(IMAGE_SIZE, self.image_size.to_string());
        put(CHANNELS, self.channels.to_string());
        put(VALUE_RANGE, format!("{},{}", self.value_range.0, self.value_range.1));
        put(CLIP_SAMPLE, s.clip_sample.unwrap_or(0.0).to_string());
        put(PRECISION, self.precision.to_string());
        put(TRAINING_STEPS, self.training_steps.to_string());
        if !self.class_names.is_empty() {
            put(CLASS_NAMES, self.class_names.join(","));
        }
        if let Some(w) = self.guidance_scale {
            put(GUIDANCE_SCALE, w.to_string());
        }
        m
    }

    /// Elements of one image, C*H*W.
    pub fn image_len(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    /// The index of the class `class` names: one of `class_names`, or an index into them.
    pub fn class_index(&self, class: &str) -> Result<usize, CoreError> {
        let names = &self.class_names;
        let reason = match (names.iter().position(|n| n == class), class.parse::<usize>()) {
            (Some(i), _) => return Ok(i),
            (None, Ok(i)) if i < names.len() => return Ok(i),
            _ if names.is_empty() => "the model names no classes".to_string(),
            _ => format!("unknown class; the model has {} (or an index 0..={})", names.join(", "), names.len() - 1),
        };
        Err(CoreError::UnknownClass { class: class.to_string(), reason })
    }
}
