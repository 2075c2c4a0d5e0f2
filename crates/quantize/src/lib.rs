//! `train quantize`: an fp32 edgediff model in, an int8 one out.
//!
//! Per-channel symmetric int8 weights on every Conv and weight MatMul ([`weights`]), uint8
//! activations calibrated over whole DDIM trajectories ([`calibrate`]), written in the ONNX form
//! the caller picks ([`rewrite`]). The metadata is kept, `edgediff.precision` becomes `int8`,
//! and `edgediff.quantization` records how (form, calibration), so a model file says what it is.

pub mod bias_correction;
pub mod calibrate;
pub mod check;
pub mod clipping;
pub mod rewrite;
pub mod smooth;
pub mod weights;

use edgediff_core::meta::{self, FloatOrder, ModelMeta, Precision};

pub use bias_correction::BiasCorrection;
pub use calibrate::{CalibrationOptions, RangeRule, Ranges};
pub use check::CheckError;
pub use rewrite::{QuantForm, Target, TargetKind, TargetPolicy};
pub use weights::ActivationType;

use std::collections::{BTreeMap, HashMap};

use edgediff_onnx::{
    decode_model, encode_model, metadata_map, GraphProto, ModelProto, OnnxError, StringStringEntryProto,
};
use edgediff_runtime::{Denoiser, LoadOptions, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{0}")]
    Model(String),
    #[error("model metadata: {0}")]
    Meta(#[from] edgediff_core::CoreError),
    #[error("the model is already int8")]
    AlreadyInt8,
    #[error("the model has no Conv or MatMul with constant f32 weights to quantise")]
    NothingToQuantize,
    #[error("tensor `{0}` was not calibrated")]
    Uncalibrated(String),
    #[error("calibration run failed: {0}")]
    Calibration(String),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// The runtime's loader refuses the fp32 model (its own checks: finite weights, class
    /// table, interface), so it could not be sampled either.
    #[error("{0}")]
    Unusable(RuntimeError),
    #[error("model: {0}")]
    InputGraph(CheckError),
    #[error("--keep-fp32: no node or node output is named `{0}`")]
    UnknownKeep(String),
    #[error("the int8 graph it would write is broken: {0}")]
    OutputGraph(CheckError),
    #[error("the runtime refuses the int8 model it would write: {0}")]
    OutputLoad(RuntimeError),
}

impl QuantizeError {
    /// Whether the fp32 model given is at fault (it cannot be read, used or quantised), as
    /// opposed to a flag or a failure of the quantiser itself.
    pub fn is_bad_input(&self) -> bool {
        match self {
            QuantizeError::Model(_)
            | QuantizeError::Meta(_)
            | QuantizeError::AlreadyInt8
            | QuantizeError::NothingToQuantize
            | QuantizeError::Calibration(_)
            | QuantizeError::Onnx(_)
            | QuantizeError::InputGraph(_) => true,
            QuantizeError::Unusable(e) => e.is_bad_model(),
            QuantizeError::Uncalibrated(_)
            | QuantizeError::UnknownKeep(_)
            | QuantizeError::OutputGraph(_)
            | QuantizeError::OutputLoad(_) => false,
        }
    }
}

/// Everything `train quantize` can choose.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub form: QuantForm,
    pub activations: ActivationType,
    pub calibration: CalibrationOptions,
    /// Which nodes stay fp32.
    pub policy: TargetPolicy,
    /// Sweeps of [`bias_correction`] over the int8 layers (`--form integer` only; 0: none).
    pub bias_correction_sweeps: usize,
    /// [`smooth`]ing strength α of the int8 layers' input activations (`None`: none).
    pub smoothing: Option<f32>,
    /// How the runtime is to compute the int8 model's float layers (`edgediff.float_order`):
    /// the arithmetic its quality is measured with.
    pub float_order: FloatOrder,
}

/// The int8 model and what was done to it.
#[derive(Debug)]
pub struct Quantized {
    pub bytes: Vec<u8>,
    pub targets: Vec<Target>,
    pub ranges: Ranges,
    /// Value of `edgediff.quantization`.
    pub description: String,
    /// What bias correction did (empty when it did not run).
    pub bias_correction: BiasCorrection,
    /// With `--range mse`: the share of its min/max span each clipped range keeps.
    pub clipped_spans: Vec<f32>,
}

