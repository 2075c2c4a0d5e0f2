//! `edgediff-fuzz gen-corpus`: writes the seed inputs of every target under `corpus/<target>/`.
//! The committed corpus is this function's output (plus the small diffusers configuration files
//! of `tests/fixtures/diffusers`), so it can be rebuilt when a format changes.

mod models;
mod texts;

use std::path::Path;

use edgediff_quantize::QuantForm;
pub use models::{conv_model, divide_model, external_model, int64_timestep_model, int8_model, Norm};
pub use texts::{SCHEDULER_CONFIG, UNET_CONFIG};

use crate::FuzzError;

/// The diffusers fixtures copied into the `scheduler_config` corpus (all under 2 KB).
const FIXTURE_CONFIGS: &[&str] = &[
    "a-int64-timestep/scheduler_config.json",
    "a-int64-timestep/config.json",
    "b-float-scalar/scheduler.json",
    "c-class-labels/config.json",
    "c-class-labels/scheduler_config.json",
    "d-vpred-zsnr/scheduler_config.json",
    "e-optimum/model_index.json",
    "e-optimum/scheduler/scheduler_config.json",
];

/// Writes every seed under `corpus` (one folder per target); returns how many files.
pub fn write_corpus(corpus: &Path) -> Result<usize, FuzzError> {
    let mut seeds: Vec<(String, Vec<u8>)> = model_seeds();
    seeds.extend(texts::text_seeds().into_iter().map(|(name, text)| (name.to_string(), text.into_bytes())));
    seeds.extend(texts::npy_seeds());
    let fixtures = crate::context::workspace_root().join("tests/fixtures/diffusers");
    for rel in FIXTURE_CONFIGS {
        let path = fixtures.join(rel);
        let bytes = std::fs::read(&path).map_err(|e| FuzzError::file(&path, e))?;
        seeds.push((format!("scheduler_config/fixture-{}", rel.replace('/', "-")), bytes));
    }
    for (name, bytes) in &seeds {
        let path = corpus.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| FuzzError::file(dir, e))?;
        }
        edgediff_io::write_atomic(&path, bytes).map_err(|e| FuzzError::file(&path, e))?;
    }
    Ok(seeds.len())
}

fn model_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![
        ("divide".to_string(), divide_model(false)),
        ("divide-conditional".into(), divide_model(true)),
        ("int64-timestep".into(), int64_timestep_model()),
        ("conv-groupnorm".into(), conv_model(Norm::Exporter)),
        ("conv-groupnorm-opset21".into(), conv_model(Norm::Native)),
        ("conv-external-weights".into(), external_model()),
    ];
    for form in [QuantForm::QOperator, QuantForm::Qdq, QuantForm::Integer] {
        seeds.push((format!("int8-{form}"), int8_model(form)));
    }
    seeds.into_iter().map(|(name, bytes)| (format!("model/{name}.onnx"), bytes)).collect()
}
