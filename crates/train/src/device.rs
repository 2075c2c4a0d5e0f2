//! Backend selection: `--device auto|cpu|cuda`.
//!
//! CPU is `Autodiff<Flex>` (burn-flex with rayon + SIMD). CUDA is `Autodiff<Cuda>`, compiled only
//! with the crate's `cuda` feature. cudarc panics deep inside when the driver library is
//! missing, so before any CUDA code runs we open `libcuda.so.1` ourselves and ask it for a
//! device count; `auto` falls back to the CPU with a message, `cuda` fails with one line.
//!
//! Subcommands run their generic code through [`BackendJob`], so each one is written once,
//! `fn run<B: AutodiffBackend>`, and [`run_job`] picks the concrete backend.

use burn::tensor::backend::AutodiffBackend;

/// The CPU training backend.
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// The CUDA training backend.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when this build has it and a GPU driver answers, else CPU.
    Auto,
    Cpu,
    Cuda,
}

/// The backend chosen for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    Cpu,
    /// Only ever constructed in builds with the `cuda` feature.
    Cuda,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device cuda: this train binary was built without the `cuda` feature (rebuild with `cargo build --release -p edgediff-train --features cuda`)")]
    NotBuilt,
    #[error("--device cuda: no usable CUDA GPU ({0})")]
    NoGpu(String),
}

/// Whether this binary contains the CUDA backend.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Opens the CUDA driver library and counts devices, without touching cudarc.
pub fn cuda_probe() -> Result<usize, String> {
    // SAFETY: libcuda.so.1 is the NVIDIA driver API; loading it runs no user code beyond the
    // driver's initialisers, and the two symbols are called with their documented signatures.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1")
            .map_err(|_| "libcuda.so.1 not found: no NVIDIA driver".to_string())?;
        let init: libloading::Symbol<unsafe extern "C" fn(u32) -> i32> =
            lib.get(b"cuInit\0").map_err(|e| format!("libcuda.so.1 lacks cuInit: {e}"))?;
        let rc = init(0);
        if rc != 0 {
            return Err(format!("cuInit failed with CUDA error {rc}"));
        }
        let count: libloading::Symbol<unsafe extern "C" fn(*mut i32) -> i32> =
            lib.get(b"cuDeviceGetCount\0").map_err(|e| format!("libcuda.so.1 lacks cuDeviceGetCount: {e}"))?;
        let mut n = 0i32;
        let rc = count(&mut n);
        if rc != 0 {
            return Err(format!("cuDeviceGetCount failed with CUDA error {rc}"));
        }
        if n <= 0 {
            return Err("the driver reports no CUDA devices".into());
        }
        Ok(n as usize)
    }
}

/// Resolves `--device`. Returns the backend and, for `auto`, a line saying what was chosen.
pub fn select(choice: DeviceChoice) -> Result<(Selected, Option<String>), DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok((Selected::Cpu, None)),
        DeviceChoice::Cuda if !CUDA_BUILT => Err(DeviceError::NotBuilt),
        DeviceChoice::Cuda => cuda_probe().map(|_| (Selected::Cuda, None)).map_err(DeviceError::NoGpu),
        DeviceChoice::Auto if !CUDA_BUILT => {
            Ok((Selected::Cpu, Some("device: CPU (this build has no CUDA support)".into())))
        }
        DeviceChoice::Auto => match cuda_probe() {
            Ok(n) => Ok((Selected::Cuda, Some(format!("device: CUDA ({n} GPU(s) found, using GPU 0)")))),
            Err(why) => Ok((Selected::Cpu, Some(format!("device: CPU (CUDA unavailable: {why})")))),
        },
    }
}

/// Work that is generic over the training backend.
pub trait BackendJob {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on the selected backend's default device.
pub fn run_job<J: BackendJob>(selected: Selected, job: J) -> J::Output {
    match selected {
        #[cfg(feature = "cuda")]
        Selected::Cuda => job.run::<CudaBackend>(burn::backend::cuda::CudaDevice::default()),
        _ => job.run::<CpuBackend>(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_cuda_needs_the_feature() {
        assert_eq!(select(DeviceChoice::Cpu).unwrap().0, Selected::Cpu);
        if !CUDA_BUILT {
            assert!(matches!(select(DeviceChoice::Cuda), Err(DeviceError::NotBuilt)));
            let (sel, msg) = select(DeviceChoice::Auto).unwrap();
            assert_eq!(sel, Selected::Cpu);
            assert!(msg.unwrap().contains("CPU"));
        }
    }
}
