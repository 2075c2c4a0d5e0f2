//! Where a model comes from: one ONNX file, or a folder in a layout diffusers and optimum write,
//! with the configuration files that describe it.
//!
//! - a file: that ONNX file (configuration files only if named by flags);
//! - a folder holding `unet/model.onnx` (diffusers/optimum layout): `unet/config.json`,
//!   `scheduler/scheduler_config.json` and `model_index.json`, where present;
//! - a folder holding `model.onnx` (flat): `config.json` and `scheduler_config.json` beside it.
//!
//! Weights stored outside the ONNX file (`external_data`, as exports above 2 GB and optimum
//! write them) are read from beside it into the model once it is decoded ([`external`]).

pub mod diffusers;
pub mod external;
pub mod regions;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A model's files could not be found or read, or a configuration key cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Key { path: PathBuf, key: String, message: String },
}

impl SourceError {
    pub(crate) fn file(path: &Path, message: impl std::fmt::Display) -> SourceError {
        SourceError::File { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// The files of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub onnx: PathBuf,
    /// The U-Net's `config.json` (image size, channels, classes).
    pub unet_config: Option<PathBuf>,
    /// diffusers' `scheduler_config.json` (the noise schedule and prediction type).
    pub scheduler_config: Option<PathBuf>,
    /// A pipeline's `model_index.json` (which components the pipeline has).
    pub model_index: Option<PathBuf>,
}

impl ModelFiles {
    /// The files at `path`: an ONNX file, or a folder in one of the layouts of the module doc.
    pub fn discover(path: &Path) -> Result<ModelFiles, SourceError> {
        let meta = std::fs::metadata(path).map_err(|e| SourceError::file(path, format!("cannot read: {e}")))?;
        if !meta.is_dir() {
            return Ok(ModelFiles {
                onnx: path.to_path_buf(),
                unet_config: None,
                scheduler_config: None,
                model_index: None,
            });
        }
        let existing = |p: PathBuf| p.is_file().then_some(p);
        let nested = path.join("unet").join("model.onnx");
        let (onnx, unet_config, scheduler_config) = if nested.is_file() {
            (nested, path.join("unet").join("config.json"), path.join("scheduler").join("scheduler_config.json"))
        } else if path.join("model.onnx").is_file() {
            (path.join("model.onnx"), path.join("config.json"), path.join("scheduler_config.json"))
        } else {
            return Err(SourceError::file(
                path,
                "a model folder holds unet/model.onnx (diffusers/optimum layout) or model.onnx (flat layout); found neither",
            ));
        };
        Ok(ModelFiles {
            onnx,
            unet_config: existing(unet_config),
            scheduler_config: existing(scheduler_config),
            model_index: existing(path.join("model_index.json")),
        })
    }

    /// The metadata the configuration files give: the scheduler's, then the U-Net's. A pipeline
    /// that needs more than a U-Net and a scheduler (a VAE, a text encoder) is refused.
    pub fn config_props(&self) -> Result<BTreeMap<String, String>, SourceError> {
        let mut props = BTreeMap::new();
        if let Some(index) = &self.model_index {
            check_pipeline(index, &read_text(index)?)?;
        }
        if let Some(file) = &self.scheduler_config {
            props.extend(diffusers::scheduler_props(file, &read_text(file)?)?);
        }
        if let Some(file) = &self.unet_config {
            props.extend(diffusers::unet_props(file, &read_text(file)?)?);
        }
        Ok(props)
    }

    /// The folder external data is read from: the ONNX file's.
    pub fn dir(&self) -> PathBuf {
        match self.onnx.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// The bytes of the model file at `path`: a regular file (not a FIFO or a device, which would
/// never end), refused before it is read when it is larger than the memory limit (`budget`, or
/// the machine's memory).
pub fn read_model(path: &Path, budget: Option<u64>) -> Result<Vec<u8>, crate::RuntimeError> {
    let limit = crate::MemoryLimit::new(budget);
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    limit.check(size, "the model file, read whole")?;
    Ok(edgediff_io::read_regular(path, limit.bytes)?)
}

/// Configuration files are small; a larger one is not a configuration file.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

fn read_text(path: &Path) -> Result<String, SourceError> {
    let bytes = edgediff_io::read_regular(path, MAX_CONFIG_BYTES)
        .map_err(|e| SourceError::file(path, format!("{} (a configuration file is at most 16 MiB)", e.message)))?;
    String::from_utf8(bytes).map_err(|_| SourceError::file(path, "is not UTF-8 text"))
}

/// A `model_index.json` naming components beyond a U-Net and a scheduler: a latent or
/// text-conditioned pipeline, which the sampler cannot run.
fn check_pipeline(path: &Path, text: &str) -> Result<(), SourceError> {
    let index: serde_json::Value =
        serde_json::from_str(text).map_err(|e| SourceError::file(path, format!("not valid JSON: {e}")))?;
    for (component, what) in [
        ("vae", "a latent model: its images need a VAE decoder"),
        ("text_encoder", "a text-conditioned model: it needs a text encoder"),
    ] {
        if index.get(component).is_some_and(|v| !v.is_null()) {
            return Err(SourceError::Key {
                path: path.to_path_buf(),
                key: component.into(),
                message: format!("{what}; edgediff runs pixel-space U-Nets only"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_the_two_folder_layouts_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(ModelFiles::discover(root).unwrap_err().to_string().contains("found neither"));
        std::fs::write(root.join("model.onnx"), b"x").unwrap();
        std::fs::write(root.join("scheduler_config.json"), b"{}").unwrap();
        let flat = ModelFiles::discover(root).unwrap();
        assert_eq!(flat.onnx, root.join("model.onnx"));
        assert_eq!((flat.scheduler_config.is_some(), flat.unet_config.is_some()), (true, false));
        std::fs::create_dir_all(root.join("unet")).unwrap();
        std::fs::create_dir_all(root.join("scheduler")).unwrap();
        std::fs::write(root.join("unet/model.onnx"), b"x").unwrap();
        std::fs::write(root.join("unet/config.json"), b"{}").unwrap();
        std::fs::write(root.join("model_index.json"), br#"{"unet": ["diffusers", "UNet2DModel"]}"#).unwrap();
        let nested = ModelFiles::discover(root).unwrap();
        assert_eq!(nested.onnx, root.join("unet/model.onnx"));
        assert_eq!((nested.unet_config.is_some(), nested.scheduler_config.is_some()), (true, false));
        assert_eq!(nested.dir(), root.join("unet"));
        let file = ModelFiles::discover(&root.join("model.onnx")).unwrap();
        assert_eq!((file.unet_config, file.scheduler_config), (None, None));
    }

    #[test]
    fn latent_and_text_pipelines_are_refused() {
        let e = check_pipeline(Path::new("model_index.json"), r#"{"vae": ["diffusers", "AutoencoderKL"]}"#);
        assert!(e.unwrap_err().to_string().contains("VAE"));
        let e = check_pipeline(Path::new("model_index.json"), r#"{"text_encoder": ["transformers", "CLIPTextModel"]}"#);
        assert!(e.unwrap_err().to_string().contains("text encoder"));
        assert!(check_pipeline(Path::new("model_index.json"), r#"{"unet": [], "scheduler": [], "vae": null}"#).is_ok());
    }
}
