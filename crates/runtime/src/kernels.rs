//! Which kernels our ops run: the fastest this CPU has, or the one the environment variable
//! [`KERNELS_VAR`] names, so that every code path can be run, and its bytes compared, on one
//! machine.

use edgediff_fkernels::Kernel;

use crate::RuntimeError;

/// `EDGEDIFF_KERNELS=portable|avx2|avx512|neon` forces the fp32 kernel (an error if this CPU
/// cannot run it), and with it the int8 one ([`int8`]).
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

/// The int8 convolution kernel: the one the forced fp32 kernel implies (`portable`: the
/// portable one; `avx2`: the AVX2 one, as on an x86_64 CPU without any VNNI; `neon`: Armv8.0
/// NEON, as on a CPU without the dot-product extension), else the fastest this CPU has. Every
/// int8 kernel gives the same integer sums and the same bytes; this makes that testable on one
/// machine.
pub fn int8() -> Result<edgediff_qconv::Kernel, RuntimeError> {
    let detected = edgediff_qconv::Kernel::detect();
    if std::env::var_os(KERNELS_VAR).is_none() {
        return Ok(detected);
    }
    Ok(match fp32()? {
        Kernel::Portable => edgediff_qconv::Kernel::Portable,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => edgediff_qconv::Kernel::Avx2,
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => edgediff_qconv::Kernel::Neon,
        // Every kernel on aarch64 is matched above.
        #[allow(unreachable_patterns)]
        _ => detected,
    })
}

/// [`int8`] for an op being wired into tract's graph (see [`fp32_for_op`]).
pub(crate) fn int8_for_op() -> tract_onnx::prelude::TractResult<edgediff_qconv::Kernel> {
    Ok(int8()?)
}
