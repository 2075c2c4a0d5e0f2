//! edgediff trainer: fits the denoising U-Net with burn, exports it to ONNX, and samples
//! reference vectors from a run's weights on burn. The only crate of the project that builds
//! burn; the ONNX writer, the quantiser, the datasets and the evaluator are crates of their own.

pub mod checkpoint;
pub mod device;
pub mod export;
pub mod fit;
pub mod import;
pub mod reference;
pub mod unet;
