//! edgediff trainer: fits the epsilon-network with burn, exports ONNX, writes reference vectors.

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod export;
pub mod fit;
pub mod import;
pub mod onnx;
pub mod quantize;
pub mod unet;
pub mod eval;
pub mod reference;
