//! The int8 nodes one target becomes, in each [`QuantForm`].
//!
//! The order in which nodes and initializers are added is part of the output: names are made
//! unique in that order and the file lists them in it, so every step below adds its pieces in
//! one fixed sequence.

use std::collections::HashMap;

use edgediff_onnx::{attr_int, data_type, tensor_f32, GraphBuilder, GraphProto, NodeProto, TensorProto};

use super::super::smooth::scale_input_channels;
use super::super::weights::{quantize_bias, quantize_per_channel, ActivationParams, ActivationType};
use super::super::QuantizeError;
use super::{QuantForm, Smoothing, Target, TargetKind};

/// An activation's `QuantizeLinear`: its output, its scale and zero-point initializers, and
/// the parameters they hold.
#[derive(Debug, Clone)]
struct QuantizedInput {
    q: String,
    scale: String,
    zero_point: String,
    params: ActivationParams,
}

/// A weight as int8: its initializer's name, per-channel axis and scales.
struct QuantizedWeight {
    q: String,
    axis: usize,
    scales: Vec<f32>,
}

impl QuantizedWeight {
    /// Output channels: one scale each.
    fn channels(&self) -> usize {
        self.scales.len()
    }
}

/// The graph being rewritten and what the rewrite reads: the original f32 initializers, the
/// calibrated ranges and smoothings, and the `QuantizeLinear` already made for each activation.
pub(super) struct Rewriter<'a> {
    pub(super) g: GraphBuilder,
    form: QuantForm,
    activations: ActivationType,
    ranges: &'a HashMap<String, (f32, f32)>,
    smoothing: &'a HashMap<String, Smoothing>,
    weights: HashMap<String, TensorProto>,
    quantized_inputs: HashMap<String, QuantizedInput>,
}

impl<'a> Rewriter<'a> {
    pub(super) fn new(
        graph: GraphProto,
        form: QuantForm,
        activations: ActivationType,
        ranges: &'a HashMap<String, (f32, f32)>,
        smoothing: &'a HashMap<String, Smoothing>,
    ) -> Self {
        let weights = graph.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
        Rewriter {
            g: GraphBuilder::from_graph(graph),
            form,
            activations,
            ranges,
            smoothing,
            weights,
            quantized_inputs: HashMap::new(),
        }
    }

    /// Replaces `node` (the node of `target`) by its int8 form.
    pub(super) fn rewrite_target(&mut self, node: NodeProto, target: &Target) -> Result<(), QuantizeError> {
        let x = self.quantized_input(target)?;
        let w = self.quantized_weight(target)?;
        match self.form {
            QuantForm::Qdq => self.emit_qdq(node, target, x, w),
            QuantForm::Integer => self.emit_integer(&node, target, x, w),
            QuantForm::QOperator => self.emit_qoperator(&node, target, x, w),
        }
    }

    /// The activation parameters of a [min, max] range.
    fn params(&self, (lo, hi): (f32, f32)) -> ActivationParams {
        ActivationParams::new(self.activations, lo, hi)
    }

    /// The calibrated range of tensor `name`.
    fn range(&self, name: &str) -> Result<(f32, f32), QuantizeError> {
        self.ranges.get(name).copied().ok_or_else(|| QuantizeError::Uncalibrated(name.to_string()))
    }

    /// The zero-point initializer of activation parameters `p`.
    fn zero_point(&mut self, hint: &str, p: ActivationParams) -> Result<String, QuantizeError> {
        Ok(match self.activations {
            ActivationType::U8Asymmetric => self.g.initializer_u8(hint, &[], &[p.zero_point])?,
            ActivationType::I8Symmetric => self.g.initializer_i8(hint, &[], &[0])?,
        })
    }

    /// The values of the original f32 initializer `name`.
    fn f32_init(&self, name: &str) -> Result<Vec<f32>, QuantizeError> {
        match self.weights.get(name) {
            Some(t) => Ok(tensor_f32(t)?),
            None => Err(QuantizeError::Model(format!("initializer `{name}` missing"))),
        }
    }

