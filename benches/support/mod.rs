//! Code shared by the criterion benches (`benches/*.rs`) and the measurement helper
//! (`examples/bench_probe.rs`, which includes this module with `#[path]`), so that the timed
//! loop, the memory probe and the instruction count all run exactly the same engine calls.
//!
//! - [`models`]: the models under test (the default model; the 35.7M-param U-Net exported at
//!   bench time into `target/bench-models/`), each in fp32 and int8.
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

/// The `main` of a criterion bench target: does nothing under `cargo test` (CI only compiles
/// the benches), otherwise runs `run` with criterion's command-line settings; errors are one
/// line and exit 1.
pub fn criterion_main(name: &str, run: fn(&mut criterion::Criterion) -> anyhow::Result<()>) {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{name}: skipped (run it with `cargo bench` or `cargo xtask bench-report`)");
        return;
    }
    let mut c = criterion::Criterion::default().configure_from_args();
    if let Err(e) = run(&mut c) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    c.final_summary();
}

/// Thread counts every configuration is measured with: one core, and the two a small board has.
pub const THREADS: [usize; 2] = [1, 2];
