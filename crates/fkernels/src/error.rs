//! What building or running a kernel can refuse.

/// A kernel's inputs did not match what it was built for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FKernelError {
    #[error("{what}: {got} values, expected {expected}")]
    Length { what: &'static str, got: usize, expected: usize },
    #[error("a {h}x{w} input is smaller than the convolution window")]
    Window { h: usize, w: usize },
    #[error("the {0} kernel does not run on this CPU")]
    Unsupported(&'static str),
    #[error("unknown kernel `{0}` (expected portable, avx2, avx512 or neon)")]
    UnknownKernel(String),
}