    /// The target's input through `QuantizeLinear`: one per activation, shared by all its
    /// quantised consumers; a smoothed activation is first multiplied by its inverse factors.
    fn quantized_input(&mut self, target: &Target) -> Result<QuantizedInput, QuantizeError> {
        if let Some(q) = self.quantized_inputs.get(&target.input) {
            return Ok(q.clone());
        }
        let (x, p) = match self.smoothing.get(&target.input) {
            Some(smooth) => {
                let inverse = smooth.inverse();
                let dims = match target.kind {
                    TargetKind::Conv => vec![1, inverse.len(), 1, 1],
                    TargetKind::MatMul => vec![inverse.len()],
                };
                let inverse = self.g.initializer_f32(&format!("{}.smooth_inverse", target.input), &dims, &inverse)?;
                let x = self.g.node("Mul", &format!("{}.smooth", target.input), &[&target.input, &inverse], vec![]);
                (x, self.params(smooth.range))
            }
            None => (target.input.clone(), self.params(self.range(&target.input)?)),
        };
        let scale = self.g.scalar_f32(&format!("{}.scale", target.input), p.scale);
        let zero_point = self.zero_point(&format!("{}.zero_point", target.input), p)?;
        let q = self.g.node("QuantizeLinear", &format!("{}.q", target.input), &[&x, &scale, &zero_point], vec![]);
        let entry = QuantizedInput { q, scale, zero_point, params: p };
        self.quantized_inputs.insert(target.input.clone(), entry.clone());
        Ok(entry)
    }

    /// The target's weight, multiplied by its input's smoothing factors if any, as an int8
    /// initializer with one scale per output channel.
    fn quantized_weight(&mut self, target: &Target) -> Result<QuantizedWeight, QuantizeError> {
        let dims: Vec<usize> =
            self.weights.get(&target.weight).map_or(Vec::new(), |w| w.dims.iter().map(|&d| d as usize).collect());
        let axis = if target.kind == TargetKind::Conv { 0 } else { 1 };
        let mut w = self.f32_init(&target.weight)?;
        if let Some(smooth) = self.smoothing.get(&target.input) {
            // The input-channel axis: Conv [M][C][kh][kw], MatMul [C][M].
            scale_input_channels(&mut w, &dims, 1 - axis, &smooth.factors);
        }
        let qw = quantize_per_channel(&w, &dims, axis);
        let q = self.g.initializer_i8(&format!("{}.int8", target.weight), &dims, &qw.values)?;
        Ok(QuantizedWeight { q, axis, scales: qw.scales })
    }

    /// The per-channel scale and zero-point initializers of a weight, as `DequantizeLinear` and
    /// the `QLinear*` ops take them.
    fn per_channel_params(&mut self, target: &Target, w: &QuantizedWeight) -> Result<(String, String), QuantizeError> {
        let channels = w.channels();
        let scale = self.g.initializer_f32(&format!("{}.scale", target.weight), &[channels], &w.scales)?;
        let zp = self.g.initializer_i8(&format!("{}.zero_point", target.weight), &[channels], &vec![0; channels])?;
        Ok((scale, zp))
    }

    /// [`QuantForm::Qdq`]: the original node, now reading dequantised activation and weight.
    fn emit_qdq(
        &mut self,
        node: NodeProto,
        target: &Target,
        x: QuantizedInput,
        w: QuantizedWeight,
    ) -> Result<(), QuantizeError> {
        let (w_scale, w_zp) = self.per_channel_params(target, &w)?;
        let x_dq =
            self.g.node("DequantizeLinear", &format!("{}.dq", target.input), &[&x.q, &x.scale, &x.zero_point], vec![]);
        let attrs = vec![attr_int("axis", w.axis as i64)];
        let w_dq = self.g.node("DequantizeLinear", &format!("{}.dq", target.weight), &[&w.q, &w_scale, &w_zp], attrs);
        let mut inputs = vec![x_dq, w_dq];
        inputs.extend(target.bias.iter().cloned());
        self.g.keep_node(NodeProto { input: inputs, ..node });
        Ok(())
    }

