//! Writes a trained [`UNet`] as an fp32 ONNX model (opset 17) that tract and ONNX Runtime run.
//!
//! The graph mirrors `UNet::forward` op for op, so the exported model computes the same f32s up
//! to the engines' kernel rounding. GroupNorm is decomposed by default (Reshape, ReduceMean,
//! Sub, Mul, Sqrt, Div, Reshape, Mul, Add) because opset 17 has no GroupNormalization and every
//! engine runs these primitives; [`GroupNormStyle::Native`] writes opset-21 GroupNormalization.
//! Linear layers become MatMul + Add (burn stores weights `[in, out]`). Dropout is omitted:
//! inference is deterministic. Weights are read with `into_data`, so any backend (Flex,
//! Autodiff<Flex>, CUDA) can be exported.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use burn::module::{Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use edgediff_core::meta::{self, ModelMeta, Precision};

use edgediff_onnx::{
    attr_float, attr_int, attr_ints, attr_string, data_type, encode_model, make_model, Dim, GraphBuilder, OnnxError,
};
use crate::unet::{attention_scale, timestep_frequencies, AttentionBlock, ResBlock, UNet, UNetConfig, GROUP_NORM_EPS};

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
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
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

/// The graph of `model`, its opset, and the initializer name of every parameter.
fn emit_graph<B: Backend>(
    model: &UNet<B>,
    config: &UNetConfig,
    options: &ExportOptions,
) -> Result<(edgediff_onnx::GraphProto, i64, Vec<(ParamId, String)>), ExportError> {
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

/// Writes `bytes` to a temporary file next to `path`, syncs it, then renames it over `path`,
/// so readers never see a half-written model.
pub fn write_onnx_atomic(bytes: &[u8], path: &Path) -> Result<(), ExportError> {
    let io = |source| ExportError::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| io(std::io::Error::other("path has no file name")))?;
    let tmp = dir.join(format!(".{}.{}.tmp", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
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

/// Appends layers to the graph; value names are returned and threaded through by the caller.
struct Emitter {
    g: GraphBuilder,
    /// Shared constants: GroupNorm epsilon (scalar), Unsqueeze axes `[2, 3]`.
    eps: String,
    axes_2_3: String,
    native_group_norm: bool,
    /// Initializer name of each parameter written so far.
    names: Vec<(ParamId, String)>,
}

impl Emitter {
    /// Adds a parameter as an initializer, optionally with new dims of the same element count.
    fn param<B: Backend, const D: usize>(
        &mut self,
        param: &Param<Tensor<B, D>>,
        dims: Option<&[usize]>,
        name: &str,
    ) -> Result<String, ExportError> {
        let tensor = param.val();
        let shape = tensor.dims();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| ExportError::Weights { name: name.to_string(), reason: format!("{e:?}") })?;
        let written = self.g.initializer_f32(name, dims.unwrap_or(&shape), &values)?;
        self.names.push((param.id, written.clone()));
        Ok(written)
    }

    fn conv<B: Backend>(&mut self, x: &str, conv: &Conv2d<B>, name: &str) -> Result<String, ExportError> {
        self.conv_named(x, conv, name, name)
    }

    /// A Conv node whose output is named after `output` (exactly, when that name is free).
    fn conv_named<B: Backend>(
        &mut self,
        x: &str,
        conv: &Conv2d<B>,
        name: &str,
        output: &str,
    ) -> Result<String, ExportError> {
        let pads = match conv.padding {
            PaddingConfig2d::Valid => [0, 0, 0, 0],
            PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right].map(|p| p as i64),
            PaddingConfig2d::Same => {
                return Err(ExportError::Config(format!("{name}: `Same` padding is not exported")))
            }
        };
        let weight = self.param(&conv.weight, None, &format!("{name}.weight"))?;
        let mut inputs = vec![x.to_string(), weight];
        if let Some(bias) = &conv.bias {
            inputs.push(self.param(bias, None, &format!("{name}.bias"))?);
        }
        let to_i64 = |v: [usize; 2]| v.map(|x| x as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &to_i64(conv.kernel_size)),
            attr_ints("strides", &to_i64(conv.stride)),
            attr_ints("dilations", &to_i64(conv.dilation)),
            attr_ints("pads", &pads),
            attr_int("group", conv.groups as i64),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let out = self.g.node("Conv", output, &inputs, attrs);
        if out != output && output == OUTPUT_NAME {
            return Err(OnnxError::DuplicateName(output.to_string()).into());
        }
        Ok(out)
    }

    /// `x @ W + b` on the last axis.
    fn linear<B: Backend>(&mut self, x: &str, linear: &Linear<B>, name: &str) -> Result<String, ExportError> {
        let weight = self.param(&linear.weight, None, &format!("{name}.weight"))?;
        let y = self.g.node("MatMul", &format!("{name}.matmul"), &[x, &weight], vec![]);
        match &linear.bias {
            Some(bias) => {
                let bias = self.param(bias, None, &format!("{name}.bias"))?;
                Ok(self.g.node("Add", name, &[&y, &bias], vec![]))
            }
            None => Ok(y),
        }
    }

    fn silu(&mut self, x: &str, name: &str) -> String {
        let s = self.g.node("Sigmoid", &format!("{name}.sigmoid"), &[x], vec![]);
        self.g.node("Mul", name, &[x, &s], vec![])
    }

    /// burn's `group_norm`: statistics over `[C/G, H, W]` per group, biased variance.
    fn group_norm<B: Backend>(
        &mut self,
        x: &str,
        norm: &GroupNorm<B>,
        size: usize,
        name: &str,
    ) -> Result<String, ExportError> {
        let (groups, c) = (norm.num_groups as i64, norm.num_channels);
        let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
            return Err(ExportError::Config(format!("{name}: GroupNorm without affine parameters")));
        };
        if self.native_group_norm {
            let gamma = self.param(gamma, None, &format!("{name}.gamma"))?;
            let beta = self.param(beta, None, &format!("{name}.beta"))?;
            let attrs = vec![attr_float("epsilon", GROUP_NORM_EPS as f32), attr_int("num_groups", groups)];
            return Ok(self.g.node("GroupNormalization", name, &[x, &gamma, &beta], attrs));
        }
        let grouped_shape = self.g.const_i64s(&format!("{name}.grouped_shape"), &[0, groups, -1]);
        let image_shape = self.g.const_i64s(&format!("{name}.shape"), &[0, c as i64, size as i64, size as i64]);
        let reduce = || vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)];
        let grouped = self.g.node("Reshape", &format!("{name}.grouped"), &[x, &grouped_shape], vec![]);
        let mean = self.g.node("ReduceMean", &format!("{name}.mean"), &[&grouped], reduce());
        let centred = self.g.node("Sub", &format!("{name}.centred"), &[&grouped, &mean], vec![]);
        let squared = self.g.node("Mul", &format!("{name}.squared"), &[&centred, &centred], vec![]);
        let var = self.g.node("ReduceMean", &format!("{name}.var"), &[&squared], reduce());
        let var_eps = self.g.node("Add", &format!("{name}.var_eps"), &[&var, &self.eps], vec![]);
        let std = self.g.node("Sqrt", &format!("{name}.std"), &[&var_eps], vec![]);
        let normed = self.g.node("Div", &format!("{name}.normed"), &[&centred, &std], vec![]);
        let normed = self.g.node("Reshape", &format!("{name}.ungrouped"), &[&normed, &image_shape], vec![]);
        let gamma = self.param(gamma, Some(&[c, 1, 1]), &format!("{name}.gamma"))?;
        let beta = self.param(beta, Some(&[c, 1, 1]), &format!("{name}.beta"))?;
        let scaled = self.g.node("Mul", &format!("{name}.scaled"), &[&normed, &gamma], vec![]);
        Ok(self.g.node("Add", name, &[&scaled, &beta], vec![]))
    }

    fn res_block<B: Backend>(
        &mut self,
        x: &str,
        temb_act: &str,
        block: &ResBlock<B>,
        size: usize,
        name: &str,
    ) -> Result<String, ExportError> {
        let h = self.group_norm(x, &block.norm1, size, &format!("{name}.norm1"))?;
        let h = self.silu(&h, &format!("{name}.act1"));
        let h = self.conv(&h, &block.conv1, &format!("{name}.conv1"))?;
        let t = self.linear(temb_act, &block.time_proj, &format!("{name}.time_proj"))?;
        let t = self.g.node("Unsqueeze", &format!("{name}.time_proj.nchw"), &[&t, &self.axes_2_3], vec![]);
        let h = self.g.node("Add", &format!("{name}.with_time"), &[&h, &t], vec![]);
        let h = self.group_norm(&h, &block.norm2, size, &format!("{name}.norm2"))?;
        let h = self.silu(&h, &format!("{name}.act2"));
        let h = self.conv(&h, &block.conv2, &format!("{name}.conv2"))?;
        let skip = match &block.skip {
            Some(conv) => self.conv(x, conv, &format!("{name}.skip"))?,
            None => x.to_string(),
        };
        Ok(self.g.node("Add", name, &[&skip, &h], vec![]))
    }

    fn attention<B: Backend>(
        &mut self,
        x: &str,
        attn: &AttentionBlock<B>,
        size: usize,
        name: &str,
    ) -> Result<String, ExportError> {
        let c = attn.norm.num_channels;
        let h = self.group_norm(x, &attn.norm, size, &format!("{name}.norm"))?;
        let flat = self.g.const_i64s(&format!("{name}.flat_shape"), &[0, c as i64, -1]);
        let h = self.g.node("Reshape", &format!("{name}.flat"), &[&h, &flat], vec![]);
        let swap = || vec![attr_ints("perm", &[0, 2, 1])];
        let tokens = self.g.node("Transpose", &format!("{name}.tokens"), &[&h], swap());
        let q = self.linear(&tokens, &attn.query, &format!("{name}.query"))?;
        let k = self.linear(&tokens, &attn.key, &format!("{name}.key"))?;
        let v = self.linear(&tokens, &attn.value, &format!("{name}.value"))?;
        let kt = self.g.node("Transpose", &format!("{name}.key_t"), &[&k], swap());
        let scores = self.g.node("MatMul", &format!("{name}.scores"), &[&q, &kt], vec![]);
        let scale = self.g.scalar_f32(&format!("{name}.scale"), attention_scale(c));
        let scores = self.g.node("Mul", &format!("{name}.scaled_scores"), &[&scores, &scale], vec![]);
        let probs = self.g.node("Softmax", &format!("{name}.probs"), &[&scores], vec![attr_int("axis", -1)]);
        let mixed = self.g.node("MatMul", &format!("{name}.mixed"), &[&probs, &v], vec![]);
        let out = self.linear(&mixed, &attn.proj, &format!("{name}.proj"))?;
        let out = self.g.node("Transpose", &format!("{name}.channels_first"), &[&out], swap());
        let shape = self.g.const_i64s(&format!("{name}.shape"), &[0, c as i64, size as i64, size as i64]);
        let out = self.g.node("Reshape", &format!("{name}.image"), &[&out, &shape], vec![]);
        Ok(self.g.node("Add", name, &[x, &out], vec![]))
    }
}
