//! Region markers for the instruction-counting emulator plugin (firmware-sim).
//!
//! firmware-sim runs the aarch64 sampler under `qemu-aarch64` with a TCG plugin that counts
//! executed guest instructions. To attribute counts to network evaluations, the sampler issues a
//! marker system call right before and right after each `Network::eval`: `prctl` with an option
//! number no kernel defines ([`MAGIC_BEGIN`], [`MAGIC_END`]). The plugin sees the call in its
//! syscall callback; the kernel (or qemu's prctl emulation) rejects it with EINVAL, which we
//! ignore, so the marker changes nothing else.
//!
//! Off unless the environment variable `EDGEDIFF_SIM_MARKERS=1` is set. The variable is read once
//! per process; afterwards a marker costs one relaxed atomic load and a predictable branch, so
//! ordinary runs pay nothing measurable. On non-Linux targets the markers compile to nothing.

use std::sync::atomic::{AtomicU8, Ordering};

/// Environment variable that turns the markers on (value `1`).
pub const ENV_VAR: &str = "EDGEDIFF_SIM_MARKERS";
/// `prctl` option issued right before a network evaluation ("EDGE" in ASCII).
pub const MAGIC_BEGIN: u64 = 0x4544_4745;
/// `prctl` option issued right after a network evaluation.
pub const MAGIC_END: u64 = 0x4544_4746;

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// True when markers are on (reads the environment on the first call only).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var(ENV_VAR).map(|v| v.trim() == "1").unwrap_or(false);
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// Marks the start of a network evaluation (no-op unless [`enabled`]).
#[inline]
pub fn begin_eval() {
    if enabled() {
        emit(MAGIC_BEGIN);
    }
}

/// Marks the end of a network evaluation (no-op unless [`enabled`]).
#[inline]
pub fn end_eval() {
    if enabled() {
        emit(MAGIC_END);
    }
}

/// Issues the marker; returns prctl's result (always -1/EINVAL: the option is undefined).
#[cfg(target_os = "linux")]
#[cold]
fn emit(option: u64) -> libc::c_int {
    // SAFETY: prctl with an undefined option touches no memory and only returns EINVAL; the
    // remaining arguments are plain integers.
    unsafe {
        libc::prctl(
            option as libc::c_int,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    }
}

#[cfg(not(target_os = "linux"))]
fn emit(_option: u64) -> i32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_are_not_linux_prctl_options() {
        // Linux prctl options are small (PR_* < 0x1000, plus PR_SET_PTRACER 0x59616d61 and
        // PR_SET_VMA 0x53564d41); ours must collide with none, and differ from each other.
        for magic in [MAGIC_BEGIN, MAGIC_END] {
            assert!(magic > 0x1000);
            assert_ne!(magic, 0x59616d61);
            assert_ne!(magic, 0x53564d41);
        }
        assert_ne!(MAGIC_BEGIN, MAGIC_END);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_rejects_the_marker_options() {
        // The marker must do nothing: the kernel has to reject both options as unknown.
        for magic in [MAGIC_BEGIN, MAGIC_END] {
            assert_eq!(emit(magic), -1, "prctl({magic:#x}) was accepted");
            assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINVAL));
        }
    }
}
