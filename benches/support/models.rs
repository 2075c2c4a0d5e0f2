//! The models the benches measure.
//!
//! (a) the default model, read from `models/sprites-cond.onnx` at bench time (it gets retrained
//! and replaced, so nothing about it is hard-coded); (b) a DDPM-CIFAR-10-size U-Net (35.7M
//! parameters, the size of Ho et al.'s CIFAR-10 model) with seeded random weights, written by our
//! own exporter into `target/bench-models/` the first time it is needed; (c) diffusers'
//! `UNet2DModel` with google/ddpm-cifar10-32's config (35.7M parameters, random weights)
//! exported by `torch.onnx.export`, where torch is at hand (`target/pyenv`). Timing does not
//! depend on the weight values, and nothing large is committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use edgediff_core::meta::{self, ModelMeta, Precision};
use edgediff_quantize::{
    quantize, ActivationType, CalibrationOptions, QuantForm, QuantizeOptions, RangeRule, TargetPolicy,
};
use edgediff_runtime::Denoiser;
use edgediff_train::export::export_onnx;
use edgediff_train::unet::UNetConfig;

/// Short name used in bench ids and in the report (`eval-<key>` criterion groups).
pub const DEFAULT_KEY: &str = "sprites";
pub const DDPM35_KEY: &str = "ddpm35m";
pub const DIFFUSERS35_KEY: &str = "diffusers35m";

/// Seed of the 35.7M net's random weights; part of its file name so a cached file is the same
/// network on every machine.
const DDPM35_SEED: u64 = 0;

/// One model file under test.
#[derive(Debug, Clone)]
pub struct BenchModel {
    /// `sprites` or `ddpm35m`: which network.
    pub key: &'static str,
    pub precision: Precision,
    pub path: PathBuf,
    /// Stored weight values (all initializers), as `sampler info` counts them.
    pub params: u64,
    pub image_size: usize,
    pub channels: usize,
}

impl BenchModel {
    /// Reads the file and its metadata (no tract planning: cheap).
    pub fn open(key: &'static str, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.is_empty() {
            bail!("{} is empty (the trained model is not committed yet)", path.display());
        }
        let (meta, info) = Denoiser::inspect(&bytes, &BTreeMap::new()).with_context(|| path.display().to_string())?;
        Ok(BenchModel {
            key,
            precision: meta.precision,
            path: path.to_path_buf(),
            params: info.param_count,
            image_size: meta.image_size,
            channels: meta.channels,
        })
    }

    /// `[C, H, W]` of one image.
    pub fn chw(&self) -> [usize; 3] {
        [self.channels, self.image_size, self.image_size]
    }

    /// Id of this model's criterion group.
    pub fn group(&self) -> String {
        format!("eval-{}", self.key)
    }

    pub fn bytes(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))
    }
}

/// The default model (`models/sprites-cond.onnx`).
pub fn default_model() -> Result<BenchModel> {
    BenchModel::open(DEFAULT_KEY, &super::root().join("models/sprites-cond.onnx"))
}

/// The DDPM CIFAR-10 layout (Ho et al. 2020): 128 base channels, x[1,2,2,2], two ResNet blocks
/// per level, attention at 16x16, GroupNorm(32). Our U-Net (diffusers' `UNet2DModel` layout)
/// gives 35.7M parameters with it, like the original.
pub fn ddpm35_config() -> UNetConfig {
    UNetConfig::new()
        .with_in_channels(3)
        .with_image_size(32)
        .with_base_channels(128)
        .with_channel_mults(vec![1, 2, 2, 2])
        .with_blocks_per_level(2)
        .with_attention_resolutions(vec![16])
        .with_dropout(0.1)
        .with_groups(32)
}

pub fn ddpm35_path() -> PathBuf {
    super::root().join("target/bench-models").join(format!("ddpm-cifar10-35.7m-seed{DDPM35_SEED}.onnx"))
}

/// The 35.7M-param model, exported first if `target/bench-models/` does not hold it yet.
pub fn ddpm35_model() -> Result<BenchModel> {
    let path = ddpm35_path();
    if let Ok(model) = BenchModel::open(DDPM35_KEY, &path) {
        return Ok(model);
    }
    export_ddpm35(&path)?;
    BenchModel::open(DDPM35_KEY, &path)
}

