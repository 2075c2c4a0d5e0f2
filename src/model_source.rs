//! Where the model bytes come from: a `--model` file, or the default model embedded in the
//! binary (so `sampler` needs no side files).

use std::borrow::Cow;
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use edgediff_core::meta::ModelMeta;
use edgediff_runtime::{Denoiser, ModelInfo};

use crate::cli::ModelArgs;

/// The trained default model (see models/README.md for its card).
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../models/sprites-cond.onnx");
pub const DEFAULT_MODEL_LABEL: &str = "embedded:models/sprites-cond.onnx";

pub struct ModelSource {
    pub bytes: Cow<'static, [u8]>,
    /// How to name the model in messages: the path, or `embedded:…`.
    pub label: String,
    pub overrides: BTreeMap<String, String>,
}

impl ModelSource {
    pub fn from_args(args: &ModelArgs) -> Result<Self> {
        let overrides = args.meta.iter().cloned().collect();
        match &args.model {
            Some(path) => {
                let bytes = std::fs::read(path).with_context(|| format!("--model {}: cannot read", path.display()))?;
                Ok(ModelSource { bytes: Cow::Owned(bytes), label: path.display().to_string(), overrides })
            }
            None => {
                Ok(ModelSource { bytes: Cow::Borrowed(DEFAULT_MODEL), label: DEFAULT_MODEL_LABEL.into(), overrides })
            }
        }
    }

    pub fn sha256(&self) -> String {
        edgediff_io::sha256_hex(&self.bytes)
    }

    /// Drops the file bytes (after [`ModelSource::load`] and hashing; an embedded model's
    /// bytes are static and cost nothing).
    pub fn release_bytes(&mut self) {
        self.bytes = Cow::Borrowed(&[]);
    }

    pub fn inspect(&self) -> Result<(ModelMeta, ModelInfo)> {
        Denoiser::inspect(&self.bytes, &self.overrides).with_context(|| self.label.clone())
    }

    pub fn load(&self) -> Result<Denoiser> {
        Denoiser::from_onnx_bytes(&self.bytes, &self.overrides).with_context(|| self.label.clone())
    }
}
