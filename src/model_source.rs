//! Where the model comes from: a `--model` file or folder (with the configuration files that
//! describe a diffusers export), or the default model embedded in the binary (so `sampler`
//! needs no side files).

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use anyhow::Result;
use edgediff_cli::{bad_input, UsageError};
use edgediff_core::meta::ModelMeta;
use edgediff_runtime::load::decode_bytes;
use edgediff_runtime::source::regions::WeightSource;
use edgediff_runtime::source::stream::read_model_proto;
use edgediff_runtime::source::ModelFiles;
use edgediff_runtime::{Denoiser, LoadOptions, ModelInfo, ModelProto, RuntimeError};

use crate::cli::{DescribeArgs, ModelArgs};

/// The trained default model (see models/README.md for its card).
#[cfg(feature = "embedded-model")]
pub const DEFAULT_MODEL: Option<&[u8]> = Some(include_bytes!("../models/sprites-cond.onnx"));
/// Built without the `embedded-model` feature: every command needs `--model`.
#[cfg(not(feature = "embedded-model"))]
pub const DEFAULT_MODEL: Option<&[u8]> = None;
pub const DEFAULT_MODEL_LABEL: &str = "embedded:models/sprites-cond.onnx";

/// Where the bytes are: a file, read as it is decoded, or the binary's own data.
enum Input {
    File(PathBuf),
    Embedded(&'static [u8]),
}

pub struct ModelSource {
    input: Input,
    /// How to name the model in messages: the path, or `embedded:…`.
    pub label: String,
    /// Metadata overrides (configuration files, then `--meta`), where to read external data,
    /// the memory budget.
    pub options: LoadOptions,
    /// The files read, for a model given by its path.
    pub files: Option<ModelFiles>,
    /// The size of the model file.
    pub file_bytes: u64,
    /// SHA-256 of the model file, once it has been read.
    digest: OnceCell<String>,
}

impl ModelSource {
    /// The model the flags name; `budget` is `--memory-budget` where the command has one.
    pub fn from_args(args: &ModelArgs, budget: Option<u64>) -> Result<Self> {
        let mut source = match &args.model {
            // The error names the file or folder itself.
            Some(path) => Self::from_path(path, &args.describe).map_err(|e| bad_input("--model", format!("{e:#}")))?,
            None => {
                let bytes = DEFAULT_MODEL.ok_or_else(|| {
                    UsageError("--model FILE is required: this sampler was built without an embedded model".into())
                })?;
                let mut options = options(&args.describe, None).map_err(|e| bad_input("--model", format!("{e:#}")))?;
                options.weights = Some(WeightSource::Static(bytes));
                ModelSource {
                    input: Input::Embedded(bytes),
                    label: DEFAULT_MODEL_LABEL.into(),
                    options,
                    files: None,
                    file_bytes: bytes.len() as u64,
                    digest: OnceCell::new(),
                }
            }
        };
        source.options.memory_budget = budget;
        Ok(source)
    }

    /// The model at `path` (a file or a folder) described by `describe`; nothing is read but
    /// the configuration files.
    pub fn from_path(path: &Path, describe: &DescribeArgs) -> Result<Self> {
        let mut files = ModelFiles::discover(path)?;
        if describe.scheduler_config.is_some() {
            files.scheduler_config.clone_from(&describe.scheduler_config);
        }
        if describe.unet_config.is_some() {
            files.unet_config.clone_from(&describe.unet_config);
        }
        let mut options = options(describe, Some(&files))?;
        options.default_name = model_name(path);
        // The weights are read again from the file after tract parses the graph.
        options.weights = Some(WeightSource::File(files.onnx.clone()));
        Ok(ModelSource {
            input: Input::File(files.onnx.clone()),
            label: path.display().to_string(),
            file_bytes: std::fs::metadata(&files.onnx).map(|m| m.len()).unwrap_or(0),
            options,
            files: Some(files),
            digest: OnceCell::new(),
        })
    }

    /// Whether writing `out` would replace one of the files the model was read from.
    pub fn reads(&self, out: &Path) -> bool {
        let Some(f) = &self.files else { return false };
        [Some(&f.onnx), f.unet_config.as_ref(), f.scheduler_config.as_ref(), f.model_index.as_ref()]
            .into_iter()
            .flatten()
            .any(|p| edgediff_io::same_file(p, out))
    }

    /// The SHA-256 of the model file (computed while it was decoded, if it was).
    pub fn sha256(&self) -> Result<String> {
        if let Some(digest) = self.digest.get() {
            return Ok(digest.clone());
        }
        let digest = match &self.input {
            Input::Embedded(bytes) => edgediff_io::sha256_hex(bytes),
            Input::File(path) => edgediff_io::sha256_file(path).map_err(|e| bad_input(&self.label, e))?,
        };
        Ok(self.digest.get_or_init(|| digest).clone())
    }

    /// The decoded model: a file is decoded as it is read (its bytes never held whole), within
    /// the memory budget.
    pub fn proto(&self) -> Result<ModelProto> {
        match &self.input {
            Input::Embedded(bytes) => decode_bytes(bytes).map_err(|e| self.error(e)),
            Input::File(path) => {
                let read = read_model_proto(path, self.options.memory_budget).map_err(|e| self.error(e))?;
                let _ = self.digest.set(read.sha256);
                Ok(read.proto)
            }
        }
    }

    pub fn inspect(&self) -> Result<(ModelMeta, ModelInfo)> {
        Denoiser::inspect_proto(self.proto()?, &self.options).map_err(|e| self.error(e))
    }

    pub fn load(&self) -> Result<Denoiser> {
        Denoiser::load_proto(self.proto()?, &self.options).map_err(|e| self.error(e))
    }

    /// The model as one self-describing edgediff file ([`Denoiser::import_proto`]).
    pub fn import(&self) -> Result<Vec<u8>> {
        Denoiser::import_proto(self.proto()?, &self.options).map_err(|e| self.error(e))
    }

    /// `e` after the model's label: bad input where the model cannot be used.
    pub fn error(&self, e: RuntimeError) -> anyhow::Error {
        // A read error names its file: where that is the model's own, the label says it once.
        if let RuntimeError::Read(f) = &e {
            if f.path == Path::new(&self.label) {
                return bad_input(&self.label, &f.message);
            }
        }
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
