//! [`Emitter`]: writes each layer of the U-Net as ONNX nodes, op for op as `UNet::forward`
//! computes it.

use burn::module::{Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use edgediff_onnx::{attr_float, attr_int, attr_ints, GraphBuilder, OnnxError};

use super::{ExportError, OUTPUT_NAME};
use crate::unet::{attention_scale, AttentionBlock, ResBlock, GROUP_NORM_EPS};

/// Appends layers to the graph; value names are returned and threaded through by the caller.
pub(super) struct Emitter {
    pub(super) g: GraphBuilder,
    /// Shared constants: GroupNorm epsilon (scalar), Unsqueeze axes `[2, 3]`.
    pub(super) eps: String,
    pub(super) axes_2_3: String,
    pub(super) native_group_norm: bool,
    /// Initializer name of each parameter written so far.
    pub(super) names: Vec<(ParamId, String)>,
}

impl Emitter {
    /// Adds a parameter as an initializer, optionally with new dims of the same element count.
    pub(super) fn param<B: Backend, const D: usize>(
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

    pub(super) fn conv<B: Backend>(&mut self, x: &str, conv: &Conv2d<B>, name: &str) -> Result<String, ExportError> {
        self.conv_named(x, conv, name, name)
    }

    /// A Conv node whose output is named after `output` (exactly, when that name is free).
    pub(super) fn conv_named<B: Backend>(
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
    pub(super) fn linear<B: Backend>(
        &mut self,
        x: &str,
        linear: &Linear<B>,
        name: &str,
    ) -> Result<String, ExportError> {
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

    pub(super) fn silu(&mut self, x: &str, name: &str) -> String {
        let s = self.g.node("Sigmoid", &format!("{name}.sigmoid"), &[x], vec![]);
        self.g.node("Mul", name, &[x, &s], vec![])
    }

    /// burn's `group_norm`: statistics over `[C/G, H, W]` per group, biased variance.
    pub(super) fn group_norm<B: Backend>(
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

    pub(super) fn res_block<B: Backend>(
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

    pub(super) fn attention<B: Backend>(
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
