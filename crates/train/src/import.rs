//! Reads the weights of an exported ONNX model back into a [`UNet`]: the warm start of
//! `train fit --init-from M.onnx`.
//!
//! Why: a shipped model carries the only copy of its trained weights once the run directory is
//! gone (checkpoints are build outputs, not committed). Continuing from the model file means
//! more training, or a fine-tune with a decaying learning rate, does not start from scratch.
//!
//! The exporter writes every parameter verbatim (same element order; GroupNorm's gamma/beta
//! only get `[C, 1, 1]` dims), so the inverse is exact: [`parameter_names`] replays the export
//! on the freshly built network to learn each parameter's initializer name, and a
//! [`ModuleMapper`] swaps in the stored values. An exported and re-imported network is the same
//! network bit for bit. Only fp32 exports can be read (an int8 file has lost precision).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use edgediff_core::meta::{ModelMeta, Precision};

use crate::export::{parameter_names, ExportError};
use crate::fit::config::{FitConfig, InitFrom};
use crate::unet::{UNet, UNetConfig};
use edgediff_onnx::{decode_model, metadata_map, tensor_f32, OnnxError, TensorProto};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Onnx { path: PathBuf, source: OnnxError },
    #[error("{}: {reason}", path.display())]
    Mismatch { path: PathBuf, reason: String },
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// An exported model's weights and metadata, ready to load into networks of its architecture.
pub struct OnnxWeights {
    path: PathBuf,
    pub meta: ModelMeta,
    /// sha256 of the file, for the run's provenance.
    pub sha256: String,
    initializers: HashMap<String, TensorProto>,
}

impl OnnxWeights {
    /// Reads `path`; refuses a file that is not an fp32 edgediff export.
    pub fn read(path: &Path) -> Result<OnnxWeights, ImportError> {
        let bytes = edgediff_runtime::source::read_model(path, None)
            .map_err(|e| ImportError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
        let onnx = |source| ImportError::Onnx { path: path.to_path_buf(), source };
        let model = decode_model(&bytes).map_err(onnx)?;
        let props: BTreeMap<String, String> = metadata_map(&model);
        let meta = ModelMeta::from_props(&props).map_err(|e| ImportError::Mismatch {
            path: path.to_path_buf(),
            reason: format!("not an edgediff model ({e})"),
        })?;
        if meta.precision != Precision::Fp32 {
            return Err(ImportError::Mismatch {
                path: path.to_path_buf(),
                reason: format!("is a {} model; --init-from needs the fp32 export", meta.precision),
            });
        }
        let graph = model.graph.unwrap_or_default();
        let initializers = graph.initializer.into_iter().map(|t| (t.name.clone(), t)).collect();
        let sha256 = edgediff_io::sha256_hex(&bytes);
        Ok(OnnxWeights { path: path.to_path_buf(), meta, sha256, initializers })
    }

    /// `model` (built from `config`) with every parameter replaced by the stored value of the
    /// same name. Errors name the first parameter that is missing or has another size, which
    /// is what a mismatched `--base-channels`, `--channel-mults`, ... produces.
    pub fn load_into<B: Backend>(&self, model: UNet<B>, config: &UNetConfig) -> Result<UNet<B>, ImportError> {
        let names = parameter_names(&model, config)?;
        let mut mapper = Loader { weights: self, names, loaded: 0, error: None };
        let model = model.map(&mut mapper);
        if let Some(reason) = mapper.error {
            return Err(self.mismatch(reason));
        }
        let expected = mapper.names.len();
        if mapper.loaded != expected {
            return Err(self.mismatch(format!("loaded {} of the network's {expected} parameters", mapper.loaded)));
        }
        Ok(model)
    }

    /// Refuses a model whose schedule, prediction, image or classes differ from the run's:
    /// the weights would load, but continue training a different task.
    pub fn check_matches(&self, cfg: &FitConfig, class_names: &[String]) -> Result<(), ImportError> {
        let (m, s) = (&self.meta, &self.meta.schedule);
        let mut differ = Vec::new();
        let mut check = |what: &str, model: String, run: String| {
            if model != run {
                differ.push(format!("{what} {model} (the run has {run})"));
            }
        };
        check("prediction", s.prediction_type.to_string(), cfg.prediction.clone());
        check("schedule", s.beta_schedule.to_string(), cfg.schedule.clone());
        check("timesteps", s.num_train_timesteps.to_string(), cfg.timesteps.to_string());
        check("betas", format!("{}..{}", s.beta_start, s.beta_end), format!("{}..{}", cfg.beta_start, cfg.beta_end));
        check("image size", m.image_size.to_string(), cfg.model.image_size.to_string());
        check("channels", m.channels.to_string(), cfg.model.in_channels.to_string());
        let run_classes = if cfg.model.num_classes.is_some() { class_names.join(",") } else { String::new() };
        check("classes", format!("[{}]", m.class_names.join(",")), format!("[{run_classes}]"));
        if differ.is_empty() {
            Ok(())
        } else {
            Err(self.mismatch(format!("--init-from: the model was trained with {}", differ.join(", "))))
        }
    }

    /// The provenance record a warm-started run keeps.
    pub fn provenance(&self) -> InitFrom {
        InitFrom {
            path: self.path.display().to_string(),
            sha256: self.sha256.clone(),
            training_steps: self.meta.training_steps,
        }
    }

    fn mismatch(&self, reason: String) -> ImportError {
        ImportError::Mismatch { path: self.path.clone(), reason }
    }
}

struct Loader<'a> {
    weights: &'a OnnxWeights,
    names: HashMap<ParamId, String>,
    loaded: usize,
    /// The first failure; later parameters are passed through unchanged.
    error: Option<String>,
}

