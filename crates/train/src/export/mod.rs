//! Writes a trained [`UNet`] as an fp32 ONNX model (opset 17) that tract and ONNX Runtime run.
//!
//! The graph mirrors `UNet::forward` op for op, so the exported model computes the same f32s up
//! to the engines' kernel rounding. GroupNorm is decomposed by default (Reshape, ReduceMean,
//! Sub, Mul, Sqrt, Div, Reshape, Mul, Add) because opset 17 has no GroupNormalization and every
//! engine runs these primitives; [`GroupNormStyle::Native`] writes opset-21 GroupNormalization.
//! Linear layers become MatMul + Add (burn stores weights `[in, out]`). Dropout is omitted:
//! inference is deterministic. Weights are read with `into_data`, so any backend (Flex,
//! Autodiff<Flex>, CUDA) can be exported.

use std::collections::HashMap;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use edgediff_core::meta::{self, ModelMeta, Precision};

use edgediff_onnx::{attr_int, attr_string, data_type, encode_model, make_model, Dim, GraphBuilder, OnnxError};
mod emitter;

use crate::unet::{timestep_frequencies, UNet, UNetConfig, GROUP_NORM_EPS};
use emitter::Emitter;

/// The `ai.onnx` opset of the default (decomposed GroupNorm) export.
pub const OPSET: i64 = 17;
/// The opset of a [`GroupNormStyle::Native`] export (GroupNormalization-21, per-channel affine).
pub const OPSET_NATIVE_GROUP_NORM: i64 = 21;

/// How GroupNorm is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupNormStyle {
    /// Reshape/ReduceMean/Sub/Mul/Sqrt/Div/Reshape/Mul/Add at opset 17: runs everywhere, and
    /// every op is one a quantiser already knows.
    #[default]
    Decomposed,
    /// One `GroupNormalization` node at opset 21 (smaller graph; needs an engine with opset 21).
    Native,
}

/// Choices for [`export_onnx_with`].
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub group_norm: GroupNormStyle,
}
/// Name of the graph's single output.
pub const OUTPUT_NAME: &str = "prediction";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid U-Net configuration: {0}")]
    Config(String),
    #[error("model metadata does not match the network: {0}")]
    Meta(String),
    #[error("cannot read the weights of {name}: {reason}")]
    Weights { name: String, reason: String },
    #[error(transparent)]
    Onnx(#[from] OnnxError),
}

/// Serialises `model` (built from `config`) to ONNX bytes with `meta` as `metadata_props`.
pub fn export_onnx<B: Backend>(model: &UNet<B>, config: &UNetConfig, meta: &ModelMeta) -> Result<Vec<u8>, ExportError> {
    export_onnx_with(model, config, meta, &ExportOptions::default())
}

/// [`export_onnx`] with explicit [`ExportOptions`].
pub fn export_onnx_with<B: Backend>(
    model: &UNet<B>,
    config: &UNetConfig,
    meta: &ModelMeta,
    options: &ExportOptions,
) -> Result<Vec<u8>, ExportError> {
    check_consistency(model, config, meta)?;
    let (graph, opset, _) = emit_graph(model, config, options)?;
    Ok(encode_model(&make_model(graph, opset, &[], &meta.to_props())))
}

/// The initializer name under which [`export_onnx`] writes each parameter of `model` (values in
/// the parameter's own element order; only GroupNorm's gamma/beta get new dims, `[C, 1, 1]`).
/// `import` uses it to read an exported model back into a network.
pub fn parameter_names<B: Backend>(
    model: &UNet<B>,
    config: &UNetConfig,
) -> Result<HashMap<ParamId, String>, ExportError> {
    config.validate().map_err(ExportError::Config)?;
    let (_, _, names) = emit_graph(model, config, &ExportOptions::default())?;
    Ok(names.into_iter().collect())
}

/// An exported graph, its opset, and the initializer name of every parameter.
type EmittedGraph = (edgediff_onnx::GraphProto, i64, Vec<(ParamId, String)>);

