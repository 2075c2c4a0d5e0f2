//! Model metadata: `key=value` lines (what an ONNX file's `metadata_props` and `--meta` flags
//! hold) through `ModelMeta::from_props`, then everything a sampler derives from it.

use std::collections::BTreeMap;

use edgediff_core::meta::ModelMeta;
use edgediff_core::{build_scheduler, schedule_table, SamplerSettings, SchedulerKind, Spacing};

use super::Stage;
use crate::Context;

pub const REFUSED: Stage = "refused";
pub const PARSED: Stage = "parsed";
pub const STEPPED: Stage = "scheduled and stepped";

/// Step counts every parsed schedule is built for, besides its T when that is small enough to
/// step through quickly (counts above T are refused by design).
const STEP_COUNTS: [usize; 3] = [1, 2, 50];
const MAX_FULL_STEPS: usize = 1000;

pub fn run(_ctx: &Context, bytes: &[u8]) -> Stage {
    let props = parse_lines(bytes);
    let Ok(meta) = ModelMeta::from_props(&props) else { return REFUSED };
    check_round_trip(&meta);
    if exercise_schedulers(&meta) {
        STEPPED
    } else {
        PARSED
    }
}

/// `key=value` per line (the first `=` splits); lines without one are ignored.
pub fn parse_lines(bytes: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What `sampler import` relies on: the props a model writes read back as the same model. The
/// message names the first field that changed (the part before its `:` tells findings apart).
fn check_round_trip(meta: &ModelMeta) {
    let props = meta.to_props();
    let again = match ModelMeta::from_props(&props) {
        Ok(again) => again,
        Err(e) => panic!("from_props refuses what to_props wrote: {e}; {props:?}"),
    };
    let fields: [(&str, String, String); 11] = [
        ("model_name", format!("{:?}", meta.model_name), format!("{:?}", again.model_name)),
        ("schedule", format!("{:?}", meta.schedule), format!("{:?}", again.schedule)),
        ("image_size", meta.image_size.to_string(), again.image_size.to_string()),
        ("channels", meta.channels.to_string(), again.channels.to_string()),
        ("value_range", format!("{:?}", meta.value_range), format!("{:?}", again.value_range)),
        ("precision", meta.precision.to_string(), again.precision.to_string()),
        ("training_steps", meta.training_steps.to_string(), again.training_steps.to_string()),
        ("class_names", format!("{:?}", meta.class_names), format!("{:?}", again.class_names)),
        ("has_null_class", meta.has_null_class.to_string(), again.has_null_class.to_string()),
        ("guidance_scale", format!("{:?}", meta.guidance_scale), format!("{:?}", again.guidance_scale)),
        ("sampling", format!("{:?}", meta.sampling), format!("{:?}", again.sampling)),
    ];
    for (field, before, after) in fields {
        assert!(before == after, "to_props then from_props changed {field}: {before} became {after}; {props:?}");
    }
}

/// The model's defaults, then every solver and spacing at a few step counts (DDIM also with
/// η = 1, its noisy path): built, its table computed, and every step taken on a small sample.
/// True if at least one scheduler was built.
pub(crate) fn exercise_schedulers(meta: &ModelMeta) -> bool {
    let _ = meta.schedule.noise_schedule();
    let _ = (meta.null_label(), meta.label_count(), meta.class_index("0"), meta.class_index(""));
    let defaults = meta.default_settings();
    let t = meta.schedule.num_train_timesteps;
    let counts = STEP_COUNTS.into_iter().chain((t <= MAX_FULL_STEPS).then_some(t));
    let mut built = step_through(meta, &defaults);
    for steps in counts {
        for kind in [SchedulerKind::Ddim, SchedulerKind::Ddpm, SchedulerKind::DpmSolverPP2M] {
            for spacing in [Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
                let settings = SamplerSettings { kind, spacing, steps, ..defaults.clone() };
                built |= step_through(meta, &settings);
            }
        }
        built |= step_through(meta, &SamplerSettings { steps, eta: 1.0, ..defaults.clone() });
    }
    built
}

/// Builds the scheduler `settings` asks for and takes all its steps; false if it is refused.
fn step_through(meta: &ModelMeta, settings: &SamplerSettings) -> bool {
    let Ok(mut scheduler) = build_scheduler(&meta.schedule, settings) else { return false };
    let table = schedule_table(&meta.schedule, settings).expect("schedule_table refuses what build_scheduler built");
    let steps = scheduler.timesteps().len();
    assert_eq!(table.timesteps.len(), steps, "schedule table and scheduler disagree on the step count");
    let prediction = [0.1f32, -0.2, 0.3, 0.0];
    let mut sample = [1.0f32, -1.0, 0.5, 0.0];
    let noise = [0.5f32; 4];
    for i in 0..steps {
        let noise = scheduler.needs_noise(i).then_some(&noise[..]);
        scheduler.step(i, &prediction, &mut sample, noise);
    }
    true
}