impl Loader<'_> {
    fn values(&self, id: &ParamId, dims: &[usize]) -> Result<Vec<f32>, String> {
        let name = self.names.get(id).ok_or("a parameter the exporter does not write")?;
        let init = self.weights.initializers.get(name).ok_or_else(|| {
            format!("has no initializer {name:?}: the flags describe another architecture than the one exported")
        })?;
        let values = tensor_f32(init).map_err(|e| format!("initializer {name:?}: {e}"))?;
        let expected: usize = dims.iter().product();
        if values.len() != expected {
            return Err(format!(
                "initializer {name:?} has {} values, the network built from the flags expects {expected} ({dims:?}): \
                 check --base-channels, --channel-mults, --blocks-per-level, --attention and --conditional",
                values.len()
            ));
        }
        Ok(values)
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        match self.values(&id, &dims) {
            Ok(values) => {
                let loaded = Tensor::<B, D>::from_data(TensorData::new(values, dims), &tensor.device())
                    .set_require_grad(tensor.is_require_grad());
                self.loaded += 1;
                Param::from_mapped_value(id, loaded, mapper)
            }
            Err(reason) => {
                self.error = Some(reason);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::export::export_onnx;

    type B = Flex;

    fn config(base: usize) -> UNetConfig {
        UNetConfig {
            image_size: 8,
            base_channels: base,
            channel_mults: vec![1, 2],
            attention_resolutions: vec![4],
            num_classes: Some(3),
            ..UNetConfig::new()
        }
    }

    fn meta(cfg: &UNetConfig) -> ModelMeta {
        use edgediff_core::meta::*;
        let props: BTreeMap<String, String> = [
            (FORMAT, FORMAT_VERSION.to_string()),
            (MODEL_NAME, "import-test".into()),
            (NUM_TRAIN_TIMESTEPS, "1000".into()),
            (BETA_SCHEDULE, "linear".into()),
            (BETA_START, "0.0001".into()),
            (BETA_END, "0.02".into()),
            (PREDICTION_TYPE, "epsilon".into()),
            (IMAGE_SIZE, cfg.image_size.to_string()),
            (CHANNELS, cfg.in_channels.to_string()),
            (VALUE_RANGE, "-1,1".into()),
            (CLASS_NAMES, "a,b,c".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ModelMeta::from_props(&props).unwrap()
    }

    fn flat<Bk: Backend>(model: &UNet<Bk>) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl<Bk: Backend> burn::module::ModuleVisitor<Bk> for Collect {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
                self.0.extend(p.val().into_data().to_vec::<f32>().unwrap());
            }
        }
        let mut c = Collect(Vec::new());
        model.visit(&mut c);
        c.0
    }

    fn write(dir: &Path, cfg: &UNetConfig, seed: u64) -> (PathBuf, Vec<f32>) {
        let device = Default::default();
        <B as Backend>::seed(&device, seed);
        let model: UNet<B> = cfg.init(&device);
        let path = dir.join(format!("m{seed}.onnx"));
        std::fs::write(&path, export_onnx(&model, cfg, &meta(cfg)).unwrap()).unwrap();
        (path, flat(&model))
    }

    #[test]
    fn export_then_import_is_the_same_network() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(8);
        let (path, exported) = write(dir.path(), &cfg, 1);
        let device = Default::default();
        <B as Backend>::seed(&device, 2);
        let fresh: UNet<B> = cfg.init(&device);
        assert_ne!(flat(&fresh), exported, "two seeds gave the same init; the test would prove nothing");
        let loaded = OnnxWeights::read(&path).unwrap().load_into(fresh, &cfg).unwrap();
        assert_eq!(flat(&loaded), exported);
    }

    #[test]
    fn another_architecture_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), &config(8), 1);
        let wider = config(16);
        let model: UNet<B> = wider.init(&Default::default());
        let err = OnnxWeights::read(&path).unwrap().load_into(model, &wider).err().unwrap().to_string();
        assert!(err.contains("m1.onnx") && err.contains("--base-channels"), "{err}");
    }
}