/// Builds the network with seeded random weights (burn, Flex backend) and writes it with our
/// ONNX exporter, atomically (two bench processes may race for it).
pub fn export_ddpm35(path: &Path) -> Result<()> {
    let config = ddpm35_config();
    config.validate().map_err(|e| anyhow::anyhow!("35.7M bench U-Net: {e}"))?;
    let device = Default::default();
    Flex::seed(&device, DDPM35_SEED);
    let model = config.init::<Flex>(&device);
    let props: BTreeMap<String, String> = [
        (meta::FORMAT, meta::FORMAT_VERSION.to_string()),
        (meta::MODEL_NAME, format!("ddpm-cifar10-35.7m-random-seed{DDPM35_SEED}")),
        (meta::NUM_TRAIN_TIMESTEPS, "1000".into()),
        (meta::BETA_SCHEDULE, "linear".into()),
        (meta::BETA_START, "0.0001".into()),
        (meta::BETA_END, "0.02".into()),
        (meta::PREDICTION_TYPE, "epsilon".into()),
        (meta::IMAGE_SIZE, config.image_size.to_string()),
        (meta::CHANNELS, config.in_channels.to_string()),
        (meta::VALUE_RANGE, "-1,1".into()),
        (meta::TRAINING_STEPS, "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let meta = ModelMeta::from_props(&props)?;
    let bytes = export_onnx(&model, &config, &meta).context("exporting the 35.7M bench U-Net")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    edgediff_io::write_atomic(path, &bytes)?;
    Ok(())
}

/// The shipped int8 default model (`train quantize models/sprites-cond.onnx ...`).
pub fn default_int8_model() -> Result<BenchModel> {
    BenchModel::open(DEFAULT_KEY, &super::root().join("models/sprites-cond-int8.onnx"))
}

/// Version of `train quantize`'s defaults the cached int8 file was made with: bump it when they
/// change, so a stale cache is not measured (v2: concat-input layers stay fp32).
const QUANTIZER_DEFAULTS: u32 = 2;

pub fn ddpm35_int8_path() -> PathBuf {
    super::root()
        .join("target/bench-models")
        .join(format!("ddpm-cifar10-35.7m-seed{DDPM35_SEED}-int8-v{QUANTIZER_DEFAULTS}.onnx"))
}

/// The 35.7M net quantised by `train quantize`'s code with its default form, written next to
/// the fp32 file the first time it is needed. Calibration is short (1 image, 4 DDIM steps):
/// the weights are random, so only the graph's shape and the int8 kernels matter for timing.
pub fn ddpm35_int8_model() -> Result<BenchModel> {
    let path = ddpm35_int8_path();
    if let Ok(model) = BenchModel::open(DDPM35_KEY, &path) {
        return Ok(model);
    }
    let fp32 = std::fs::read(ddpm35_model()?.path).context("reading the 35.7M fp32 bench model")?;
    let q = quantize(&fp32, &bench_quantize_options(), |_, _| ()).context("quantising the 35.7M bench U-Net")?;
    edgediff_io::write_atomic(&path, &q.bytes)?;
    BenchModel::open(DDPM35_KEY, &path)
}

/// The raw diffusers export of google/ddpm-cifar10-32's U-Net: a flat folder (`model.onnx`,
/// `config.json`, `scheduler_config.json`) written by `tests/fixtures/diffusers/generate.py`.
pub fn diffusers35_export_dir() -> PathBuf {
    super::root().join("target/bench-models/diffusers-cifar10")
}

pub fn diffusers35_path() -> PathBuf {
    super::root().join("target/bench-models/diffusers-cifar10.onnx")
}

/// The diffusers `UNet2DModel` with google/ddpm-cifar10-32's config, exported by
/// `torch.onnx.export`, brought to one file by `sampler import`'s code (the same graph, its
/// timestep cast in front). `None`, with a note on stderr, where the export is missing and
/// cannot be made (it needs torch and diffusers in `target/pyenv`).
pub fn diffusers35_model() -> Result<Option<BenchModel>> {
    let path = diffusers35_path();
    if let Ok(model) = BenchModel::open(DIFFUSERS35_KEY, &path) {
        return Ok(Some(model));
    }
    let dir = diffusers35_export_dir();
    if !dir.join("model.onnx").is_file() && !export_diffusers35(&dir)? {
        return Ok(None);
    }
    let files = edgediff_runtime::source::ModelFiles::discover(&dir)?;
    let options = edgediff_runtime::LoadOptions {
        overrides: files.config_props()?,
        dir: Some(files.dir()),
        default_name: Some("diffusers-ddpm-cifar10-35.7m-random".into()),
        ..Default::default()
    };
    let bytes = Denoiser::import(&std::fs::read(&files.onnx)?, &options).context("importing the diffusers export")?;
    edgediff_io::write_atomic(&path, &bytes)?;
    Ok(Some(BenchModel::open(DIFFUSERS35_KEY, &path)?))
}

/// Runs the fixture generator with the venv's Python; false (and a note) without one.
fn export_diffusers35(dir: &Path) -> Result<bool> {
    let python = super::root().join("target/pyenv/bin/python");
    let script = super::root().join("tests/fixtures/diffusers/generate.py");
    let note = "the diffusers rows need torch: python3 -m venv target/pyenv && target/pyenv/bin/pip install \
                torch diffusers onnx onnxruntime numpy";
    if !python.is_file() {
        eprintln!("skipping {DIFFUSERS35_KEY}: {note}");
        return Ok(false);
    }
    let status = std::process::Command::new(&python).arg(&script).arg("--cifar10").arg(dir).status()?;
    if !status.success() {
        eprintln!("skipping {DIFFUSERS35_KEY}: {} --cifar10 failed ({status}); {note}", script.display());
        return Ok(false);
    }
    Ok(true)
}

/// The diffusers export quantised as [`ddpm35_int8_model`] quantises ours.
pub fn diffusers35_int8_model(fp32: &BenchModel) -> Result<BenchModel> {
    let path = diffusers35_path().with_file_name(format!("diffusers-cifar10-int8-v{QUANTIZER_DEFAULTS}.onnx"));
    if let Ok(model) = BenchModel::open(DIFFUSERS35_KEY, &path) {
        return Ok(model);
    }
    let q =
        quantize(&fp32.bytes()?, &bench_quantize_options(), |_, _| ()).context("quantising the diffusers export")?;
    edgediff_io::write_atomic(&path, &q.bytes)?;
    BenchModel::open(DIFFUSERS35_KEY, &path)
}

/// ONNX Runtime's own static QDQ quantisation of the fp32 `model` (`benches/support/ort_qdq.py`,
/// run by `target/pyenv`'s Python), written next to the bench models the first time it is
/// needed: the int8 peer at its fastest (ORT fuses it into QLinearConv). `None`, with a note,
/// where it cannot be made.
pub fn ort_qdq_path(model: &BenchModel) -> Option<PathBuf> {
    if model.precision != Precision::Fp32 {
        return None;
    }
    let path = super::root().join("target/bench-models").join(format!("{}-ort-qdq.onnx", model.key));
    if path.is_file() {
        return Some(path);
    }
    let python = super::root().join("target/pyenv/bin/python");
    let script = super::root().join("benches/support/ort_qdq.py");
    let made = std::fs::create_dir_all(path.parent()?).is_ok()
        && std::process::Command::new(&python)
            .arg(&script)
            .arg(&model.path)
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
    if !made {
        eprintln!(
            "note: no ONNX Runtime QDQ row for {}: {} failed (it needs {} with onnx, onnxruntime, numpy)",
            model.key,
            script.display(),
            python.display()
        );
    }
    made.then_some(path)
}

/// `train quantize`'s default form with a short calibration (1 image, 4 DDIM steps): the
/// weights are random, so only the graph's shape and the int8 kernels matter for timing.
fn bench_quantize_options() -> QuantizeOptions {
    QuantizeOptions {
        form: QuantForm::Integer,
        activations: ActivationType::U8Asymmetric,
        calibration: CalibrationOptions { rule: RangeRule::MinMax, images: 1, steps: 4, seed: 0 },
        policy: TargetPolicy::default(),
        bias_correction_sweeps: 0,
        smoothing: None,
        float_order: Default::default(),
    }
}

/// Every model the network-evaluation bench measures: per network, fp32 then int8 (same key,
/// precision from the metadata, so bench ids are `tract-int8` / `ort-int8` in the same group).
pub fn bench_models() -> Result<Vec<BenchModel>> {
    let mut models = vec![default_model()?, default_int8_model()?, ddpm35_model()?, ddpm35_int8_model()?];
    if let Some(diffusers) = diffusers35_model()? {
        let int8 = diffusers35_int8_model(&diffusers)?;
        models.extend([diffusers, int8]);
    }
    Ok(models)
}
