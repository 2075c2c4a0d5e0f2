//! Code shared by the criterion benches (`benches/*.rs`) and the measurement helper
//! (`examples/bench_probe.rs`, which includes this module with `#[path]`), so that the timed
//! loop, the memory probe and the instruction count all run exactly the same engine calls.
//!
//! - [`models`]: the models under test (the default model; the 35.7M-param U-Net exported at
//!   bench time into `target/bench-models/`), and the place where int8 variants go (issue 4).
//! - [`engines`]: one network evaluation behind one trait, for tract and ONNX Runtime.

// Each bench target uses a different subset of these helpers.
#![allow(dead_code)]

pub mod engines;
pub mod models;

use std::path::PathBuf;

/// The workspace root (the root package's manifest directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Thread counts every configuration is measured with (the issue asks for 1 and 2).
pub const THREADS: [usize; 2] = [1, 2];