/// Quantises the ONNX model in `bytes`. `on_step(done, total)` reports progress in trajectory
/// steps: calibration, then each bias-correction pass.
pub fn quantize(
    bytes: &[u8],
    opts: &QuantizeOptions,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Quantized, QuantizeError> {
    let (mut model, props, model_meta) = read_model(bytes)?;
    let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Model("the file holds no graph".into()))?;
    let targets = select_targets(graph, &opts.policy)?;
    let sweeps = if opts.form == QuantForm::Integer { opts.bias_correction_sweeps } else { 0 };
    // Calibration's steps, then (an estimate until correction knows its layers) one trajectory
    // per int8 layer and sweep.
    let steps = opts.calibration.steps;
    let clip = opts.calibration.rule == RangeRule::MinMse;
    let estimate = steps * (1 + clip as usize + sweeps * targets.len());
    let ActivationRanges { ranges, smoothing, clipped_spans } =
        activation_ranges(&model, graph, &model_meta, &targets, opts, |done| on_step(done, estimate))?;
    // Steps done before bias correction: calibration, and the clipping pass when there is one.
    let done_before = steps * (1 + clip as usize);
    // The fp32 graph, kept only when bias correction compares against it.
    let fp32 = (sweeps > 0).then(|| model.clone());
    rewrite::rewrite(&mut model, &targets, opts.form, opts.activations, &ranges, &smoothing)?;
    let correction = match &fp32 {
        Some(fp32) => bias_correction::correct_biases(
            fp32,
            &mut model,
            &model_meta,
            &targets,
            &opts.calibration,
            sweeps,
            |done, total| on_step(done_before + done, done_before + total),
        )?,
        None => BiasCorrection::default(),
    };
    let description = describe(opts, smoothing.len(), sweeps, &correction, targets.len());
    mark_int8(&mut model, props, &description, opts.float_order);
    Ok(Quantized {
        bytes: checked_bytes(&model)?,
        targets,
        ranges,
        description,
        bias_correction: correction,
        clipped_spans,
    })
}

/// The fp32 model in `bytes`, its metadata and what the metadata says, once it is known to be
/// fp32, wired as ONNX requires ([`check::structure`]) and loadable by the runtime (the checks
/// the sampler would make, so a model it refuses is never quantised).
fn read_model(bytes: &[u8]) -> Result<(ModelProto, BTreeMap<String, String>, ModelMeta), QuantizeError> {
    let model = decode_model(bytes)?;
    let props = metadata_map(&model);
    let model_meta = ModelMeta::from_props(&props)?;
    if model_meta.precision == Precision::Int8 {
        return Err(QuantizeError::AlreadyInt8);
    }
    let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Model("the file holds no graph".into()))?;
    check::structure(graph).map_err(QuantizeError::InputGraph)?;
    Denoiser::load(bytes, &LoadOptions::default()).map_err(QuantizeError::Unusable)?;
    Ok((model, props, model_meta))
}

/// The bytes of the int8 `model`, once its graph passes [`check::structure`] and
/// [`check::values`] and the runtime loads and plans it as the sampler would (one image, one
/// thread): a file that fails is never handed out. Loading alone is not enough: tract refuses
/// some graphs (e.g. two nodes of one name) only when it plans them.
fn checked_bytes(model: &ModelProto) -> Result<Vec<u8>, QuantizeError> {
    let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::Model("the file holds no graph".into()))?;
    check::structure(graph).and_then(|()| check::values(graph)).map_err(QuantizeError::OutputGraph)?;
    let bytes = encode_model(model);
    Denoiser::load(&bytes, &LoadOptions::default())
        .and_then(|d| d.into_network(1, 1))
        .map_err(QuantizeError::OutputLoad)?;
    Ok(bytes)
}

/// The nodes to quantise under `policy`; an error when a name it keeps in fp32 is neither a
/// node's nor a node output's, or when nothing is left to quantise.
fn select_targets(graph: &GraphProto, policy: &TargetPolicy) -> Result<Vec<Target>, QuantizeError> {
    let mut skip: Vec<&String> = policy.skip.iter().collect();
    skip.sort();
    if let Some(missing) = skip.into_iter().find(|n| !graph.node.iter().any(|node| rewrite::is_named(node, n))) {
        return Err(QuantizeError::UnknownKeep(missing.clone()));
    }
    let targets = rewrite::find_targets(graph, policy);
    if targets.is_empty() {
        return Err(QuantizeError::NothingToQuantize);
    }
    Ok(targets)
}

/// The activation ranges the rewrite quantises with, and how they were found.
struct ActivationRanges {
    ranges: Ranges,
    smoothing: HashMap<String, rewrite::Smoothing>,
    /// With `--range mse`: the share of its min/max span each clipped range keeps.
    clipped_spans: Vec<f32>,
}

