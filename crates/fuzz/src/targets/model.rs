//! ONNX model bytes through everything `sampler` does with a model file: metadata and interface
//! checks (`Denoiser::inspect_with`), the tract load with our rewrites (`Denoiser::load`),
//! planning for batch 1, one network evaluation, and a two-step sampling loop.

use std::path::PathBuf;

use edgediff_runtime::{sample, Denoiser, LoadOptions, SampleRequest};

use super::Stage;
use crate::Context;

pub const REFUSED: Stage = "refused";
pub const INSPECTED: Stage = "inspected";
pub const LOADED: Stage = "loaded";
pub const PLANNED: Stage = "planned";
pub const EVALUATED: Stage = "evaluated";
pub const SAMPLED: Stage = "sampled";

/// The external-data file mutated models may name (`location = weights.bin`), in the folder
/// the loader is pointed at.
pub const EXTERNAL_FILE: &str = "weights.bin";
/// Its contents: this many f32 values, `i / 1024` for value i.
pub const EXTERNAL_VALUES: usize = 1024;

/// The harness builds inputs of the model's declared size; above this many values it stops
/// after planning rather than allocate a huge input itself.
const MAX_INPUT_VALUES: usize = 1 << 20;

pub fn run(ctx: &Context, bytes: &[u8]) -> Stage {
    let opts = LoadOptions { dir: Some(external_dir(ctx)), ..LoadOptions::default() };
    let Ok((meta, info)) = Denoiser::inspect_with(bytes, &opts) else { return REFUSED };
    super::meta::exercise_schedulers(&meta);
    let Ok(denoiser) = Denoiser::load(bytes, &opts) else { return INSPECTED };
    assert_eq!(denoiser.info.conditional, info.conditional, "inspect and load disagree on the class input");
    let Ok(mut net) = denoiser.into_network(1, 1) else { return LOADED };
    let len = net.meta.image_len();
    if len > MAX_INPUT_VALUES {
        return PLANNED;
    }
    let x: Vec<f32> = (0..len).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
    let labels = (net.is_conditional() && net.meta.null_label().is_none()).then_some(vec![0i64]);
    match net.eval(&x, &[500.0], labels.as_deref()) {
        Ok(out) => assert_eq!(out.len(), len, "the prediction has another size than the sample"),
        Err(_) => return PLANNED,
    }
    let mut settings = net.meta.default_settings();
    settings.steps = 2;
    let request = SampleRequest {
        seed: 0,
        settings,
        init_noise: None,
        class_labels: labels,
        guidance: None,
        memory_budget: None,
    };
    match sample(&mut net, &request, |_| {}) {
        Ok(out) => {
            assert_eq!(out.x0.len(), len, "the sample has another size than the model's image");
            SAMPLED
        }
        Err(_) => EVALUATED,
    }
}

/// The folder external data is read from, holding [`EXTERNAL_FILE`] (written once).
fn external_dir(ctx: &Context) -> PathBuf {
    let dir = ctx.scratch().join("external");
    let file = dir.join(EXTERNAL_FILE);
    if !file.is_file() {
        let values: Vec<u8> = (0..EXTERNAL_VALUES).flat_map(|i| (i as f32 / 1024.0).to_le_bytes()).collect();
        std::fs::create_dir_all(&dir).expect("create the external-data folder");
        std::fs::write(&file, values).expect("write the external-data file");
    }
    dir
}
