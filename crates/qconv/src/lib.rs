//! A quantised 2-D convolution with the semantics of ONNX `QLinearConv`, written for edgediff's
//! int8 models because tract's own int8 convolution is slower than its fp32 one (issue 4:
//! eager im2col into a generic i32 matmul, then per-op requantisation).
//!
//! What it computes, for activations `x` (u8, zero point `x_zero`), weights `w` (i8, symmetric:
//! zero point 0, one scale per output channel) and an optional i32 bias:
//!
//! ```text
//! acc[m, p] = bias[m] + Σ_k (x[k, p] - x_zero) · w[m, k]          (exact, in i32)
//! y[m, p]   = clamp(round_half_even(f32(acc) · mult[m]) + y_zero, 0, 255)
//! mult[m]   = (x_scale · w_scale[m]) / y_scale                      (f32)
//! ```
//!
//! The integer sum is exact and the requantisation is three IEEE f32 operations with
//! round-to-nearest-even, so every kernel below (AVX-512 VNNI, Arm dot product, portable)
//! gives the same bytes: an int8 convolution's output does not depend on the CPU.
//!
//! Layout: the input is NCHW u8. It is first copied into a padded image with channels
//! interleaved by four (`[C/4][H+pads][W+pads][4]`), so that one im2col row for a kernel tap
//! and four channels is a plain copy, and the packed column matrix (`[K/4][P][4]`: four
//! reduction values of one output pixel side by side) feeds a dot-product instruction
//! directly: `vpdpbusd` (x86_64, 16 pixels x 4 values per instruction) or `sdot` (aarch64,
//! 4 pixels x 4 values). Weights are packed once, at load, in blocks of [`ROWS`] output
//! channels: `[M/8][K/4][8][4]`.

mod arith;
mod geometry;
mod kernel;
mod kernels;
mod pack;

pub use arith::{dequantize, quantize, requantize};
pub use geometry::Geometry;
pub use kernel::Kernel;

use std::cell::RefCell;

use pack::{pack_columns_for, pack_weights, PackedWeights};

thread_local! {
    /// Packing buffers, reused by every call on this thread (they are as large as the biggest
    /// layer's column matrix; allocating them per call cost page faults on every layer).
    static SCRATCH: RefCell<pack::Scratch> = RefCell::new(pack::Scratch::default());
}

/// A parallel-for supplied by the caller (this crate has no thread pool of its own):
/// `parallel(jobs, job)` must call `job(i)` exactly once for every `i < jobs`, on any threads
/// in any order, and return only when all calls have returned.
pub type ParallelFor<'a> = &'a (dyn Fn(usize, &(dyn Fn(usize) + Sync)) + Sync);

