//! diffusers' configuration files: the same JSON text read as a `scheduler_config.json`, a
//! U-Net `config.json` and a `model_index.json`, and what the readers accept merged over a valid
//! model's metadata the way the runtime merges overrides, then parsed and scheduled.

use std::collections::BTreeMap;
use std::path::Path;

use edgediff_core::meta::ModelMeta;
use edgediff_runtime::source::{diffusers, ModelFiles};

use super::Stage;
use crate::Context;

pub const REFUSED: Stage = "refused by every reader";
pub const READ: Stage = "read";
pub const MERGED: Stage = "read and merged into metadata";
pub const SCHEDULED: Stage = "merged and scheduled";

/// The metadata of a small valid model, which the configuration's keys override.
pub const BASE_PROPS: &[(&str, &str)] = &[
    ("edgediff.format", "1"),
    ("edgediff.model_name", "fuzz"),
    ("edgediff.num_train_timesteps", "1000"),
    ("edgediff.beta_schedule", "linear"),
    ("edgediff.beta_start", "0.0001"),
    ("edgediff.beta_end", "0.02"),
    ("edgediff.prediction_type", "epsilon"),
    ("edgediff.image_size", "8"),
    ("edgediff.channels", "3"),
    ("edgediff.value_range", "-1,1"),
];

pub fn run(ctx: &Context, bytes: &[u8]) -> Stage {
    let text = String::from_utf8_lossy(bytes);
    let index_ok = read_model_index(ctx, bytes);
    let scheduler = diffusers::scheduler_props(Path::new("scheduler_config.json"), &text).ok();
    let unet = diffusers::unet_props(Path::new("config.json"), &text).ok();
    if scheduler.is_none() && unet.is_none() {
        return if index_ok { READ } else { REFUSED };
    }
    let mut props: BTreeMap<String, String> = BASE_PROPS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    props.extend(scheduler.into_iter().chain(unet).flatten());
    let Ok(meta) = ModelMeta::from_props(&props) else { return READ };
    if super::meta::exercise_schedulers(&meta) {
        SCHEDULED
    } else {
        MERGED
    }
}

/// The pipeline check of a model folder's `model_index.json`, which reads it from a file.
fn read_model_index(ctx: &Context, bytes: &[u8]) -> bool {
    let index = ctx.scratch().join("model_index.json");
    std::fs::write(&index, bytes).expect("write the scratch model_index.json");
    let files = ModelFiles {
        onnx: ctx.scratch().join("model.onnx"),
        unet_config: None,
        scheduler_config: None,
        model_index: Some(index),
    };
    files.config_props().is_ok()
}