    /// [`QuantForm::Integer`]: the integer op, its int32 result cast to f32 and multiplied by
    /// the per-channel output scales, then the f32 bias added.
    fn emit_integer(
        &mut self,
        node: &NodeProto,
        target: &Target,
        x: QuantizedInput,
        w: QuantizedWeight,
    ) -> Result<(), QuantizeError> {
        let channels = w.channels();
        let scales: Vec<f32> = w.scales.iter().map(|w| w * x.params.scale).collect();
        let (op, per_channel_dims) = match target.kind {
            TargetKind::Conv => ("ConvInteger", vec![channels, 1, 1]),
            TargetKind::MatMul => ("MatMulInteger", vec![channels]),
        };
        // Symmetric weights: one scalar zero point (ONNX Runtime's ConvInteger rejects
        // per-channel zero points); the per-channel scales live in the Mul below.
        let w_zp = self.g.initializer_i8(&format!("{}.zero_point", target.weight), &[], &[0])?;
        let acc = self.g.unique_name(&format!("{}.int32", target.output));
        emit(&mut self.g, op, vec![x.q, w.q, x.zero_point, w_zp], &acc, node);
        let to_float = vec![attr_int("to", data_type::FLOAT as i64)];
        let accf = self.g.node("Cast", &format!("{}.f32", target.output), &[&acc], to_float);
        let scale = self.g.initializer_f32(&format!("{}.out_scale", target.output), &per_channel_dims, &scales)?;
        match &target.bias {
            Some(bias) => {
                let values = self.f32_init(bias)?;
                let b = self.g.initializer_f32(&format!("{bias}.nchw"), &per_channel_dims, &values)?;
                let scaled = self.g.node("Mul", &format!("{}.scaled", target.output), &[&accf, &scale], vec![]);
                emit(&mut self.g, "Add", vec![scaled, b], &target.output, &NodeProto::default());
            }
            None => emit(&mut self.g, "Mul", vec![accf, scale], &target.output, &NodeProto::default()),
        }
        Ok(())
    }

    /// [`QuantForm::QOperator`]: `QLinearConv`/`QLinearMatMul` with an int32 bias, writing
    /// uint8 at the output's calibrated range, then `DequantizeLinear` back to f32.
    fn emit_qoperator(
        &mut self,
        node: &NodeProto,
        target: &Target,
        x: QuantizedInput,
        w: QuantizedWeight,
    ) -> Result<(), QuantizeError> {
        let channels = w.channels();
        let (w_scale, w_zp) = self.per_channel_params(target, &w)?;
        let p = self.params(self.range(&target.output)?);
        let y_scale = self.g.scalar_f32(&format!("{}.scale", target.output), p.scale);
        let y_zp = self.zero_point(&format!("{}.zero_point", target.output), p)?;
        let mut inputs = vec![x.q, x.scale, x.zero_point, w.q, w_scale, w_zp, y_scale.clone(), y_zp.clone()];
        let op = match target.kind {
            TargetKind::Conv => {
                if let Some(bias) = &target.bias {
                    let q = quantize_bias(&self.f32_init(bias)?, x.params.scale, &w.scales);
                    inputs.push(self.g.initializer_i32(&format!("{bias}.int32"), &[channels], &q)?);
                }
                "QLinearConv"
            }
            TargetKind::MatMul => "QLinearMatMul",
        };
        let y_q = self.g.unique_name(&format!("{}.q", target.output));
        emit(&mut self.g, op, inputs, &y_q, node);
        emit(&mut self.g, "DequantizeLinear", vec![y_q, y_scale, y_zp], &target.output, &NodeProto::default());
        Ok(())
    }
}

/// Adds an `op` node writing the already-claimed name `output` (a rewritten node keeps its
/// output's name so its consumers need no change); attributes come from `template` (the
/// original Conv's kernel/pads/strides, or none).
fn emit(g: &mut GraphBuilder, op: &str, input: Vec<String>, output: &str, template: &NodeProto) {
    let name = g.unique_name(&format!("{output}/{op}"));
    g.keep_node(NodeProto {
        input,
        output: vec![output.to_string()],
        name,
        op_type: op.to_string(),
        attribute: template.attribute.clone(),
        ..Default::default()
    });
}