/// Output channels computed together by one microkernel call.
pub const ROWS: usize = 8;
/// Output pixels per column tile (one 512-bit vector of i32).
pub const TILE: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QConvError {
    #[error("weights have {got} values, expected {want} (out {m} x in {c} x {kh} x {kw})")]
    WeightLen { got: usize, want: usize, m: usize, c: usize, kh: usize, kw: usize },
    #[error("{what} has {got} values, expected {want}")]
    ParamLen { what: &'static str, got: usize, want: usize },
    #[error("{0} must be finite and positive")]
    Scale(&'static str),
    #[error("input is {got} bytes, expected {want} (N x C x H x W)")]
    InputLen { got: usize, want: usize },
    #[error("a {h}x{w} input is smaller than the padded {kh}x{kw} kernel")]
    TooSmall { h: usize, w: usize, kh: usize, kw: usize },
    #[error("this CPU cannot run the {0} kernel")]
    UnsupportedKernel(&'static str),
    #[error("a channels-last input needs a 1x1 kernel with stride 1 and no padding")]
    NotPointwise,
    #[error("a convolution with input multipliers needs an f32 input")]
    MultipliedU8,
}

/// Quantisation parameters of one `QLinearConv`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantParams {
    pub x_scale: f32,
    pub x_zero: u8,
    /// One per output channel (a single value applies to all).
    pub w_scales: Vec<f32>,
    pub y_scale: f32,
    pub y_zero: u8,
}

/// What happens to the exact i32 sums.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Epilogue {
    /// `QLinearConv`: [`requantize`] to u8.
    Requantize { mult: Vec<f32>, y_zero: u8 },
    /// `ConvInteger → Cast(f32) → Mul(scale) [→ Add(bias)]`: [`dequantize`] to f32.
    Dequantize { scale: Vec<f32>, bias: Option<Vec<f32>> },
}

/// The activations of one call.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Already quantised (the output of a `QuantizeLinear`).
    U8(&'a [u8]),
    /// f32, quantised here with [`quantize`], `1 / x_scale` and `x_zero` (a fused
    /// `QuantizeLinear`).
    F32(&'a [f32]),
}

impl Input<'_> {
    fn len(&self) -> usize {
        match self {
            Input::U8(x) => x.len(),
            Input::F32(x) => x.len(),
        }
    }
}

/// The result of one call, `[n][M][ho][wo]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// A convolution with its weights packed for one kernel, ready to run on any input size.
#[derive(Debug, Clone)]
pub struct QConv2d {
    geometry: Geometry,
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
    /// `QLinearConv`: `weights` are ONNX-ordered `[M][C][kh][kw]`, `bias` is `[M]` i32.
    pub fn qlinear(
        geometry: Geometry,
        weights: &[i8],
        bias: Option<&[i32]>,
        params: &QuantParams,
        kernel: Kernel,
    ) -> Result<QConv2d, QConvError> {
        let m = geometry.out_channels;
        let ws = &params.w_scales;
        if ws.len() != 1 && ws.len() != m {
            return Err(QConvError::ParamLen { what: "w_scale", got: ws.len(), want: m });
        }
        check_scale("y_scale", &[params.y_scale])?;
        check_scale("w_scale", ws)?;
        let mult = (0..m).map(|i| (params.x_scale * ws[if ws.len() == 1 { 0 } else { i }]) / params.y_scale).collect();
        let epilogue = Epilogue::Requantize { mult, y_zero: params.y_zero };
        Self::build(geometry, weights, bias, params.x_scale, params.x_zero, epilogue, kernel)
    }

    /// `QuantizeLinear → ConvInteger → Cast → Mul(scale) [→ Add(bias)]`, the form
    /// `train quantize --form integer` writes: f32 out, `scale` and `bias` per output channel.
    pub fn integer(
        geometry: Geometry,
        weights: &[i8],
        x_scale: f32,
        x_zero: u8,
        scale: Vec<f32>,
        bias: Option<Vec<f32>>,
        kernel: Kernel,
    ) -> Result<QConv2d, QConvError> {
        let m = geometry.out_channels;
        if scale.len() != m {
            return Err(QConvError::ParamLen { what: "output scale", got: scale.len(), want: m });
        }
        if let Some(b) = &bias {
            if b.len() != m {
                return Err(QConvError::ParamLen { what: "bias", got: b.len(), want: m });
            }
        }
        Self::build(geometry, weights, None, x_scale, x_zero, Epilogue::Dequantize { scale, bias }, kernel)
    }

    fn build(
        geometry: Geometry,
        weights: &[i8],
        bias: Option<&[i32]>,
        x_scale: f32,
        x_zero: u8,
        epilogue: Epilogue,
        kernel: Kernel,
    ) -> Result<QConv2d, QConvError> {
        let g = &geometry;
        let want = g.out_channels * g.in_channels * g.kernel_h * g.kernel_w;
        if weights.len() != want {
            return Err(QConvError::WeightLen {
                got: weights.len(),
                want,
                m: g.out_channels,
                c: g.in_channels,
                kh: g.kernel_h,
                kw: g.kernel_w,
            });
        }
        if let Some(b) = bias {
            if b.len() != g.out_channels {
                return Err(QConvError::ParamLen { what: "bias", got: b.len(), want: g.out_channels });
            }
        }
        check_scale("x_scale", &[x_scale])?;
        // The SIMD kernels are `unsafe` target-feature code: refuse them where the CPU lacks it.
        if !kernel.is_supported() {
            return Err(QConvError::UnsupportedKernel(kernel.name()));
        }
        let per_row = weights.len() / g.out_channels.max(1);
        let shift = if kernel.signed_activations() { 128 } else { 0 };
        let offsets = (0..g.out_channels)
            .map(|m| {
                let sum: i32 = weights[m * per_row..(m + 1) * per_row].iter().map(|&v| v as i32).sum();
                bias.map_or(0, |b| b[m]) + (shift - x_zero as i32) * sum
            })
            .collect();
        Ok(QConv2d {
            weights: pack_weights(g, weights),
            geometry,
            kernel,
            offsets,
            epilogue,
            x_scale,
            x_zero,
            x_multipliers: None,
        })
    }

    /// Multiplies each input channel `c` of an f32 input by `multipliers[c]` before quantising
    /// it: the arithmetic of a separate `Mul` by a per-channel constant (the f32 product,
    /// rounded, then [`quantize`]), without its output buffer. `train quantize --smooth` writes
    /// such a `Mul` in front of each smoothed layer. u8 inputs are then refused.
    pub fn with_input_multipliers(mut self, multipliers: Vec<f32>) -> Result<QConv2d, QConvError> {
        let c = self.geometry.in_channels;
        if multipliers.len() != c {
            return Err(QConvError::ParamLen { what: "input multipliers", got: multipliers.len(), want: c });
        }
        if !multipliers.iter().all(|m| m.is_finite()) {
            return Err(QConvError::Scale("input multipliers"));
        }
        self.x_multipliers = Some(multipliers);
        Ok(self)
    }

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

    /// Runs on `x` (`[n][C][h][w]`) and returns `[n][M][ho][wo]` with `(ho, wo)`.
    pub fn run(&self, x: Input<'_>, n: usize, h: usize, w: usize) -> Result<(Output, usize, usize), QConvError> {
        self.run_with(x, n, h, w, None)
    }

    /// [`QConv2d::run`] with each image's bands of output rows computed as independent jobs of
    /// `parallel`. The input is quantised and padded once per image on the calling thread; each
    /// job packs its band's columns and computes all output channels for it. The output bytes
    /// are the same whatever the threads do (every output value is computed by exactly one
    /// job, with the same arithmetic).
    pub fn run_parallel(
        &self,
        x: Input<'_>,
        n: usize,
        h: usize,
        w: usize,
        parallel: ParallelFor<'_>,
    ) -> Result<(Output, usize, usize), QConvError> {
        self.run_with(x, n, h, w, Some(parallel))
    }

    /// Multiply-accumulates per image: what a caller weighs against a thread hand-off.
    pub fn macs_per_image(&self, h: usize, w: usize) -> usize {
        let g = &self.geometry;
        let (ho, wo) = g.output_size(h, w).unwrap_or((0, 0));
        g.out_channels * g.in_channels * g.kernel_h * g.kernel_w * ho * wo
    }

    /// A 1x1, stride-1, unpadded convolution run as the matrix product `x[pixels][C] · wᵀ`:
    /// `x` is channels-last (e.g. attention tokens), the result is `[M][pixels]`. Same bytes as
    /// [`QConv2d::run`] on the transposed input, without building the transposed image.
    pub fn run_channels_last(&self, x: Input<'_>, pixels: usize) -> Result<Output, QConvError> {
        let g = &self.geometry;
        let pads = [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right];
        if (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w) != (1, 1, 1, 1) || pads != [0; 4] {
            return Err(QConvError::NotPointwise);
        }
        let want = pixels * g.in_channels;
        if x.len() != want {
            return Err(QConvError::InputLen { got: x.len(), want });
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut quantized = std::mem::take(&mut scratch.quantized);
            let x = match self.quantized(x, 1, &mut quantized) {
                Ok(x) => x,
                Err(e) => {
                    scratch.quantized = quantized;
                    return Err(e);
                }
            };
            let cols = pack::pack_channels_last(g, x, pixels, self.x_zero, self.kernel.signed_activations(), scratch);
            let mut output = self.new_output(g.out_channels * pixels);
            let out = match &mut output {
                Output::U8(o) => kernels::Out::U8(o),
                Output::F32(o) => kernels::Out::F32(o),
            };
            kernels::gemm(self.kernel, &self.weights, cols, &self.offsets, &self.epilogue, out);
            scratch.quantized = quantized;
            Ok(output)
        })
    }

    /// `x` as u8: as given, or quantised into `buffer`. `inner` is the distance between
    /// channels in `x` (H·W for NCHW, 1 for channels-last), for the input multipliers.
    fn quantized<'a>(&self, x: Input<'a>, inner: usize, buffer: &'a mut Vec<u8>) -> Result<&'a [u8], QConvError> {
        match (x, &self.x_multipliers) {
            (Input::U8(x), None) => Ok(x),
            (Input::U8(_), Some(_)) => Err(QConvError::MultipliedU8),
            (Input::F32(x), None) => {
                arith::quantize_slice(self.kernel, x, 1.0 / self.x_scale, self.x_zero, buffer);
                Ok(&buffer[..])
            }
            (Input::F32(x), Some(m)) => {
                arith::quantize_slice_multiplied(self.kernel, x, m, inner, 1.0 / self.x_scale, self.x_zero, buffer);
                Ok(&buffer[..])
            }
        }
    }

    fn new_output(&self, len: usize) -> Output {
        match self.epilogue {
            Epilogue::Requantize { .. } => Output::U8(vec![0u8; len]),
            Epilogue::Dequantize { .. } => Output::F32(vec![0f32; len]),
        }
    }

    /// [`QConv2d::run`] and [`QConv2d::run_parallel`]: checks, then each image on this thread's
    /// packing buffers.
    fn run_with(
        &self,
        x: Input<'_>,
        n: usize,
        h: usize,
        w: usize,
        parallel: Option<ParallelFor<'_>>,
    ) -> Result<(Output, usize, usize), QConvError> {
        let g = &self.geometry;
        let want = n * g.in_channels * h * w;
        if x.len() != want {
            return Err(QConvError::InputLen { got: x.len(), want });
        }
        let (ho, wo) = g.output_size(h, w).ok_or(QConvError::TooSmall { h, w, kh: g.kernel_h, kw: g.kernel_w })?;
        SCRATCH.with_borrow_mut(|scratch| self.run_images(x, n, h, w, (ho, wo), scratch, parallel))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_images(
        &self,
        x: Input<'_>,
        n: usize,
        h: usize,
        w: usize,
        (ho, wo): (usize, usize),
        scratch: &mut pack::Scratch,
        parallel: Option<ParallelFor<'_>>,
    ) -> Result<(Output, usize, usize), QConvError> {
        let g = &self.geometry;
        let mut quantized = std::mem::take(&mut scratch.quantized);
        let x = match self.quantized(x, h * w, &mut quantized) {
            Ok(x) => x,
            Err(e) => {
                scratch.quantized = quantized;
                return Err(e);
            }
        };
        let (image_len, p) = (g.in_channels * h * w, ho * wo);
        let mut output = self.new_output(n * g.out_channels * p);
        // The columns are packed a band of output rows at a time (a small buffer, see
        // `pack::band_rows`); split over threads, each band is a job.
        let band = pack::band_rows(g, ho, wo);
        for i in 0..n {
            let image = &x[i * image_len..][..image_len];
            let range = i * g.out_channels * p..(i + 1) * g.out_channels * p;
            match parallel {
                None => {
                    for first in (0..ho).step_by(band) {
                        let rows = band.min(ho - first);
                        let image = (first == 0).then_some(image);
                        let cols = pack_columns_for(self.kernel, g, image, h, w, self.x_zero, (first, rows), scratch);
                        kernels::gemm(
                            self.kernel,
                            &self.weights,
                            cols,
                            &self.offsets,
                            &self.epilogue,
                            image_out(&mut output, range.clone()),
                        );
                    }
                }
                Some(par) => {
                    pack::pad_image_for(self.kernel, g, image, h, w, self.x_zero, &mut scratch.padded);
                    let packer = pack::BandPacker {
                        kernel: self.kernel,
                        g,
                        h,
                        w,
                        x_zero: self.x_zero,
                        band,
                        ho,
                        padded: &scratch.padded,
                    };
                    let (weights, offsets, epilogue) = (&self.weights, &self.offsets, &self.epilogue);
                    kernels::gemm_bands_parallel(
                        self.kernel,
                        weights,
                        &packer,
                        offsets,
                        epilogue,
                        image_out(&mut output, range.clone()),
                        par,
                    );
                }
            }
        }
        scratch.quantized = quantized;
        Ok((output, ho, wo))
    }
}

/// One image's part of the output.
fn image_out(output: &mut Output, range: std::ops::Range<usize>) -> kernels::Out<'_> {
    match output {
        Output::U8(o) => kernels::Out::U8(&mut o[range]),
        Output::F32(o) => kernels::Out::F32(&mut o[range]),
    }
}

fn check_scale(what: &'static str, values: &[f32]) -> Result<(), QConvError> {
    if values.iter().all(|&v| v.is_finite() && v > 0.0) {
        Ok(())
    } else {
        Err(QConvError::Scale(what))
    }
}
