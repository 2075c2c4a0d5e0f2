//! [`QConv2d`]: one convolution with its weights packed for one kernel. Built (argument checks,
//! weight packing, per-channel offsets) in [`build`], run on inputs in [`run`].

mod build;
mod run;

use crate::geometry::Geometry;
use crate::kernel::Kernel;
use crate::pack::PackedWeights;
use crate::params::Epilogue;

/// A convolution with its weights packed for one kernel, ready to run on any input size.
#[derive(Debug, Clone)]
pub struct QConv2d {
    geometry: Geometry,
    /// Supported by this CPU (checked in [`QConv2d::build`]): the `unsafe` SIMD code it selects
    /// relies on that.
    kernel: Kernel,
    weights: PackedWeights,
    /// Per output channel: integer bias `- x_zero · Σw` (plus `128 · Σw` for signed activations).
    offsets: Vec<i32>,
    epilogue: Epilogue,
    x_scale: f32,
    x_zero: u8,
    /// Per input channel: f32 inputs are multiplied by these before quantisation (a fused
    /// per-channel `Mul`, see [`QConv2d::with_input_multipliers`]).
    x_multipliers: Option<Vec<f32>>,
}

impl QConv2d {
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// True if [`QConv2d::run`] returns f32 ([`QConv2d::integer`]), false for u8.
    pub fn outputs_f32(&self) -> bool {
        matches!(self.epilogue, Epilogue::Dequantize { .. })
    }

    /// Multiply-accumulates per image: what a caller weighs against a thread hand-off.
    pub fn macs_per_image(&self, h: usize, w: usize) -> usize {
        let g = &self.geometry;
        let (ho, wo) = g.output_size(h, w).unwrap_or((0, 0));
        g.out_channels * g.in_channels * g.kernel_h * g.kernel_w * ho * wo
    }
}