/// The graph of `model`, its opset, and the initializer name of every parameter.
fn emit_graph<B: Backend>(
    model: &UNet<B>,
    config: &UNetConfig,
    options: &ExportOptions,
) -> Result<EmittedGraph, ExportError> {
    let mut g = GraphBuilder::new("edgediff_unet");
    let native_group_norm = options.group_norm == GroupNormStyle::Native;
    let eps = if native_group_norm { String::new() } else { g.scalar_f32("groupnorm_eps", GROUP_NORM_EPS as f32) };
    let axes_2_3 = g.const_i64s("axes_2_3", &[2, 3]);
    let upsample_scales = g.initializer_f32("upsample_scales", &[4], &[1.0, 1.0, 2.0, 2.0])?;
    let mut e = Emitter { g, eps, axes_2_3, native_group_norm, names: Vec::new() };
    let (c, size) = (config.in_channels, config.image_size);
    let batch = || Dim::Param("N".to_string());
    let image_dims = [batch(), Dim::Fixed(c), Dim::Fixed(size), Dim::Fixed(size)];
    let sample = e.g.add_input(meta::INPUT_SAMPLE, data_type::FLOAT, &image_dims)?;
    let timestep = e.g.add_input(meta::INPUT_TIMESTEP, data_type::FLOAT, &[batch()])?;
    let labels = match config.num_classes {
        Some(_) => Some(e.g.add_input(meta::INPUT_CLASS_LABELS, data_type::INT64, &[batch()])?),
        None => None,
    };

    // Time embedding: [cos(t f), sin(t f)] → Linear → SiLU → Linear (+ class embedding) → SiLU.
    let freqs = timestep_frequencies(config.base_channels);
    let freqs = e.g.initializer_f32("time.freqs", &[1, freqs.len()], &freqs)?;
    let axis1 = e.g.const_i64s("axes_1", &[1]);
    let t = e.g.node("Unsqueeze", "time.t", &[&timestep, &axis1], vec![]);
    let args = e.g.node("Mul", "time.args", &[&t, &freqs], vec![]);
    let cos = e.g.node("Cos", "time.cos", &[&args], vec![]);
    let sin = e.g.node("Sin", "time.sin", &[&args], vec![]);
    let temb = e.g.node("Concat", "time.sinusoid", &[&cos, &sin], vec![attr_int("axis", 1)]);
    let temb = e.linear(&temb, &model.time_linear1, "time.linear1")?;
    let temb = e.silu(&temb, "time.act");
    let mut temb = e.linear(&temb, &model.time_linear2, "time.linear2")?;
    if let (Some(embedding), Some(labels)) = (&model.class_embedding, &labels) {
        let table = e.param(&embedding.weight, None, "class.embedding")?;
        let class = e.g.node("Gather", "class.emb", &[&table, labels], vec![attr_int("axis", 0)]);
        temb = e.g.node("Add", "time.with_class", &[&temb, &class], vec![]);
    }
    let temb_act = e.silu(&temb, "time.emb_act");

    let mut size = config.image_size;
    let mut h = e.conv(&sample, &model.conv_in, "conv_in")?;
    let mut skips = vec![h.clone()];
    for (l, level) in model.down.iter().enumerate() {
        for (i, block) in level.blocks.iter().enumerate() {
            h = e.res_block(&h, &temb_act, block, size, &format!("down.{l}.res.{i}"))?;
            if let Some(attn) = level.attentions.get(i) {
                h = e.attention(&h, attn, size, &format!("down.{l}.attn.{i}"))?;
            }
            skips.push(h.clone());
        }
        if let Some(conv) = &level.downsample {
            h = e.conv(&h, conv, &format!("down.{l}.downsample"))?;
            size /= 2;
            skips.push(h.clone());
        }
    }
    h = e.res_block(&h, &temb_act, &model.mid_block1, size, "mid.res.0")?;
    h = e.attention(&h, &model.mid_attn, size, "mid.attn")?;
    h = e.res_block(&h, &temb_act, &model.mid_block2, size, "mid.res.1")?;
    for (l, level) in model.up.iter().enumerate() {
        for (i, block) in level.blocks.iter().enumerate() {
            let name = format!("up.{l}.res.{i}");
            if let Some(skip) = skips.pop() {
                h = e.g.node("Concat", &format!("{name}.cat"), &[&h, &skip], vec![attr_int("axis", 1)]);
            }
            h = e.res_block(&h, &temb_act, block, size, &name)?;
            if let Some(attn) = level.attentions.get(i) {
                h = e.attention(&h, attn, size, &format!("up.{l}.attn.{i}"))?;
            }
        }
        if let Some(conv) = &level.upsample {
            let attrs = vec![
                attr_string("mode", "nearest"),
                attr_string("coordinate_transformation_mode", "asymmetric"),
                attr_string("nearest_mode", "floor"),
            ];
            let up = e.g.node("Resize", &format!("up.{l}.nearest"), &[&h, "", &upsample_scales], attrs);
            size *= 2;
            h = e.conv(&up, conv, &format!("up.{l}.upsample"))?;
        }
    }
    h = e.group_norm(&h, &model.norm_out, size, "out.norm")?;
    h = e.silu(&h, "out.act");
    let out = e.conv_named(&h, &model.conv_out, "out.conv", OUTPUT_NAME)?;
    e.g.add_output(&out, data_type::FLOAT, &image_dims)?;
    let opset = if e.native_group_norm { OPSET_NATIVE_GROUP_NORM } else { OPSET };
    Ok((e.g.finish(), opset, e.names))
}

fn check_consistency<B: Backend>(model: &UNet<B>, config: &UNetConfig, meta: &ModelMeta) -> Result<(), ExportError> {
    config.validate().map_err(ExportError::Config)?;
    let mismatch = |what: String| Err(ExportError::Meta(what));
    if model.base_channels != config.base_channels || model.down.len() != config.channel_mults.len() {
        return Err(ExportError::Config("the network was not built from this configuration".into()));
    }
    if model.class_embedding.is_some() != config.num_classes.is_some() {
        return Err(ExportError::Config("class conditioning differs between network and configuration".into()));
    }
    if meta.channels != config.in_channels {
        return mismatch(format!("channels {} vs in_channels {}", meta.channels, config.in_channels));
    }
    if meta.image_size != config.image_size {
        return mismatch(format!("image_size {} vs {}", meta.image_size, config.image_size));
    }
    let classes = config.num_classes.unwrap_or(0);
    if meta.class_names.len() != classes {
        return mismatch(format!("{} class names for {classes} classes", meta.class_names.len()));
    }
    if meta.precision != Precision::Fp32 {
        return mismatch("this exporter writes fp32 weights; precision must be fp32".into());
    }
    Ok(())
}
