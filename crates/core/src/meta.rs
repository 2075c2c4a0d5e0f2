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
//! | `edgediff.trained_betas` | `0.0001,0.0002,...` | optional: the betas themselves (T of them), in place of `beta_schedule` (diffusers' `trained_betas`) |
//! | `edgediff.dpm_clip_sample` | `false` | optional: whether DPM-Solver++ clamps x0 by `clip_sample` too (default true; diffusers' DPM-Solver never does) |
//! | `edgediff.rescale_betas_zero_snr` | `true` | optional: betas rescaled to a zero terminal SNR (diffusers' `rescale_betas_zero_snr`; default false) |
//! | `edgediff.null_class` | `none` | optional, conditional models: `none` = the class table has no null (unconditional) class, so sampling needs a class and guidance is impossible; absent = index `class_names.len()` is the null class |
//! | `edgediff.timestep_spacing` | `trailing` | optional: the spacing the sampler uses unless `--spacing` says otherwise |
//! | `edgediff.steps_offset` | `1` | optional: the default `--steps-offset` |
//! | `edgediff.set_alpha_to_one` | `false` | optional: the default `--set-alpha-to-one` |
//! | `edgediff.float_order` | `tract` | optional: `fixed` (the default) computes every float layer in one fixed order, the same bytes on every CPU; `tract` keeps tract's per-CPU kernels, for an int8 model whose quality was measured with them |
//!
//! Graph contract: inputs `sample` f32 `[N, C, H, W]` and `timestep` f32 `[N]` (the integer
//! training timestep as a float), optional `class_labels` i64 `[N]` (index into `class_names`,
//! `class_names.len()` = the null/unconditional class); one output, the prediction, `[N, C, H, W]`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::{CoreError, ModelSchedule, SamplerSettings, Spacing};

mod parse;

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
pub const TRAINED_BETAS: &str = "edgediff.trained_betas";
pub const RESCALE_BETAS_ZERO_SNR: &str = "edgediff.rescale_betas_zero_snr";
pub const DPM_CLIP_SAMPLE: &str = "edgediff.dpm_clip_sample";
pub const NULL_CLASS: &str = "edgediff.null_class";
pub const TIMESTEP_SPACING: &str = "edgediff.timestep_spacing";
pub const STEPS_OFFSET: &str = "edgediff.steps_offset";
pub const SET_ALPHA_TO_ONE: &str = "edgediff.set_alpha_to_one";
pub const FLOAT_ORDER: &str = "edgediff.float_order";

/// The value of [`NULL_CLASS`] for a class table without a null class.
pub const NO_NULL_CLASS: &str = "none";
/// The most training timesteps a model may declare: far above any schedule in use (1000 is
/// usual), low enough that the schedule's tables stay small.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

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

/// How the runtime computes a model's float layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatOrder {
    /// One fixed order of our own: the same bytes on every CPU, thread count and batch.
    #[default]
    Fixed,
    /// tract's kernels, which pick their order per CPU. An int8 network turns a last-bit change
    /// into a whole quantisation step near a rounding tie, so an int8 model whose quality was
    /// measured with tract's arithmetic keeps it.
    Tract,
}

impl fmt::Display for FloatOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FloatOrder::Fixed => "fixed",
            FloatOrder::Tract => "tract",
        })
    }
}

impl FromStr for FloatOrder {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "fixed" => Ok(FloatOrder::Fixed),
            "tract" => Ok(FloatOrder::Tract),
            _ => Err(CoreError::BadMetadata { key: FLOAT_ORDER, value: s.into(), expected: "fixed or tract" }),
        }
    }
}

/// Everything a sampler needs to know about a model, parsed from `metadata_props`
/// ([`ModelMeta::from_props`], in `meta/parse.rs`).
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
    /// Whether index `class_names.len()` of a conditional model is a null (unconditional) class:
    /// true for models trained with label dropout (ours), false for class tables without one
    /// (diffusers' `num_class_embeds`), which sample only a given class, unguided.
    pub has_null_class: bool,
    /// Conditional models: the classifier-free guidance scale a class is sampled with when the
    /// caller names none (chosen by evaluation and stored at export, so a model file carries
    /// the setting it was measured at). `None` = 1, plain conditional sampling.
    pub guidance_scale: Option<f32>,
    /// How the model's authors sample it, where they said (diffusers' scheduler config): the
    /// defaults a sampler's flags override.
    pub sampling: SamplingDefaults,
    /// How the float layers are computed (absent = [`FloatOrder::Fixed`]).
    pub float_order: FloatOrder,
}

/// The sampler settings a model recommends; `None` = the sampler's own default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingDefaults {
    pub spacing: Option<Spacing>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
}

impl ModelMeta {
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
        if let Some(betas) = &s.trained_betas {
            put(TRAINED_BETAS, betas.iter().map(f32::to_string).collect::<Vec<_>>().join(","));
        }
        if s.rescale_betas_zero_snr {
            put(RESCALE_BETAS_ZERO_SNR, "true".into());
        }
        if !s.dpm_clip_sample {
            put(DPM_CLIP_SAMPLE, "false".into());
        }
        if !self.class_names.is_empty() {
            put(CLASS_NAMES, self.class_names.join(","));
            if !self.has_null_class {
                put(NULL_CLASS, NO_NULL_CLASS.into());
            }
        }
        if let Some(w) = self.guidance_scale {
            put(GUIDANCE_SCALE, w.to_string());
        }
        let d = &self.sampling;
        if let Some(spacing) = d.spacing {
            put(TIMESTEP_SPACING, spacing.to_string());
        }
        if let Some(offset) = d.steps_offset {
            put(STEPS_OFFSET, offset.to_string());
        }
        if let Some(one) = d.set_alpha_to_one {
            put(SET_ALPHA_TO_ONE, one.to_string());
        }
        if self.float_order != FloatOrder::Fixed {
            put(FLOAT_ORDER, self.float_order.to_string());
        }
        m
    }

    /// Elements of one image, C*H*W.
    pub fn image_len(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    /// The label of the null (unconditional) class, if the model has one.
    pub fn null_label(&self) -> Option<i64> {
        self.has_null_class.then_some(self.class_names.len() as i64)
    }

    /// The labels the class table accepts: every class, and the null class if there is one.
    pub fn label_count(&self) -> usize {
        self.class_names.len() + usize::from(self.has_null_class && !self.class_names.is_empty())
    }

    /// The sampler's defaults ([`SamplerSettings::default`]) with what the model recommends.
    pub fn default_settings(&self) -> SamplerSettings {
        let base = SamplerSettings::default();
        let d = &self.sampling;
        SamplerSettings {
            spacing: d.spacing.unwrap_or(base.spacing),
            steps_offset: d.steps_offset.unwrap_or(base.steps_offset),
            set_alpha_to_one: d.set_alpha_to_one.unwrap_or(base.set_alpha_to_one),
            ..base
        }
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
