//! Where the model comes from: a `--model` file or folder (with the configuration files that
//! describe a diffusers export), or the default model embedded in the binary (so `sampler`
//! needs no side files).

use std::borrow::Cow;
use std::path::Path;

use anyhow::Result;
use edgediff_cli::bad_input;
use edgediff_core::meta::ModelMeta;
use edgediff_runtime::source::ModelFiles;
use edgediff_runtime::{Denoiser, LoadOptions, ModelInfo, RuntimeError};

use crate::cli::{DescribeArgs, ModelArgs};

/// The trained default model (see models/README.md for its card).
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../models/sprites-cond.onnx");
pub const DEFAULT_MODEL_LABEL: &str = "embedded:models/sprites-cond.onnx";

pub struct ModelSource {
    pub bytes: Cow<'static, [u8]>,
    /// How to name the model in messages: the path, or `embedded:…`.
    pub label: String,
    /// Metadata overrides (configuration files, then `--meta`), where to read external data.
    pub options: LoadOptions,
    /// The files read, for a model given by its path.
    pub files: Option<ModelFiles>,
}

impl ModelSource {
    /// The model the flags name; `budget` is `--memory-budget` where the command has one.
    pub fn from_args(args: &ModelArgs, budget: Option<u64>) -> Result<Self> {
        let mut source = match &args.model {
            Some(path) => Self::from_path(path, &args.describe, budget)
                .map_err(|e| bad_input(&format!("--model {}", path.display()), format!("{e:#}"))),
            None => Ok(ModelSource {
                bytes: Cow::Borrowed(DEFAULT_MODEL),
                label: DEFAULT_MODEL_LABEL.into(),
                options: options(&args.describe, None).map_err(|e| bad_input("--model", format!("{e:#}")))?,
                files: None,
            }),
        }?;
        source.options.memory_budget = budget;
        Ok(source)
    }

    /// The model at `path` (a file or a folder) described by `describe`. A file larger than
    /// the memory limit is refused before it is read.
    pub fn from_path(path: &Path, describe: &DescribeArgs, budget: Option<u64>) -> Result<Self> {
        let mut files = ModelFiles::discover(path)?;
        if describe.scheduler_config.is_some() {
            files.scheduler_config.clone_from(&describe.scheduler_config);
        }
        if describe.unet_config.is_some() {
            files.unet_config.clone_from(&describe.unet_config);
        }
        let bytes = edgediff_runtime::source::read_model(&files.onnx, budget)?;
        let mut options = options(describe, Some(&files))?;
        options.default_name = model_name(path);
        Ok(ModelSource { bytes: Cow::Owned(bytes), label: path.display().to_string(), options, files: Some(files) })
    }

    /// Whether writing `out` would replace one of the files the model was read from.
    pub fn reads(&self, out: &Path) -> bool {
        let Some(f) = &self.files else { return false };
        [Some(&f.onnx), f.unet_config.as_ref(), f.scheduler_config.as_ref(), f.model_index.as_ref()]
            .into_iter()
            .flatten()
            .any(|p| edgediff_io::same_file(p, out))
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
        Denoiser::inspect_with(&self.bytes, &self.options).map_err(|e| self.error(e))
    }

    pub fn load(&self) -> Result<Denoiser> {
        Denoiser::load(&self.bytes, &self.options).map_err(|e| self.error(e))
    }

    /// `e` after the model's label: bad input where the model cannot be used.
    pub fn error(&self, e: RuntimeError) -> anyhow::Error {
        if e.is_bad_model() {
            bad_input(&self.label, e)
        } else {
            anyhow::Error::new(e).context(self.label.clone())
        }
    }
}

/// Load options from the flags: the configuration files' metadata (a folder's or the flags'),
/// `--meta` over it, `--output`, and the folder external data is read from.
fn options(describe: &DescribeArgs, files: Option<&ModelFiles>) -> Result<LoadOptions> {
    let mut overrides = match files {
        Some(files) => files.config_props()?,
        None => {
            let files = ModelFiles {
                onnx: Default::default(),
                unet_config: describe.unet_config.clone(),
                scheduler_config: describe.scheduler_config.clone(),
                model_index: None,
            };
            files.config_props()?
        }
    };
    for (key, value) in &describe.meta {
        let key = if key.starts_with("edgediff.") { key.clone() } else { format!("edgediff.{key}") };
        overrides.insert(key, value.clone());
    }
    Ok(LoadOptions {
        overrides,
        dir: files.map(ModelFiles::dir),
        output: describe.output.clone(),
        ..Default::default()
    })
}

/// A model's name from its path: the folder's name, or the file's stem.
fn model_name(path: &Path) -> Option<String> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let name = if path.is_dir() { path.file_name() } else { path.file_stem() };
    name.map(|n| n.to_string_lossy().into_owned())
}
