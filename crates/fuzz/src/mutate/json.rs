//! Structure-aware mutations of diffusers' JSON configurations: a value anywhere in the tree
//! replaced (other type, edge number, known word), a known key added or one removed; or a number
//! written as JSON cannot hold it (`1e999`, `NaN`, beyond 64 bits).

use rand::seq::IndexedRandom;
use rand::Rng as _;
use serde_json::{Map, Value};

use super::edge_int;
use crate::Rng;

/// The keys the configuration readers know (scheduler and U-Net).
const KEYS: &[&str] = &[
    "_class_name",
    "algorithm_type",
    "beta_end",
    "beta_schedule",
    "beta_start",
    "block_out_channels",
    "class_embed_type",
    "clip_sample",
    "clip_sample_range",
    "dynamic_thresholding_ratio",
    "euler_at_final",
    "final_sigmas_type",
    "flow_shift",
    "in_channels",
    "interpolation_type",
    "lambda_min_clipped",
    "lower_order_final",
    "num_class_embeds",
    "num_train_timesteps",
    "out_channels",
    "prediction_type",
    "rescale_betas_zero_snr",
    "sample_max_value",
    "sample_size",
    "set_alpha_to_one",
    "shift_factor",
    "sigma_max",
    "sigma_min",
    "skip_prk_steps",
    "solver_order",
    "solver_type",
    "steps_offset",
    "thresholding",
    "time_shift_type",
    "timestep_spacing",
    "timestep_type",
    "trained_betas",
    "use_beta_sigmas",
    "use_dynamic_shifting",
    "use_exponential_sigmas",
    "use_flow_sigmas",
    "use_karras_sigmas",
    "use_lu_lambdas",
    "variance_type",
    "vae",
    "text_encoder",
    "unet",
];

/// String values the readers compare against, and near misses.
const WORDS: &[&str] = &[
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "UNet2DModel",
    "UNet2DConditionModel",
    "linear",
    "scaled_linear",
    "squaredcos_cap_v2",
    "epsilon",
    "v_prediction",
    "sample",
    "leading",
    "trailing",
    "linspace",
    "fixed_small",
    "learned_range",
    "dpmsolver++",
    "midpoint",
    "zero",
    "log_linear",
    "discrete",
    "",
    "ddim",
];

/// Number literals beyond what JSON numbers or `f64`/`u64` hold.
const BAD_NUMBERS: &[&str] =
    &["1e999", "-1e999", "NaN", "Infinity", "18446744073709551616", "-9223372036854775809", "1e-400", "-0"];

pub fn mutate(rng: &mut Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    mutate_value(rng, &mut value, 0);
    let text = serde_json::to_string_pretty(&value).ok()?;
    if rng.random_bool(0.2) {
        return Some(bad_number(rng, &text).into_bytes());
    }
    Some(text.into_bytes())
}

/// Walks down to a random place in the tree and changes it.
fn mutate_value(rng: &mut Rng, value: &mut Value, depth: usize) {
    match value {
        Value::Object(map) if !map.is_empty() && depth < 8 && rng.random_bool(0.75) => {
            let key = map.keys().nth(rng.random_range(0..map.len())).cloned().unwrap_or_default();
            if let Some(child) = map.get_mut(&key) {
                mutate_value(rng, child, depth + 1);
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 8 && rng.random_bool(0.6) => {
            let i = rng.random_range(0..items.len());
            mutate_value(rng, &mut items[i], depth + 1);
        }
        Value::Object(map) => mutate_object(rng, map),
        _ => *value = random_value(rng),
    }
}

fn mutate_object(rng: &mut Rng, map: &mut Map<String, Value>) {
    if !map.is_empty() && rng.random_bool(0.3) {
        let key = map.keys().nth(rng.random_range(0..map.len())).cloned().unwrap_or_default();
        map.remove(&key);
    } else {
        let key = KEYS.choose(rng).copied().unwrap_or("beta_start");
        map.insert(key.to_string(), random_value(rng));
    }
}

fn random_value(rng: &mut Rng) -> Value {
    let floats = [0.0, -1.0, 0.5, 1e-45, 1e-9, 0.9999, 1.0, 1e38, 1e308, -1e308];
    match rng.random_range(0..8) {
        0 => Value::from(edge_int(rng)),
        1 => Value::from(floats.choose(rng).copied().unwrap_or(0.0)),
        2 | 3 => Value::from(WORDS.choose(rng).copied().unwrap_or("")),
        4 => Value::Bool(rng.random_bool(0.5)),
        5 => Value::Null,
        6 => {
            let n = [0usize, 1, 2, 3, 10, 999, 1000, 1001].choose(rng).copied().unwrap_or(2);
            let x = floats.choose(rng).copied().unwrap_or(0.0);
            Value::Array((0..n).map(|i| Value::from(if i % 3 == 0 { x } else { 0.01 })).collect())
        }
        _ => Value::Object(Map::new()),
    }
}

/// `text` with one number replaced by a literal from [`BAD_NUMBERS`].
fn bad_number(rng: &mut Rng, text: &str) -> String {
    let bytes = text.as_bytes();
    let starts: Vec<usize> = (0..bytes.len())
        .filter(|&i| bytes[i].is_ascii_digit() && (i == 0 || !(bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.')))
        .collect();
    let Some(&start) = starts.choose(rng) else { return text.to_string() };
    let end = (start..bytes.len())
        .find(|&i| !(bytes[i].is_ascii_digit() || matches!(bytes[i], b'.' | b'e' | b'E' | b'-' | b'+')))
        .unwrap_or(bytes.len());
    let literal = BAD_NUMBERS.choose(rng).copied().unwrap_or("1e999");
    format!("{}{literal}{}", &text[..start], &text[end..])
}
