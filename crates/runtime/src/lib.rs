//! edgediff runtime: runs an epsilon-network with tract on the CPU and drives the sampling loop.
//!
//! The maths (schedules, DDIM/DDPM steps, noise) live in `edgediff-core`; this crate only
//! evaluates the network and moves buffers between it and the scheduler, so the same loop
//! runs fp32 and int8 models, on x86_64 and aarch64, bit-for-bit reproducibly.

pub mod channel_affine;
pub mod compact_plan;
pub mod error;
pub mod files;
pub mod group_norm;
pub mod int8_conv;
pub mod int8_fusion;
pub mod int8_matmul;
pub mod marker;
pub mod memory;
pub mod model;
pub mod network;
mod onnx_rewrite;
pub mod reshape;
pub mod pixels;
pub mod sampling;

pub use error::RuntimeError;
pub use memory::CountingAllocator;
pub use model::{EpsModel, ModelInfo, Ops};
pub use network::Network;
pub use sampling::{sample, SampleOutput, SampleRequest, StepProgress};
