//! firmware-sim: checks that edgediff's sampler, cross-built for aarch64 and run under
//! `qemu-aarch64` for each device profile, reproduces the reference vectors (x_T bit for bit,
//! the final sample within a PSNR gate) inside the board's memory budget, and counts the guest
//! instructions per network evaluation with our own qemu plugin (plugin/insn_count.c).

pub mod emulate;
pub mod error;
pub mod gates;
pub mod harness;
pub mod parity;
pub mod profile;
pub mod reference;
pub mod report;
pub mod toolchain;

pub use error::SimError;
