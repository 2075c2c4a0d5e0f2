//! Which kernels our fp32 ops run: the fastest this CPU has, or the one the environment
//! variable [`KERNELS_VAR`] names, so that every code path can be run, and its bytes compared,
//! on one machine.

use edgediff_fkernels::Kernel;

use crate::RuntimeError;

/// `EDGEDIFF_KERNELS=portable|avx2|avx512|neon` forces the fp32 kernel (an error if this CPU
/// cannot run it). The int8 kernels are chosen by the CPU alone.
pub const KERNELS_VAR: &str = "EDGEDIFF_KERNELS";

/// [`fp32`] for an op being wired into tract's graph (a tract error; the loader has already
/// reported a bad [`KERNELS_VAR`] as a [`RuntimeError`] before any op is built).
pub(crate) fn fp32_for_op() -> tract_onnx::prelude::TractResult<Kernel> {
    Ok(fp32()?)
}

/// The fp32 kernel: forced by [`KERNELS_VAR`], else detected.
pub fn fp32() -> Result<Kernel, RuntimeError> {
    match std::env::var(KERNELS_VAR) {
        Ok(name) => Kernel::by_name(&name).map_err(|e| RuntimeError::Kernels(format!("{KERNELS_VAR}={name}: {e}"))),
        Err(std::env::VarError::NotPresent) => Ok(Kernel::detect()),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(RuntimeError::Kernels(format!("{KERNELS_VAR} is not valid UTF-8")))
        }
    }
}
