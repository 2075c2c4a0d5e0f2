//! A quantised 2-D convolution with the semantics of ONNX `QLinearConv`, written for edgediff's
//! int8 models because tract's own int8 convolution is slower than its fp32 one (it runs an
//! eager im2col into a generic i32 matmul, then requantises per op).
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
//! round-to-nearest-even, so every kernel below (AVX-512 VNNI, AVX-VNNI, AVX2, Arm dot product,
//! NEON, portable) gives the same bytes: an int8 convolution's output does not depend on the CPU.
//!
//! Layout: the input is NCHW u8. It is first copied into a padded image with channels
//! interleaved by four (`[C/4][H+pads][W+pads][4]`), so that one im2col row for a kernel tap
//! and four channels is a plain copy, and the packed column matrix (`[K/4][P][4]`: four
//! reduction values of one output pixel side by side) feeds a dot-product instruction
//! directly: `vpdpbusd` (x86_64, 16 pixels x 4 values per instruction, 8 with AVX-VNNI;
//! `vpmaddwd` on AVX2, after widening to 16 bits) or `sdot` (aarch64, 4 pixels x 4 values).
//! Weights are packed once, at load, in blocks of [`ROWS`] output channels: `[M/8][K/4][8][4]`.
//!
//! Modules: [`QConv2d`] is built (checks, weight packing, offsets) in `conv::build` and run in
//! `conv::run`; `pack` lays out weights and activations, `kernels` holds the dot-product
//! loops, `arith` the scalar rounding every kernel shares.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod arith;
mod conv;
mod error;
mod geometry;
mod io;
mod kernel;
mod kernels;
mod pack;
mod params;

pub use arith::{dequantize, quantize, requantize};
pub use conv::QConv2d;
pub use error::QConvError;
pub use geometry::Geometry;
pub use io::{Addend, Input, Output, OutputMut};
pub use kernel::Kernel;
pub use params::QuantParams;

/// A parallel-for supplied by the caller (this crate has no thread pool of its own):
/// `parallel(jobs, job)` must call `job(i)` exactly once for every `i < jobs`, on any threads
/// in any order, and return only when all calls have returned.
pub type ParallelFor<'a> = &'a (dyn Fn(usize, &(dyn Fn(usize) + Sync)) + Sync);

/// Output channels computed together by one microkernel call.
pub const ROWS: usize = 8;
/// Output pixels per column tile (one 512-bit vector of i32).
pub const TILE: usize = 16;
