//! edgediff runtime: runs a denoiser (ours, or a diffusers export) with tract and our own ops on
//! the CPU, and drives the sampling loop.
//!
//! The maths (schedules, DDIM/DDPM steps, noise) live in `edgediff-core`; this crate only
//! evaluates the network and moves buffers between it and the scheduler, so the same loop
//! runs fp32 and int8 models, on x86_64 and aarch64, bit-for-bit reproducibly.

pub mod compact_plan;
mod constants;
pub mod denoiser;
pub mod error;
mod handover;
pub mod kernels;
pub mod load;
pub mod marker;
pub mod memory;
pub mod memory_plan;
pub mod model_info;
pub mod network;
pub mod ops;
pub mod pixels;
pub mod rewrite;
pub mod sampling;
mod session;
pub mod source;
mod team;
pub mod threads;
mod validate;

pub use denoiser::{Denoiser, Ops};
pub use error::RuntimeError;
pub use load::{FastPaths, LoadOptions};
pub use memory::CountingAllocator;
pub use memory_plan::{MemoryLimit, MemoryPrediction};
pub use model_info::ModelInfo;
pub use network::Network;
pub use sampling::{sample, SampleOutput, SampleRequest, StepProgress};
/// A decoded ONNX model (tract's protobuf types).
pub use tract_onnx::pb::ModelProto;