/// Calibrates the int8 layers' activation ranges, smooths them when asked, and with
/// `--range mse` clips them. `on_step(done)` counts trajectory steps over both passes.
fn activation_ranges(
    model: &ModelProto,
    graph: &GraphProto,
    model_meta: &ModelMeta,
    targets: &[Target],
    opts: &QuantizeOptions,
    mut on_step: impl FnMut(usize),
) -> Result<ActivationRanges, QuantizeError> {
    let observed = rewrite::observed_tensors(targets, opts.form);
    let calibration =
        calibrate::calibrate(model, model_meta, &observed, &opts.calibration, opts.smoothing.is_some(), |done, _| {
            on_step(done)
        })?;
    let mut smoothing = match opts.smoothing {
        Some(alpha) => smoothings(graph, targets, &calibration, alpha),
        None => HashMap::new(),
    };
    let mut ranges = calibration.ranges;
    let clipped_spans = if opts.calibration.rule == RangeRule::MinMse {
        let steps = opts.calibration.steps;
        clipping::clip_ranges(
            model,
            model_meta,
            &observed,
            &opts.calibration,
            opts.activations,
            &mut ranges,
            &mut smoothing,
            |done, _| on_step(steps + done),
        )?
    } else {
        Vec::new()
    };
    Ok(ActivationRanges { ranges, smoothing, clipped_spans })
}

/// The value of `edgediff.quantization`: the form, calibration, smoothing, bias correction and
/// which layers stayed fp32, in one line.
fn describe(
    opts: &QuantizeOptions,
    smoothed: usize,
    sweeps: usize,
    correction: &BiasCorrection,
    int8_nodes: usize,
) -> String {
    let c = &opts.calibration;
    format!(
        "form={}; weights=int8 symmetric per output channel; activations={} per tensor{}, {} over {} DDIM-{} trajectories (seed {}); bias correction: {}; int8 nodes={}; first/last layer {}; concat-input layers {}; also fp32: {}",
        opts.form,
        opts.activations,
        match opts.smoothing {
            Some(alpha) => format!(" after per-channel smoothing (alpha {alpha}, {smoothed} activations)"),
            None => String::new(),
        },
        c.rule,
        c.images,
        c.steps,
        c.seed,
        if sweeps == 0 { "none".to_string() } else { format!("{} biases, layer by layer, {sweeps} sweep(s) over the same trajectories", correction.layers) },
        int8_nodes,
        if opts.policy.quantize_io { "int8" } else { "fp32" },
        if opts.policy.quantize_concat_inputs { "int8" } else { "fp32" },
        if opts.policy.skip.is_empty() { "timestep MLP".to_string() } else { format!("timestep MLP, {} named node(s)", opts.policy.skip.len()) }
    )
}

/// Sets the model's metadata to `props` with `edgediff.precision` = int8,
/// `edgediff.quantization` = `description` and `edgediff.float_order` = `order` (no key for
/// the default).
fn mark_int8(model: &mut ModelProto, mut props: BTreeMap<String, String>, description: &str, order: FloatOrder) {
    props.insert(meta::PRECISION.into(), Precision::Int8.to_string());
    props.insert(meta::QUANTIZATION.into(), description.to_string());
    props.remove(meta::FLOAT_ORDER);
    if order != FloatOrder::Fixed {
        props.insert(meta::FLOAT_ORDER.into(), order.to_string());
    }
    model.metadata_props = props.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect();
}

/// The smoothing of every int8 layer input whose consumers can all take it: each reads the
/// activation's channels along its weight's input-channel axis (a grouped conv cannot).
fn smoothings(
    graph: &GraphProto,
    targets: &[Target],
    calibration: &calibrate::Calibration,
    alpha: f32,
) -> HashMap<String, rewrite::Smoothing> {
    let dims = |weight: &str| graph.initializer.iter().find(|t| t.name == weight).map(|t| t.dims.clone());
    let mut out = HashMap::new();
    for (input, channels) in &calibration.channels {
        let readers: Vec<&Target> = targets.iter().filter(|t| &t.input == input).collect();
        let fits = |t: &&Target| {
            let axis = if t.kind == TargetKind::Conv { 1 } else { 0 };
            dims(&t.weight).is_some_and(|d| d.get(axis).is_some_and(|&c| c as usize == channels.len()))
        };
        if readers.is_empty() || !readers.iter().all(fits) {
            continue;
        }
        let factors = smooth::channel_factors(channels, alpha);
        let range = smooth::smoothed_range(channels, &factors);
        out.insert(input.clone(), rewrite::Smoothing { factors, range });
    }
    out
}
